// test_vectors: the C++ encoders against the shared wire-format vectors in test/vectors/, the
// same files the TypeScript decoder tests read, so both sides agree byte for byte.
//
// Usage: test_vectors [VECTORS_DIR]   (default: ../../test/vectors, then test/vectors)
//
// The vectors are read with tests/mini_json.hpp, a small reader kept in the tests, so nothing
// needs installing (no nlohmann-json). No exceptions and no std::isfinite here either: the file
// also builds with -fno-exceptions -fno-rtti, and with -ffast-math, where isfinite folds to true.

#include "battery_monitor/client.hpp"
#include "battery_monitor/v2.hpp"
#include "check.hpp"
#include "mini_json.hpp"

#include <cfloat>
#include <clocale>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using battery_monitor::Reading;
using mini_json::Value;

namespace {

bool read_file(const std::string& path, std::string& out) {
  std::ifstream in(path.c_str(), std::ios::in | std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return true;
}

std::string to_hex(const uint8_t* bytes, std::size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < n; ++i) {
    s += digits[bytes[i] >> 4];
    s += digits[bytes[i] & 15];
  }
  return s;
}

bool from_hex(const std::string& hex, uint8_t* out, std::size_t n) {
  if (hex.size() != 2 * n) return false;
  for (std::size_t i = 0; i < n; ++i) {
    unsigned v = 0;
    if (std::sscanf(hex.c_str() + 2 * i, "%2x", &v) != 1) return false;
    out[i] = static_cast<uint8_t>(v);
  }
  return true;
}

// Same bits, so -0.0 differs from 0.0 and NaN payloads would count.
bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }
bool same_bits_f(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

// The vector's decoded value as float32; false if the double is not exactly a float32. Done on
// the bits: with -ffast-math the FPU may flush subnormals to zero in a cast.
bool exact_float(double v, float& f) {
  uint64_t d;
  std::memcpy(&d, &v, sizeof d);
  const uint32_t sign = static_cast<uint32_t>(d >> 63) << 31;
  const int exponent = static_cast<int>((d >> 52) & 0x7FF);
  const uint64_t mantissa = d & ((uint64_t(1) << 52) - 1);
  uint32_t bits = 0;
  if (exponent == 0 && mantissa == 0) {
    bits = sign;
  } else if (exponent == 0 || exponent == 0x7FF) {
    return false;  // a double subnormal is far below float's range; not finite is no reading
  } else {
    const int e = exponent - 1023;
    const uint64_t full = mantissa | (uint64_t(1) << 52);
    if (e >= -126 && e <= 127) {
      if (mantissa & ((uint64_t(1) << 29) - 1)) return false;
      bits = sign | (static_cast<uint32_t>(e + 127) << 23) | static_cast<uint32_t>(mantissa >> 29);
    } else if (e >= -149 && e < -126) {
      const int shift = -97 - e;  // float subnormal: value = m * 2^-149
      if (full & ((uint64_t(1) << shift) - 1)) return false;
      bits = sign | static_cast<uint32_t>(full >> shift);
    } else {
      return false;
    }
  }
  std::memcpy(&f, &bits, sizeof f);
  return true;
}

void test_binary_vectors(const std::string& dir) {
  std::string text;
  const std::string path = dir + "/binary-frames.json";
  CHECK(read_file(path, text), "cannot read %s", path.c_str());
  if (text.empty()) return;
  std::string error;
  const Value doc = mini_json::parse(text, &error);
  CHECK(error.empty(), "%s: %s", path.c_str(), error.c_str());
  CHECK(doc["frame_bytes"].number == 16, "frame_bytes is %g", doc["frame_bytes"].number);
  const Value& cases = doc["cases"];
  int good = 0, rejected = 0;
  for (std::size_t i = 0; i < cases.items.size(); ++i) {
    const Value& c = cases.items[i];
    const char* name = c["name"].text.c_str();
    uint8_t bytes[16];
    CHECK(from_hex(c["hex"].text, bytes, 16), "%s: bad hex", name);

    Reading decoded;
    const bool finite = battery_monitor::decode_frame(bytes, decoded);
    if (c.has("rejected")) {
      ++rejected;
      CHECK(!finite, "%s: decode_frame accepted a frame the vectors reject", name);
      // The encoder must refuse the same values, and leave the output alone.
      uint8_t out[16];
      std::memset(out, 0xAA, sizeof out);
      CHECK(!battery_monitor::encode_frame(decoded, out), "%s: encode_frame accepted non-finite values", name);
      bool untouched = true;
      for (int k = 0; k < 16; ++k) untouched = untouched && out[k] == 0xAA;
      CHECK(untouched, "%s: encode_frame wrote into the output while refusing", name);
      continue;
    }

    ++good;
    const Value& rec = c["record"];
    float t = 0, v = 0, a = 0, temp = 0;
    CHECK(exact_float(rec["device_time"].number, t) && exact_float(rec["pack_voltage"].number, v) &&
              exact_float(rec["pack_current"].number, a) && exact_float(rec["cell_temp"].number, temp),
          "%s: record values are not exact float32", name);
    uint8_t out[16];
    CHECK(battery_monitor::encode_frame(Reading(t, v, a, temp), out), "%s: encode_frame refused", name);
    CHECK(to_hex(out, 16) == c["hex"].text, "%s: encoded %s, vector says %s", name, to_hex(out, 16).c_str(),
          c["hex"].text.c_str());

    CHECK(finite, "%s: decode_frame rejected a good frame", name);
    CHECK(same_bits_f(decoded.device_time, t) && same_bits_f(decoded.pack_voltage, v) &&
              same_bits_f(decoded.pack_current, a) && same_bits_f(decoded.cell_temp, temp),
          "%s: decoded (%.17g, %.17g, %.17g, %.17g)", name, decoded.device_time, decoded.pack_voltage,
          decoded.pack_current, decoded.cell_temp);
  }
  CHECK(good > 0 && rejected > 0, "expected both good and rejected cases");
  std::printf("binary vectors: %d encoded and decoded, %d rejected cases refused\n", good, rejected);
}

// A number field of the parsed message equals the expected value bit for bit.
void check_number(const Value& msg, const char* key, double expected, const char* name) {
  const Value* v = msg.find(key);
  CHECK(v && v->type == Value::kNumber, "%s: %s missing or not a number", name, key);
  if (v && v->type == Value::kNumber) {
    CHECK(same_bits(v->number, expected), "%s: %s is %s, expected %.17g", name, key, v->text.c_str(), expected);
  }
}

// The message is one line, ends in '\n', parses, and routes as the collector routes it.
Value parse_line(const std::string& line, const char* name) {
  CHECK(!line.empty() && line[line.size() - 1] == '\n', "%s: message does not end in a newline", name);
  CHECK(line.find('\n') == line.size() - 1, "%s: newline inside the message", name);
  std::string error;
  const Value v = mini_json::parse(line, &error);
  CHECK(error.empty(), "%s: message does not parse (%s): %s", name, error.c_str(), line.c_str());
  return v;
}

// Every key the vector's record holds is in the message with the same value, and nothing else.
void check_matches_record(const Value& msg, const Value& rec, const char* name) {
  CHECK(msg.members.size() == rec.members.size(), "%s: message has %lu fields, record %lu", name,
        static_cast<unsigned long>(msg.members.size()), static_cast<unsigned long>(rec.members.size()));
  for (std::size_t i = 0; i < rec.members.size(); ++i) {
    const std::string& key = rec.members[i].first;
    const Value& want = rec.members[i].second;
    const Value* got = msg.find(key);
    CHECK(got != 0, "%s: %s missing", name, key.c_str());
    if (!got) continue;
    CHECK(got->type == want.type, "%s: %s has the wrong type", name, key.c_str());
    if (want.type == Value::kNumber) {
      CHECK(same_bits(got->number, want.number), "%s: %s is %s, expected %s", name, key.c_str(),
            got->text.c_str(), want.text.c_str());
    } else {
      CHECK(got->text == want.text, "%s: %s is \"%s\", expected \"%s\"", name, key.c_str(),
            got->text.c_str(), want.text.c_str());
    }
  }
}

// The record's strings are borrowed from `rec`, which outlives the encoding.
void fill_common(const Value& rec, bool& has_timestamp, double& timestamp, const char*& battery_id, const char*& source) {
  has_timestamp = rec.has("timestamp");
  if (has_timestamp) timestamp = rec["timestamp"].number;
  if (rec.has("battery_id")) battery_id = rec["battery_id"].text.c_str();
  if (rec.has("source")) source = rec["source"].text.c_str();
}

void test_json_vectors(const std::string& dir) {
  std::string text;
  const std::string path = dir + "/json-messages.json";
  CHECK(read_file(path, text), "cannot read %s", path.c_str());
  if (text.empty()) return;
  std::string error;
  const Value doc = mini_json::parse(text, &error);
  CHECK(error.empty(), "%s: %s", path.c_str(), error.c_str());
  const Value& cases = doc["cases"];
  int built = 0, skipped = 0;
  for (std::size_t i = 0; i < cases.items.size(); ++i) {
    const Value& c = cases.items[i];
    const char* name = c["name"].text.c_str();
    // The library builds performance records and predictions; battery data goes as frames, and
    // the rejected cases are malformed input a builder cannot produce.
    const std::string kind = c.has("kind") ? c["kind"].text : "";
    if (kind != "battery-performance" && kind != "battery-prediction") {
      ++skipped;
      continue;
    }
    const Value& rec = c["record"];
    std::string line;
    if (kind == "battery-performance") {
      battery_monitor::PerformanceRecord r;
      r.pack_voltage = rec["pack_voltage"].number;
      r.pack_current = rec["pack_current"].number;
      r.cell_temp = rec["cell_temp"].number;
      r.capacity_remaining = rec["capacity_remaining"].number;
      r.cycle_count = static_cast<uint32_t>(rec["cycle_count"].number);
      r.age_months = rec["age_months"].number;
      r.health_score = rec["health_score"].number;
      fill_common(rec, r.has_timestamp, r.timestamp, r.battery_id, r.source);
      CHECK(battery_monitor::encode_performance(r, line), "%s: refused", name);
    } else {
      battery_monitor::Prediction p;
      p.remaining_life_hours = rec["remaining_life_hours"].number;
      p.remaining_cycles = rec["remaining_cycles"].number;
      p.degradation_rate = rec["degradation_rate"].number;
      fill_common(rec, p.has_timestamp, p.timestamp, p.battery_id, p.source);
      CHECK(battery_monitor::encode_prediction(p, line), "%s: refused", name);
    }
    ++built;
    const Value msg = parse_line(line, name);
    CHECK(msg.type == Value::kObject, "%s: not an object", name);
    check_matches_record(msg, rec, name);
    // Routing, as DESIGN.md states it: capacity_remaining makes a performance record,
    // remaining_life_hours a prediction.
    const bool routed_perf = msg.has("capacity_remaining");
    const bool routed_pred = msg.has("remaining_life_hours");
    CHECK(routed_perf != routed_pred && routed_perf == (kind == "battery-performance"),
          "%s: message would not route to %s", name, kind.c_str());
    if (routed_perf) {
      const std::string& cc = msg["cycle_count"].text;
      CHECK(cc.find_first_not_of("0123456789") == std::string::npos, "%s: cycle_count printed as %s", name,
            cc.c_str());
    }
  }
  CHECK(built >= 2, "expected a performance and a prediction case in the vectors");
  std::printf("json vectors: %d messages built and parsed back, %d cases not for the encoder\n", built, skipped);
}

// The numbers of a JSON array, as doubles (held by the caller while a reading borrows them).
std::vector<double> numbers_of(const Value& array) {
  std::vector<double> out;
  for (std::size_t i = 0; i < array.items.size(); ++i) out.push_back(array.items[i].number);
  return out;
}

// Readings with cells: the exact bytes of each vector's line, which parse back to its reading,
// arrays and all; and the library's size bound is the one the vectors state.
void test_cell_vectors(const std::string& dir) {
  std::string text;
  const std::string path = dir + "/cell-messages.json";
  CHECK(read_file(path, text), "cannot read %s", path.c_str());
  if (text.empty()) return;
  std::string error;
  const Value doc = mini_json::parse(text, &error);
  CHECK(error.empty(), "%s: %s", path.c_str(), error.c_str());
  CHECK(doc["max_cells"].number == static_cast<double>(battery_monitor::kMaxCells), "max_cells is %g", doc["max_cells"].number);
  CHECK(doc["max_message_bytes"].number == static_cast<double>(battery_monitor::max_cell_message_bytes(battery_monitor::kMaxCells)),
        "max_message_bytes is %g, the library's bound %lu", doc["max_message_bytes"].number,
        static_cast<unsigned long>(battery_monitor::max_cell_message_bytes(battery_monitor::kMaxCells)));
  const Value& cases = doc["cases"];
  std::size_t most_cells = 0;
  for (std::size_t i = 0; i < cases.items.size(); ++i) {
    const Value& c = cases.items[i];
    const char* name = c["name"].text.c_str();
    const Value& rec = c["reading"];
    const std::vector<double> volts = numbers_of(rec["cell_voltages"]);
    const std::vector<double> temps = numbers_of(rec["cell_temps"]);
    battery_monitor::CellReading r;
    r.pack_voltage = rec["pack_voltage"].number;
    r.pack_current = rec["pack_current"].number;
    r.cell_temp = rec["cell_temp"].number;
    r.cell_voltages = volts.empty() ? 0 : &volts[0];
    r.cell_voltage_count = volts.size();
    r.cell_temps = temps.empty() ? 0 : &temps[0];
    r.cell_temp_count = temps.size();
    r.has_device_time = rec.has("device_time");
    r.device_time = rec["device_time"].number;
    fill_common(rec, r.has_timestamp, r.timestamp, r.battery_id, r.source);
    std::string line;
    CHECK(battery_monitor::encode_cell_reading(r, line), "%s: refused", name);
    CHECK(line == c["line"].text, "%s: encoded\n%s, vector says\n%s", name, line.c_str(), c["line"].text.c_str());
    const Value msg = parse_line(line, name);
    CHECK(msg.members.size() == rec.members.size(), "%s: message has %lu fields, reading %lu", name,
          static_cast<unsigned long>(msg.members.size()), static_cast<unsigned long>(rec.members.size()));
    for (std::size_t k = 0; k < rec.members.size(); ++k) {
      const std::string& key = rec.members[k].first;
      const Value& want = rec.members[k].second;
      const Value* got = msg.find(key);
      CHECK(got != 0 && got->type == want.type, "%s: %s missing or of another type", name, key.c_str());
      if (!got || got->type != want.type) continue;
      if (want.type == Value::kArray) {
        bool same = got->items.size() == want.items.size();
        for (std::size_t n = 0; same && n < want.items.size(); ++n) same = same_bits(got->items[n].number, want.items[n].number);
        CHECK(same, "%s: %s does not read back bit for bit", name, key.c_str());
      } else if (want.type == Value::kNumber) {
        CHECK(same_bits(got->number, want.number), "%s: %s is %s, expected %s", name, key.c_str(), got->text.c_str(), want.text.c_str());
      } else {
        CHECK(got->text == want.text, "%s: %s differs", name, key.c_str());
      }
    }
    // Routed as battery data: pack_voltage, and neither of the other kinds' routing fields.
    CHECK(msg.has("pack_voltage") && !msg.has("capacity_remaining") && !msg.has("remaining_life_hours"), "%s: would not route to battery-data", name);
    CHECK(line.size() <= battery_monitor::max_cell_message_bytes(volts.size() > temps.size() ? volts.size() : temps.size()),
          "%s: %lu bytes, over the bound for its cells", name, static_cast<unsigned long>(line.size()));
    if (volts.size() > most_cells) most_cells = volts.size();
  }
  CHECK(cases.items.size() >= 4 && most_cells == battery_monitor::kMaxCells, "expected several cases, one with kMaxCells cells");
  std::printf("cell vectors: %lu readings with cells encoded byte for byte and parsed back\n", static_cast<unsigned long>(cases.items.size()));
}

// The longest message the library can produce: 1024 cells per array, every number as long as
// %.17g makes one, the longest battery_id and a source of 128 control characters (6 bytes each
// escaped). It is encoded, within max_cell_message_bytes, and within the collector's limit; so are
// 1024 random doubles per array.
void test_cell_message_bound() {
  const double longest = -2.2250738585072014e-308;  // "-2.2250738585072014e-308": 24 characters
  std::vector<double> cells(battery_monitor::kMaxCells, longest);
  battery_monitor::CellReading r;
  r.pack_voltage = r.pack_current = r.cell_temp = r.timestamp = r.device_time = longest;
  r.has_timestamp = r.has_device_time = true;
  r.cell_voltages = r.cell_temps = &cells[0];
  r.cell_voltage_count = r.cell_temp_count = cells.size();
  const std::string id(battery_monitor::kMaxBatteryIdLength, 'x');
  const std::string source(battery_monitor::kMaxSourceLength, '\x01');
  r.battery_id = id.c_str();
  r.source = source.c_str();
  std::string line;
  CHECK(battery_monitor::encode_cell_reading(r, line), "the longest valid cell reading was refused");
  const std::size_t bound = battery_monitor::max_cell_message_bytes(battery_monitor::kMaxCells);
  CHECK(line.size() <= bound && bound < battery_monitor::kCollectorMaxMessageBytes, "longest message %lu bytes, bound %lu",
        static_cast<unsigned long>(line.size()), static_cast<unsigned long>(bound));
  // A buffer one byte short refuses it rather than cutting it.
  std::vector<char> buf(line.size());
  CHECK(battery_monitor::encode_cell_reading(r, &buf[0], line.size() - 1) == 0, "a cell message one byte too long for the buffer was not refused");
  CHECK(battery_monitor::encode_cell_reading(r, &buf[0], line.size()) == line.size(), "the exact buffer was refused");
  const std::size_t longest_bytes = line.size();

  uint64_t state = 0x2545F4914F6CDD1Dull;
  std::size_t longest_random = 0;
  for (int round = 0; round < 20; ++round) {
    for (std::size_t i = 0; i < cells.size(); ++i) {
      double v;
      do {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::memcpy(&v, &state, sizeof v);
      } while (!battery_monitor::detail::is_finite(v));
      cells[i] = v;
    }
    r.source = 0;
    r.battery_id = 0;
    CHECK(battery_monitor::encode_cell_reading(r, line) && line.size() <= bound, "random cells: refused or %lu bytes", static_cast<unsigned long>(line.size()));
    const Value msg = parse_line(line, "random cells");
    const Value& back = msg["cell_voltages"];
    bool exact = back.items.size() == cells.size();
    for (std::size_t i = 0; exact && i < cells.size(); ++i) exact = same_bits(back.items[i].number, cells[i]);
    CHECK(exact, "random cells did not read back bit for bit");
    if (line.size() > longest_random) longest_random = line.size();
  }
  std::printf("cell message bound: the longest reading is %lu bytes (bound %lu, collector %lu); random cells up to %lu\n",
              static_cast<unsigned long>(longest_bytes), static_cast<unsigned long>(bound),
              static_cast<unsigned long>(battery_monitor::kCollectorMaxMessageBytes), static_cast<unsigned long>(longest_random));
}

// Non-finite values anywhere, arrays over kMaxCells, a null array with a count, and the strings'
// limits: refused, never sent.
void test_cell_refusals() {
  const double bad[] = {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                        -std::numeric_limits<double>::infinity()};
  std::vector<double> volts(96, 3.7), temps(96, 25.0);
  int refused = 0;
  for (int b = 0; b < 3; ++b) {
    const std::size_t positions[] = {0, 47, 95};
    for (int array = 0; array < 2; ++array) {
      for (std::size_t p = 0; p < 3; ++p) {
        std::vector<double> v = volts, t = temps;
        (array == 0 ? v : t)[positions[p]] = bad[b];
        battery_monitor::CellReading r;
        r.cell_voltages = &v[0];
        r.cell_voltage_count = v.size();
        r.cell_temps = &t[0];
        r.cell_temp_count = t.size();
        std::string line = "stale";
        CHECK(!battery_monitor::encode_cell_reading(r, line) && line.empty(), "%s[%lu] = %g accepted", array == 0 ? "cell_voltages" : "cell_temps",
              static_cast<unsigned long>(positions[p]), bad[b]);
        ++refused;
      }
    }
    for (int field = 0; field < 5; ++field) {
      battery_monitor::CellReading r;
      double* fields[] = {&r.pack_voltage, &r.pack_current, &r.cell_temp, &r.timestamp, &r.device_time};
      r.has_timestamp = r.has_device_time = true;
      r.cell_voltages = &volts[0];
      r.cell_voltage_count = volts.size();
      *fields[field] = bad[b];
      std::string line;
      CHECK(!battery_monitor::encode_cell_reading(r, line), "cell reading field %d accepted %g", field, bad[b]);
      ++refused;
    }
  }
  std::vector<double> many(battery_monitor::kMaxCells + 1, 3.7);
  battery_monitor::CellReading r;
  r.cell_voltages = &many[0];
  r.cell_voltage_count = many.size();
  std::string line;
  CHECK(!battery_monitor::encode_cell_reading(r, line), "1025 cell voltages accepted");
  r.cell_voltage_count = battery_monitor::kMaxCells;
  CHECK(battery_monitor::encode_cell_reading(r, line), "1024 cell voltages refused");
  r.cell_voltage_count = 0;
  r.cell_temps = &many[0];
  r.cell_temp_count = many.size();
  CHECK(!battery_monitor::encode_cell_reading(r, line), "1025 cell temperatures accepted");
  r = battery_monitor::CellReading();
  r.cell_voltage_count = 3;  // and no array
  CHECK(!battery_monitor::encode_cell_reading(r, line), "a null cell array with a count accepted");
  r = battery_monitor::CellReading();
  r.cell_voltages = &volts[0];
  r.battery_id = "pack 1";
  CHECK(!battery_monitor::encode_cell_reading(r, line), "invalid battery_id accepted");
  r.battery_id = 0;
  const std::string s129(129, 's');
  r.source = s129.c_str();
  CHECK(!battery_monitor::encode_cell_reading(r, line), "129-character source accepted");
  // Without has_timestamp/has_device_time those values are not sent, so they do not matter.
  r = battery_monitor::CellReading();
  r.timestamp = r.device_time = std::numeric_limits<double>::quiet_NaN();
  CHECK(battery_monitor::encode_cell_reading(r, line) && line == "{\"pack_voltage\":0,\"pack_current\":0,\"cell_temp\":0}\n",
        "unset times were sent or refused: %s", line.c_str());
  std::printf("cell refusals: %d non-finite values refused; array and string limits enforced\n", refused);
}

// Any finite double must come back with the same bits.
void test_number_round_trip() {
  double specials[] = {0.0,     -0.0,    0.1,      -0.021,  92.3,   15000.5,   1732700000.5, 1e21,
                       1e-7,    DBL_MAX, -DBL_MAX, DBL_MIN, 5e-324, 1.0 / 3, 2.5e-308,     123456789012345678.0};
  int count = 0;
  for (std::size_t i = 0; i < sizeof specials / sizeof specials[0]; ++i) {
    battery_monitor::Prediction p;
    p.degradation_rate = specials[i];
    std::string line;
    CHECK(battery_monitor::encode_prediction(p, line), "refused %.17g", specials[i]);
    check_number(parse_line(line, "special"), "degradation_rate", specials[i], "special");
    ++count;
  }
  // Random bit patterns cover every exponent, subnormals included.
  uint64_t state = 0x9E3779B97F4A7C15ull;
  for (int i = 0; i < 20000; ++i) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    double v;
    std::memcpy(&v, &state, sizeof v);
    if (!battery_monitor::detail::is_finite(v)) continue;
    battery_monitor::PerformanceRecord r;
    r.health_score = v;
    std::string line;
    CHECK(battery_monitor::encode_performance(r, line), "refused %.17g", v);
    const Value msg = parse_line(line, "random");
    check_number(msg, "health_score", v, "random");
    ++count;
  }
  std::printf("number round trip: %d values exact\n", count);
}

