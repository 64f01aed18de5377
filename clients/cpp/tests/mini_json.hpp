// mini_json.hpp: a small JSON reader, for the tests only.
//
// Written here rather than using nlohmann-json so the tests, like the library, need nothing
// installed: `make test` works on a bare machine (and on a QNX host). It parses RFC 8259 JSON
// into a tree; numbers keep their source text, so a test can tell 412 from 412.0, and their value
// comes from strtod, which is correctly rounded in glibc (and in any C library that claims C99).
// It needs no exceptions (the tests also build with -fno-exceptions -fno-rtti): an error is
// reported through parse()'s `error` argument, with its offset, and the result is then null.

#ifndef BATTERY_MONITOR_TESTS_MINI_JSON_HPP
#define BATTERY_MONITOR_TESTS_MINI_JSON_HPP

#include <cstdio>
#include <cstdlib>
#include <stdint.h>
#include <string>
#include <utility>
#include <vector>

namespace mini_json {

struct Value {
  enum Type { kNull, kBool, kNumber, kString, kArray, kObject };
  Type type;
  bool boolean;
  double number;
  std::string text;  // string contents, or a number's source text
  std::vector<Value> items;
  std::vector<std::pair<std::string, Value> > members;  // in document order

  Value() : type(kNull), boolean(false), number(0) {}

  bool has(const std::string& key) const { return find(key) != 0; }

  const Value* find(const std::string& key) const {
    for (std::size_t i = 0; i < members.size(); ++i) {
      if (members[i].first == key) return &members[i].second;
    }
    return 0;
  }

  // A missing key reads as null (type kNull, number 0, empty text): check has() where it matters.
  const Value& operator[](const std::string& key) const {
    static const Value null_value;
    const Value* v = find(key);
    return v ? *v : null_value;
  }
};

class Parser {
 public:
  explicit Parser(const std::string& text) : s_(text), i_(0) {}

  Value parse_document(std::string* error) {
    Value v = parse_value_();
    skip_ws_();
    if (i_ != s_.size()) fail_("trailing characters");
    if (error) *error = error_;
    return error_.empty() ? v : Value();
  }

 private:
  // Records the first error and moves to the end of the input, so every loop below stops.
  void fail_(const std::string& what) {
    if (error_.empty()) {
      char where[32];
      std::snprintf(where, sizeof where, " at offset %lu", static_cast<unsigned long>(i_));
      error_ = "JSON: " + what + where;
    }
    i_ = s_.size();
  }

  bool failed() const { return !error_.empty(); }

  void skip_ws_() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }

  char peek_() {
    if (i_ >= s_.size()) {
      fail_("unexpected end");
      return '\0';
    }
    return s_[i_];
  }

  void expect_(char c) {
    if (peek_() != c) fail_(std::string("expected '") + c + "'");
    ++i_;
  }

  void literal_(const char* word) {
    for (const char* p = word; *p && !failed(); ++p) expect_(*p);
  }

  Value parse_value_() {
    skip_ws_();
    Value v;
    const char c = peek_();
    if (c == '{') {
      v.type = Value::kObject;
      ++i_;
      skip_ws_();
      if (peek_() == '}') {
        ++i_;
        return v;
      }
      for (;;) {
        skip_ws_();
        const std::string key = parse_string_();
        skip_ws_();
        expect_(':');
        v.members.push_back(std::make_pair(key, parse_value_()));
        if (failed()) return v;
        skip_ws_();
        if (peek_() == ',') {
          ++i_;
          continue;
        }
        expect_('}');
        return v;
      }
    }
    if (c == '[') {
      v.type = Value::kArray;
      ++i_;
      skip_ws_();
      if (peek_() == ']') {
        ++i_;
        return v;
      }
      for (;;) {
        v.items.push_back(parse_value_());
        if (failed()) return v;
        skip_ws_();
        if (peek_() == ',') {
          ++i_;
          continue;
        }
        expect_(']');
        return v;
      }
    }
    if (c == '"') {
      v.type = Value::kString;
      v.text = parse_string_();
      return v;
    }
    if (c == 't') {
      literal_("true");
      v.type = Value::kBool;
      v.boolean = true;
      return v;
    }
    if (c == 'f') {
      literal_("false");
      v.type = Value::kBool;
      return v;
    }
    if (c == 'n') {
      literal_("null");
      return v;
    }
    v.type = Value::kNumber;
    v.text = number_text_();
    v.number = std::strtod(v.text.c_str(), 0);
    return v;
  }

  // Checks the JSON number grammar (strtod alone would accept "0x10", "inf", "1.").
  std::string number_text_() {
    const std::size_t start = i_;
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    if (i_ < s_.size() && s_[i_] == '0') {
      ++i_;
    } else if (!digits_()) {
      fail_("bad number");
    }
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      if (!digits_()) fail_("bad fraction");
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (!digits_()) fail_("bad exponent");
    }
    return s_.substr(start, i_ - start);
  }

  bool digits_() {
    const std::size_t start = i_;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    return i_ > start;
  }

  unsigned hex4_() {
    if (i_ + 4 > s_.size()) {
      fail_("short \\u escape");
      return 0;
    }
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<unsigned>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<unsigned>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<unsigned>(c - 'A' + 10);
      } else {
        fail_("bad \\u escape");
        return 0;
      }
    }
    return v;
  }

  static void put_utf8_(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string parse_string_() {
    expect_('"');
    std::string out;
    while (!failed()) {
      const char c = peek_();
      ++i_;
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) fail_("control character in string");
      if (c != '\\') {
        out += c;
        continue;
      }
      const char e = peek_();
      ++i_;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = hex4_();
          if (cp >= 0xD800 && cp < 0xDC00) {  // surrogate pair
            literal_("\\u");
            const uint32_t low = hex4_();
            if (low < 0xDC00 || low >= 0xE000) fail_("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
          }
          put_utf8_(out, cp);
          break;
        }
        default: fail_("bad escape");
      }
    }
    return out;
  }

  const std::string& s_;
  std::size_t i_;
  std::string error_;
};

// The document's value; on malformed input a null Value, and *error says why (else it is emptied).
inline Value parse(const std::string& text, std::string* error = 0) {
  Parser p(text);
  return p.parse_document(error);
}

}  // namespace mini_json

#endif  // BATTERY_MONITOR_TESTS_MINI_JSON_HPP