// With a locale whose decimal point is ',' the output must still be JSON. Skipped if no such
// locale is installed.
void test_locale() {
  const char* names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "fr_FR.utf8"};
  const char* found = 0;
  for (std::size_t i = 0; i < sizeof names / sizeof names[0] && !found; ++i) {
    if (std::setlocale(LC_NUMERIC, names[i])) found = names[i];
  }
  if (!found) {
    std::printf("locale: no comma-decimal locale installed, skipped\n");
    return;
  }
  battery_monitor::Prediction p;
  p.degradation_rate = 0.021;
  p.remaining_life_hours = 15000.5;
  std::string line;
  const bool ok = battery_monitor::encode_prediction(p, line);
  std::setlocale(LC_NUMERIC, "C");
  CHECK(ok, "refused under %s", found);
  const Value msg = parse_line(line, found);
  check_number(msg, "degradation_rate", 0.021, found);
  check_number(msg, "remaining_life_hours", 15000.5, found);
  std::printf("locale: %s gives %s", found, line.c_str());
}

void test_refusals() {
  const double bad[] = {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity(),
                        -std::numeric_limits<double>::infinity()};
  int refused = 0;
  for (int b = 0; b < 3; ++b) {
    // Each numeric field of a performance record in turn, timestamp included.
    for (int field = 0; field < 7; ++field) {
      battery_monitor::PerformanceRecord r;
      double* fields[] = {&r.pack_voltage, &r.pack_current, &r.cell_temp, &r.capacity_remaining,
                          &r.age_months,   &r.health_score, &r.timestamp};
      r.has_timestamp = true;
      *fields[field] = bad[b];
      std::string line = "stale";
      CHECK(!battery_monitor::encode_performance(r, line) && line.empty(), "performance field %d accepted %g",
            field, bad[b]);
      ++refused;
    }
    for (int field = 0; field < 4; ++field) {
      battery_monitor::Prediction p;
      double* fields[] = {&p.remaining_life_hours, &p.remaining_cycles, &p.degradation_rate, &p.timestamp};
      p.has_timestamp = true;
      *fields[field] = bad[b];
      std::string line;
      CHECK(!battery_monitor::encode_prediction(p, line), "prediction field %d accepted %g", field, bad[b]);
      ++refused;
    }
  }
  // Without has_timestamp the timestamp is not sent, so its value does not matter.
  battery_monitor::Prediction p;
  p.timestamp = std::numeric_limits<double>::quiet_NaN();
  std::string line;
  CHECK(battery_monitor::encode_prediction(p, line) && line.find("timestamp") == std::string::npos,
        "unset timestamp was sent or refused: %s", line.c_str());

  // battery_id: the server's pattern, 1-64 of A-Z a-z 0-9 . _ : -
  CHECK(battery_monitor::is_valid_battery_id("pack-1"), "pack-1");
  CHECK(battery_monitor::is_valid_battery_id("A.b_C:9-z"), "A.b_C:9-z");
  CHECK(battery_monitor::is_valid_battery_id(std::string(64, 'x').c_str()), "64 characters");
  CHECK(!battery_monitor::is_valid_battery_id(std::string(65, 'x').c_str()), "65 characters");
  CHECK(!battery_monitor::is_valid_battery_id("pack 1"), "space");
  CHECK(!battery_monitor::is_valid_battery_id("pack/1"), "slash");
  CHECK(!battery_monitor::is_valid_battery_id("p\xc3\xa4"), "non-ASCII");
  p = battery_monitor::Prediction();
  p.battery_id = "pack 1";
  CHECK(!battery_monitor::encode_prediction(p, line), "invalid battery_id accepted");

  // source: at most 128 characters as the server counts them (UTF-16 units).
  p = battery_monitor::Prediction();
  const std::string s128(128, 's'), s129(129, 's');
  p.source = s128.c_str();
  CHECK(battery_monitor::encode_prediction(p, line), "128-character source refused");
  p.source = s129.c_str();
  CHECK(!battery_monitor::encode_prediction(p, line), "129-character source accepted");
  std::string batteries;
  for (int i = 0; i < 64; ++i) batteries += "\xF0\x9F\x94\x8B";  // U+1F50B: two UTF-16 units each
  const std::string batteries65 = batteries + "\xF0\x9F\x94\x8B";
  p.source = batteries.c_str();
  CHECK(battery_monitor::encode_prediction(p, line), "64 emoji (128 units) refused");
  p.source = batteries65.c_str();
  CHECK(!battery_monitor::encode_prediction(p, line), "65 emoji (130 units) accepted");
  std::printf("refusals: %d non-finite fields refused; battery_id and source limits enforced\n", refused);
}

// The allocation-free encoders: the same bytes as the std::string ones, 0 when the buffer is one
// byte short, and a source that only invalid UTF-8 makes long is refused, not overrun.
void test_fixed_buffer() {
  battery_monitor::PerformanceRecord r;
  r.pack_voltage = 396.5;
  r.battery_id = "pack-7";
  r.source = "edge";
  std::string line;
  CHECK(battery_monitor::encode_performance(r, line), "refused");
  char buf[battery_monitor::kMaxMessageBytes];
  const std::size_t n = battery_monitor::encode_performance(r, buf, sizeof buf);
  CHECK(n == line.size() && std::memcmp(buf, line.data(), n) == 0, "buffer encoder differs from the string one");
  CHECK(battery_monitor::encode_performance(r, buf, n - 1) == 0, "a message one byte too long for the buffer was not refused");
  const std::string continuation(4000, '\x80');  // counts as 0 UTF-16 units, 4000 bytes
  r.source = continuation.c_str();
  CHECK(battery_monitor::encode_performance(r, buf, sizeof buf) == 0, "a message over kMaxMessageBytes was produced");
  battery_monitor::Prediction p;
  p.degradation_rate = std::numeric_limits<double>::quiet_NaN();
  CHECK(battery_monitor::encode_prediction(p, buf, sizeof buf) == 0, "NaN accepted by the buffer encoder");
  std::printf("fixed buffer: same bytes as the string encoder; too small and too long refused\n");
}

void test_string_escaping() {
  battery_monitor::PerformanceRecord r;
  const std::string source = std::string("q\"b\\s/\n\r\t\b\f\x01\x1f\x7f ") + "\xC3\xA9 \xF0\x9F\x94\x8B end";
  r.source = source.c_str();
  r.battery_id = "pack-7";
  std::string line;
  CHECK(battery_monitor::encode_performance(r, line), "refused");
  const Value msg = parse_line(line, "escaping");
  CHECK(msg.has("source") && msg["source"].text == source, "source did not round-trip: %s", line.c_str());
  CHECK(msg["battery_id"].text == "pack-7", "battery_id");
  std::printf("string escaping: control characters, quotes and UTF-8 round-trip\n");
}


// ---------------------------------------------------------------------------------------------
// Edge protocol v2 (test/vectors/v2-frames.json)
// ---------------------------------------------------------------------------------------------

namespace v2 = battery_monitor::v2;

bool hex_bytes(const std::string& hex, std::vector<uint8_t>& out) {
  out.assign(hex.size() / 2, 0);
  return hex.size() % 2 == 0 && (out.empty() || from_hex(hex, &out[0], out.size()));
}

uint64_t u64_of(const Value& v, int base) { return static_cast<uint64_t>(std::strtoull(v.text.c_str(), 0, base)); }

int type_of_kind(const std::string& kind) {
  if (kind == "battery-data") return v2::kBatteryData;
  if (kind == "battery-performance") return v2::kBatteryPerformance;
  if (kind == "battery-prediction") return v2::kBatteryPrediction;
  return 0;
}

// Encodes a vector frame from its fields (0 when the encoder refuses).
std::size_t encode_vector_frame(const Value& c, uint8_t* out, std::size_t capacity, std::vector<double>& volts, std::vector<double>& temps) {
  const uint64_t seq = u64_of(c["sequence"], 10);
  const Value& f = c["fields"];
  switch (type_of_kind(c["kind"].text)) {
    case v2::kBatteryData: {
      v2::DataReading r;
      r.timestamp = c["timestamp"].number;
      r.pack_voltage = f["pack_voltage"].number;
      r.pack_current = f["pack_current"].number;
      r.cell_temp = f["cell_temp"].number;
      volts = numbers_of(c["cell_voltages"]);
      temps = numbers_of(c["cell_temps"]);
      r.cell_voltages = volts.empty() ? 0 : &volts[0];
      r.cell_voltage_count = volts.size();
      r.cell_temps = temps.empty() ? 0 : &temps[0];
      r.cell_temp_count = temps.size();
      return v2::encode_data(seq, r, out, capacity);
    }
    case v2::kBatteryPerformance: {
      v2::Performance r;
      r.timestamp = c["timestamp"].number;
      r.pack_voltage = f["pack_voltage"].number;
      r.pack_current = f["pack_current"].number;
      r.cell_temp = f["cell_temp"].number;
      r.capacity_remaining = f["capacity_remaining"].number;
      r.cycle_count = f["cycle_count"].number;
      r.age_months = f["age_months"].number;
      r.health_score = f["health_score"].number;
      return v2::encode_performance(seq, r, out, capacity);
    }
    case v2::kBatteryPrediction: {
      v2::Prediction p;
      p.timestamp = c["timestamp"].number;
      p.remaining_life_hours = f["remaining_life_hours"].number;
      p.remaining_cycles = f["remaining_cycles"].number;
      p.degradation_rate = f["degradation_rate"].number;
      return v2::encode_prediction(seq, p, out, capacity);
    }
  }
  return 0;
}

const char* const kDataFields[] = {"pack_voltage", "pack_current", "cell_temp"};
const char* const kPerformanceFields[] = {"pack_voltage", "pack_current", "cell_temp", "capacity_remaining", "cycle_count", "age_months", "health_score"};
const char* const kPredictionFields[] = {"remaining_life_hours", "remaining_cycles", "degradation_rate"};

void check_decoded_fields(const v2::FrameView& view, const Value& c, const char* name) {
  const int type = type_of_kind(c["kind"].text);
  CHECK(view.type == type, "%s: type %d", name, view.type);
  CHECK(view.flags == static_cast<int>(c["flags"].number), "%s: flags %d", name, view.flags);
  CHECK(view.sequence == u64_of(c["sequence"], 10), "%s: sequence %llu", name, static_cast<unsigned long long>(view.sequence));
  CHECK(same_bits(view.timestamp, c["timestamp"].number), "%s: timestamp %.17g", name, view.timestamp);
  const char* const* fields = type == v2::kBatteryData ? kDataFields : type == v2::kBatteryPerformance ? kPerformanceFields : kPredictionFields;
  const std::size_t count = type == v2::kBatteryPerformance ? 7 : 3;
  for (std::size_t i = 0; i < count; ++i) {
    CHECK(same_bits(view.value(i), c["fields"][fields[i]].number), "%s: %s is %.17g", name, fields[i], view.value(i));
  }
  const std::vector<double> volts = numbers_of(c["cell_voltages"]);
  const std::vector<double> temps = numbers_of(c["cell_temps"]);
  CHECK(view.cell_voltage_count == volts.size() && view.cell_temp_count == temps.size(), "%s: %lu/%lu cells", name,
        static_cast<unsigned long>(view.cell_voltage_count), static_cast<unsigned long>(view.cell_temp_count));
  for (std::size_t i = 0; i < volts.size() && i < view.cell_voltage_count; ++i) CHECK(same_bits(view.cell_voltage(i), volts[i]), "%s: cell voltage %lu", name, static_cast<unsigned long>(i));
  for (std::size_t i = 0; i < temps.size() && i < view.cell_temp_count; ++i) CHECK(same_bits(view.cell_temp(i), temps[i]), "%s: cell temp %lu", name, static_cast<unsigned long>(i));
}

// Every single-bit flip of a checksummed message is refused.
template <class Decode>
int count_accepted_flips(std::vector<uint8_t> bytes, Decode decode) {
  int accepted = 0;
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      bytes[i] ^= static_cast<uint8_t>(1 << bit);
      if (decode(bytes)) ++accepted;
      bytes[i] ^= static_cast<uint8_t>(1 << bit);
    }
  }
  return accepted;
}

bool answer_ok(const std::vector<uint8_t>& b) {
  v2::Answer a;
  return v2::decode_answer(&b[0], a);
}

bool ack_ok(const std::vector<uint8_t>& b) {
  uint64_t seq = 0;
  return v2::decode_ack(&b[0], seq);
}

bool frame_ok(const std::vector<uint8_t>& b) {
  v2::FrameView f;
  return v2::decode_frame(&b[0], b.size(), f) == v2::kFrameOk;
}

void test_v2_vectors(const std::string& dir) {
  std::string text;
  const std::string path = dir + "/v2-frames.json";
  CHECK(read_file(path, text), "cannot read %s", path.c_str());
  if (text.empty()) return;
  std::string error;
  const Value doc = mini_json::parse(text, &error);
  CHECK(error.empty(), "%s: %s", path.c_str(), error.c_str());

  const std::string check_ascii = doc["crc32c_check"]["ascii"].text;
  CHECK(v2::crc32c(check_ascii.data(), check_ascii.size()) == static_cast<uint32_t>(doc["crc32c_check"]["crc"].number), "crc32c check value");
  CHECK(v2::crc32c("56789", 5, v2::crc32c("1234", 4)) == 0xE3069283u, "crc32c does not continue a running checksum");

  const Value& handshakes = doc["handshakes"];
  for (std::size_t i = 0; i < handshakes.items.size(); ++i) {
    const Value& c = handshakes.items[i];
    const char* name = c["name"].text.c_str();
    uint8_t out[v2::kMaxHandshakeBytes];
    const std::size_t n = v2::encode_handshake(c["battery_id"].text.c_str(), u64_of(c["stream_id"], 16), out, sizeof out);
    CHECK(to_hex(out, n) == c["hex"].text, "handshake %s: encoded %s", name, to_hex(out, n).c_str());
    std::vector<uint8_t> bytes;
    hex_bytes(c["hex"].text, bytes);
    v2::Handshake h;
    CHECK(v2::check_handshake(&bytes[0], bytes.size(), h) == v2::kStatusOk, "handshake %s: refused", name);
    CHECK(h.stream_id == u64_of(c["stream_id"], 16) && c["battery_id"].text == h.battery_id && h.length == bytes.size(), "handshake %s: fields", name);
    for (std::size_t k = 0; k < bytes.size(); ++k) {
      CHECK(v2::check_handshake(&bytes[0], k, h) == -1, "handshake %s: a %lu-byte prefix was not 'need more'", name, static_cast<unsigned long>(k));
    }
    CHECK(v2::encode_handshake(c["battery_id"].text.c_str(), u64_of(c["stream_id"], 16), out, n - 1) == 0, "handshake %s: no room not refused", name);
  }
  CHECK(handshakes.items.size() >= 3, "handshake vectors missing");
  const Value& bad_handshakes = doc["bad_handshakes"];
  for (std::size_t i = 0; i < bad_handshakes.items.size(); ++i) {
    const Value& c = bad_handshakes.items[i];
    std::vector<uint8_t> bytes;
    hex_bytes(c["hex"].text, bytes);
    v2::Handshake h;
    const int status = v2::check_handshake(&bytes[0], bytes.size(), h);
    CHECK(status == static_cast<int>(c["status"].number), "bad handshake %s: status %d, vector says %g", c["name"].text.c_str(), status, c["status"].number);
  }
  uint8_t scratch[v2::kMaxHandshakeBytes];
  CHECK(v2::encode_handshake("pack-1", 0, scratch, sizeof scratch) == 0, "stream id 0 encoded");
  CHECK(v2::encode_handshake("pack 1", 7, scratch, sizeof scratch) == 0, "a battery id with a space encoded");
  CHECK(v2::encode_handshake(std::string(65, 'P').c_str(), 7, scratch, sizeof scratch) == 0, "a 65-character battery id encoded");

  const Value& answers = doc["answers"];
  for (std::size_t i = 0; i < answers.items.size(); ++i) {
    const Value& c = answers.items[i];
    const char* name = c["name"].text.c_str();
    std::vector<uint8_t> bytes;
    CHECK(hex_bytes(c["hex"].text, bytes) && bytes.size() == v2::kAnswerBytes, "answer %s: size", name);
    if (bytes.size() != v2::kAnswerBytes) continue;
    v2::Answer a;
    CHECK(v2::decode_answer(&bytes[0], a), "answer %s: refused", name);
    CHECK(a.status == c["status"].number && a.resume_after == u64_of(c["resume_after"], 10) && a.max_frame_bytes == c["max_frame_bytes"].number,
          "answer %s: status %d resume_after %llu max %u", name, a.status, static_cast<unsigned long long>(a.resume_after), a.max_frame_bytes);
    uint8_t out[v2::kAnswerBytes];
    v2::encode_answer(a, out);
    CHECK(to_hex(out, sizeof out) == c["hex"].text, "answer %s: encoded %s", name, to_hex(out, sizeof out).c_str());
    CHECK(count_accepted_flips(bytes, answer_ok) == 0, "answer %s: a flipped bit was accepted", name);
  }
  CHECK(answers.items.size() >= 4, "answer vectors missing");

  const Value& acks = doc["acks"];
  for (std::size_t i = 0; i < acks.items.size(); ++i) {
    const Value& c = acks.items[i];
    std::vector<uint8_t> bytes;
    CHECK(hex_bytes(c["hex"].text, bytes) && bytes.size() == v2::kAckBytes, "ack %lu: size", static_cast<unsigned long>(i));
    if (bytes.size() != v2::kAckBytes) continue;
    uint64_t seq = 0;
    CHECK(v2::decode_ack(&bytes[0], seq) && seq == u64_of(c["sequence"], 10), "ack %s: decoded %llu", c["sequence"].text.c_str(), static_cast<unsigned long long>(seq));
    uint8_t out[v2::kAckBytes];
    v2::encode_ack(seq, out);
    CHECK(to_hex(out, sizeof out) == c["hex"].text, "ack %s: encoded %s", c["sequence"].text.c_str(), to_hex(out, sizeof out).c_str());
    CHECK(count_accepted_flips(bytes, ack_ok) == 0, "ack %s: a flipped bit was accepted", c["sequence"].text.c_str());
  }
  CHECK(acks.items.size() >= 3, "ack vectors missing");

  const Value& frames = doc["frames"];
  int good = 0, bad = 0;
  for (std::size_t i = 0; i < frames.items.size(); ++i) {
    const Value& c = frames.items[i];
    const char* name = c["name"].text.c_str();
    std::vector<uint8_t> bytes;
    CHECK(hex_bytes(c["hex"].text, bytes) && !bytes.empty(), "frame %s: hex", name);
    if (bytes.empty()) continue;
    v2::FrameView view;
    const v2::FrameCheck check = v2::decode_frame(&bytes[0], bytes.size(), view);
    if (c["valid"].boolean) {
      ++good;
      std::vector<uint8_t> out(v2::kMaxFrameBytes);
      std::vector<double> volts, temps;
      const std::size_t n = encode_vector_frame(c, &out[0], out.size(), volts, temps);
      // The encoders write flags 0; the client sets them when it sends (kFlagSkipped after a skip).
      if (n > 0) v2::set_frame_flags(&out[0], static_cast<uint8_t>(c["flags"].number));
      CHECK(to_hex(&out[0], n) == c["hex"].text, "frame %s: encoded %s", name, to_hex(&out[0], n).c_str());
      CHECK(n == 0 || encode_vector_frame(c, &out[0], n - 1, volts, temps) == 0, "frame %s: no room not refused", name);
      CHECK(check == v2::kFrameOk, "frame %s: decoded as %s", name, v2::frame_check_name(check));
      if (check == v2::kFrameOk) check_decoded_fields(view, c, name);
      CHECK(view.length == bytes.size(), "frame %s: length %lu", name, static_cast<unsigned long>(view.length));
      for (std::size_t k = 0; k < bytes.size(); ++k) {
        CHECK(v2::decode_frame(&bytes[0], k, view) == v2::kFramePartial, "frame %s: a %lu-byte prefix was not partial", name, static_cast<unsigned long>(k));
      }
      CHECK(count_accepted_flips(bytes, frame_ok) == 0, "frame %s: a flipped bit was accepted", name);
    } else {
      ++bad;
      CHECK(std::string(v2::frame_check_name(check)) == c["error"].text, "frame %s: decoded as %s, vector says %s", name, v2::frame_check_name(check),
            c["error"].text.c_str());
      // What the service would count and not store, the encoders refuse to make.
      if (check == v2::kFrameNonFinite || check == v2::kFrameInvalidRecord) {
        uint8_t out[v2::kMaxFrameBytes];
        std::size_t n = 1;
        if (view.type == v2::kBatteryData) {
          v2::DataReading r;
          r.timestamp = view.timestamp;
          r.pack_voltage = view.value(0);
          r.pack_current = view.value(1);
          r.cell_temp = view.value(2);
          n = v2::encode_data(view.sequence, r, out, sizeof out);
        } else if (view.type == v2::kBatteryPerformance) {
          v2::Performance r;
          r.timestamp = view.timestamp;
          r.cycle_count = view.value(4);
          n = v2::encode_performance(view.sequence, r, out, sizeof out);
        }
        CHECK(n == 0, "frame %s: the encoder made it", name);
      }
    }
  }
  CHECK(good >= 5 && bad >= 6, "frame vectors missing (%d good, %d bad)", good, bad);
  std::printf("v2 vectors: CRC-32C, %lu handshakes (+%lu refused), %lu answers, %lu acks, %d frames encoded and decoded, %d bad frames classified\n",
              static_cast<unsigned long>(handshakes.items.size()), static_cast<unsigned long>(bad_handshakes.items.size()),
              static_cast<unsigned long>(answers.items.size()), static_cast<unsigned long>(acks.items.size()), good, bad);
}

// Cells at the limits, and the values a decoder must not trust.
void test_v2_limits() {
  std::vector<double> cells(battery_monitor::kMaxCells + 1, 3.7);
  v2::DataReading r;
  r.timestamp = 1764288000.0;
  r.cell_voltages = &cells[0];
  r.cell_temps = &cells[0];
  r.cell_voltage_count = battery_monitor::kMaxCells;
  r.cell_temp_count = battery_monitor::kMaxCells;
  std::vector<uint8_t> out(v2::kMaxFrameBytes + 8);
  const std::size_t n = v2::encode_data(1, r, &out[0], out.size());
  CHECK(n == v2::kMaxFrameBytes, "1,024 + 1,024 cells make %lu bytes, not the maximum frame", static_cast<unsigned long>(n));
  v2::FrameView view;
  CHECK(v2::decode_frame(&out[0], n, view) == v2::kFrameOk && view.cell_temp_count == battery_monitor::kMaxCells, "the largest frame does not decode");
  r.cell_temp_count = battery_monitor::kMaxCells + 1;
  CHECK(v2::encode_data(1, r, &out[0], out.size()) == 0, "1,025 cells encoded");
  r.cell_temp_count = 1;
  r.cell_temps = 0;
  CHECK(v2::encode_data(1, r, &out[0], out.size()) == 0, "a null array with a count encoded");
  r = v2::DataReading();
  CHECK(v2::encode_data(0, r, &out[0], out.size()) == 0, "sequence 0 encoded");
  r.timestamp = std::numeric_limits<double>::infinity();
  CHECK(v2::encode_data(1, r, &out[0], out.size()) == 0, "an infinite timestamp encoded");
  v2::Performance p;
  p.cycle_count = 9007199254740992.0;  // 2^53: not a safe integer
  CHECK(v2::encode_performance(1, p, &out[0], out.size()) == 0, "cycle_count 2^53 encoded");
  p.cycle_count = -3;
  CHECK(v2::encode_performance(1, p, &out[0], out.size()) > 0, "cycle_count -3 refused (an integer; the schema sets no minimum)");
  // A length field claiming more cells than the payload holds.
  r = v2::DataReading();
  double two[2] = {3.6, 3.7};
  r.cell_voltages = two;
  r.cell_voltage_count = 2;
  const std::size_t m = v2::encode_data(5, r, &out[0], out.size());
  out[20 + 24] = 3;  // nv 3, payload for 2
  v2::detail::seal(&out[0], m);
  CHECK(v2::decode_frame(&out[0], m, view) == v2::kFrameMalformed, "a cell count past the payload was not malformed");
  std::printf("v2 limits: 1,024 cells per array fill the largest frame; bad counts, sequence 0, 2^53 refused\n");
}

// Arbitrary bytes never crash a decoder (run under ASan/UBSan in test-asan), and a frame only
// decodes when its CRC holds.
void test_v2_fuzz() {
  std::minstd_rand rng(12345);
  std::vector<uint8_t> bytes(600);
  int ok = 0;
  for (int round = 0; round < 20000; ++round) {
    const std::size_t n = rng() % bytes.size();
    for (std::size_t i = 0; i < n; ++i) bytes[i] = static_cast<uint8_t>(rng());
    if (round % 3 == 0 && n >= 2) {
      bytes[0] = static_cast<uint8_t>(n);  // a plausible length, so the CRC check is reached
      bytes[1] = static_cast<uint8_t>(n >> 8);
    }
    v2::FrameView view;
    if (v2::decode_frame(n ? &bytes[0] : 0, n, view) == v2::kFrameOk) ++ok;
    v2::Handshake h;
    if (n > 0) v2::check_handshake(&bytes[0], n, h);
  }
  CHECK(ok == 0, "%d random byte strings decoded as frames", ok);
  std::printf("v2 fuzz: 20,000 random inputs, none decoded as a frame, no crash\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir;
  if (argc > 1) {
    dir = argv[1];
  } else {
    const char* candidates[] = {"../../test/vectors", "test/vectors"};
    for (std::size_t i = 0; i < 2 && dir.empty(); ++i) {
      std::string probe;
      if (read_file(std::string(candidates[i]) + "/binary-frames.json", probe)) dir = candidates[i];
    }
    if (dir.empty()) {
      std::fprintf(stderr, "test_vectors: cannot find test/vectors; pass its path as the argument\n");
      return 2;
    }
  }
  test_binary_vectors(dir);
  test_json_vectors(dir);
  test_cell_vectors(dir);
  test_cell_message_bound();
  test_cell_refusals();
  test_fixed_buffer();
  test_number_round_trip();
  test_refusals();
  test_string_escaping();
  test_locale();
  test_v2_vectors(dir);
  test_v2_limits();
  test_v2_fuzz();
  std::printf("test_vectors: %d checks passed, %d failed\n", check::passes(), check::failures());
  return check::failures() == 0 ? 0 : 1;
}
