// battery_monitor/client.hpp: edge-device client for the battery telemetry collector.
//
// Header-only, C++11, POSIX sockets only, no dependencies, so it builds with QNX's toolchain as
// well as with g++ on Linux. It speaks the collector's two wire formats (see DESIGN.md, "Wire
// formats"):
//   - port 23456: a TCP stream of 16-byte frames, four little-endian IEEE-754 float32:
//     device time, pack_voltage, pack_current, cell_temp;
//   - port 23457: newline-delimited JSON objects (performance records and predictions).
//
// The Client is single-threaded and never blocks longer than the caller allows: sockets are
// non-blocking, connects have a timeout, and all waiting happens in poll() with a bounded timeout.
// The device's own loop drives it (send_*() and poll()); there are no threads and no signals.
//
// Delivery guarantee, stated honestly: the wire protocol has no acknowledgements, so "sent" means
// "handed to the kernel's TCP send buffer". Readings that are queued but not yet written survive a
// disconnect (in a bounded ring buffer) and go out, in order, on the next connection; bytes the
// kernel had accepted when a connection breaks may be lost, as with any unacknowledged TCP stream.

#ifndef BATTERY_MONITOR_CLIENT_HPP
#define BATTERY_MONITOR_CLIENT_HPP

#include <chrono>
#include <cmath>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <random>
#include <stdint.h>
#include <string>
#include <vector>

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

namespace battery_monitor {

// The frame format is defined as IEEE-754 binary32; refuse to build where float is anything else
// rather than send bytes the collector would misread.
static_assert(std::numeric_limits<float>::is_iec559 && sizeof(float) == 4,
              "battery_monitor needs IEEE-754 binary32 float");
static_assert(std::numeric_limits<double>::is_iec559, "battery_monitor needs IEEE-754 binary64 double");

const int kDefaultBinaryPort = 23456;
const int kDefaultJsonPort = 23457;
const std::size_t kFrameBytes = 16;
// The collector drops JSON messages over 64 KiB; refusing them here makes the failure visible.
const std::size_t kMaxMessageBytes = 64 * 1024;
// Limits from the collector's record schema (src/records/schemas.ts).
const std::size_t kMaxBatteryIdLength = 64;
const std::size_t kMaxSourceLength = 128;

// ---------------------------------------------------------------------------------------------
// Binary frames
// ---------------------------------------------------------------------------------------------

// One battery-data reading as it travels in a frame. float, not double: the frame carries
// float32, so the type says what precision actually reaches the server.
struct Reading {
  float device_time;  // device clock (e.g. seconds since boot); the server stamps arrival time
  float pack_voltage;
  float pack_current;
  float cell_temp;

  Reading() : device_time(0), pack_voltage(0), pack_current(0), cell_temp(0) {}
  Reading(float t, float voltage, float current, float temp)
      : device_time(t), pack_voltage(voltage), pack_current(current), cell_temp(temp) {}
};

namespace detail {

// Byte order is written out explicitly with shifts, so the result is little-endian whatever the
// host's byte order (QNX also runs on big-endian targets). memcpy is the defined way to get a
// float's bits.
inline void put_f32_le(float value, uint8_t* out) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  out[0] = static_cast<uint8_t>(bits);
  out[1] = static_cast<uint8_t>(bits >> 8);
  out[2] = static_cast<uint8_t>(bits >> 16);
  out[3] = static_cast<uint8_t>(bits >> 24);
}

inline float get_f32_le(const uint8_t* in) {
  const uint32_t bits = static_cast<uint32_t>(in[0]) | (static_cast<uint32_t>(in[1]) << 8) |
                        (static_cast<uint32_t>(in[2]) << 16) | (static_cast<uint32_t>(in[3]) << 24);
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

}  // namespace detail

// Writes the 16-byte frame for `reading`. Returns false, leaving `out` untouched, when any value
// is NaN or infinite: the collector would count and drop such a frame, so it is refused here.
inline bool encode_frame(const Reading& reading, uint8_t out[16]) {
  if (!std::isfinite(reading.device_time) || !std::isfinite(reading.pack_voltage) ||
      !std::isfinite(reading.pack_current) || !std::isfinite(reading.cell_temp)) {
    return false;
  }
  detail::put_f32_le(reading.device_time, out);
  detail::put_f32_le(reading.pack_voltage, out + 4);
  detail::put_f32_le(reading.pack_current, out + 8);
  detail::put_f32_le(reading.cell_temp, out + 12);
  return true;
}

// Reads a frame back (what the collector does). Always fills `reading`; returns false when a
// value is not finite, i.e. when the collector would reject the frame.
inline bool decode_frame(const uint8_t in[16], Reading& reading) {
  reading.device_time = detail::get_f32_le(in);
  reading.pack_voltage = detail::get_f32_le(in + 4);
  reading.pack_current = detail::get_f32_le(in + 8);
  reading.cell_temp = detail::get_f32_le(in + 12);
  return std::isfinite(reading.device_time) && std::isfinite(reading.pack_voltage) &&
         std::isfinite(reading.pack_current) && std::isfinite(reading.cell_temp);
}

// ---------------------------------------------------------------------------------------------
// JSON messages
// ---------------------------------------------------------------------------------------------

// Common optional fields: an empty string or has_timestamp == false leaves the field out, and the
// server fills in its default (arrival time, the kind's default source, battery_id "default").
struct PerformanceRecord {
  double pack_voltage;
  double pack_current;
  double cell_temp;
  double capacity_remaining;  // percent of nominal
  uint32_t cycle_count;       // an integer on the wire, as the schema requires
  double age_months;
  double health_score;
  bool has_timestamp;
  double timestamp;  // Unix seconds
  std::string battery_id;
  std::string source;

  PerformanceRecord()
      : pack_voltage(0), pack_current(0), cell_temp(0), capacity_remaining(0), cycle_count(0),
        age_months(0), health_score(0), has_timestamp(false), timestamp(0) {}
};

struct Prediction {
  double remaining_life_hours;
  double remaining_cycles;
  double degradation_rate;
  bool has_timestamp;
  double timestamp;  // Unix seconds
  std::string battery_id;
  std::string source;

  Prediction()
      : remaining_life_hours(0), remaining_cycles(0), degradation_rate(0), has_timestamp(false),
        timestamp(0) {}
};

// 1-64 characters of A-Z a-z 0-9 . _ : -, the server's pattern. Checked on the device because a
// message the server rejects is lost silently from the device's point of view.
inline bool is_valid_battery_id(const std::string& id) {
  if (id.empty() || id.size() > kMaxBatteryIdLength) return false;
  for (std::size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok) return false;
  }
  return true;
}

namespace detail {

// Shortest of %.15g/%.16g/%.17g that reads back as the same double: always round-trippable
// (%.17g is the fallback), but 92.3 stays "92.3" rather than "92.299999999999997".
inline void append_number(std::string& out, double value) {
  char buf[40];
  for (int precision = 15; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, value);
    if (precision == 17 || std::strtod(buf, 0) == value) break;
  }
  // snprintf and strtod follow the C locale's decimal point; a device that called setlocale()
  // could get "87,5". For a finite %g the only characters besides digits, sign and exponent are
  // the decimal point, so map that run to '.', whatever the locale uses.
  bool in_point = false;
  for (const char* p = buf; *p; ++p) {
    const char c = *p;
    if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == 'e' || c == 'E') {
      out += c;
      in_point = false;
    } else if (!in_point) {
      out += '.';
      in_point = true;
    }
  }
}

// JSON string escaping. Bytes >= 0x80 pass through: strings are expected to be UTF-8.
inline void append_string(std::string& out, const std::string& s) {
  out += '"';
  for (std::size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

// Length as the server counts it (JavaScript: UTF-16 code units) for UTF-8 input: one unit per
// code point, two for code points outside the BMP (4-byte sequences).
inline std::size_t utf16_length(const std::string& s) {
  std::size_t units = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if ((c & 0xC0) != 0x80) units += (c >= 0xF0) ? 2 : 1;
  }
  return units;
}

// Builds one newline-terminated JSON object, remembering whether any field was invalid so the
// encoders can refuse the whole message at the end.
class JsonObjectWriter {
 public:
  explicit JsonObjectWriter(std::string& out) : out_(out), ok_(true), first_(true) { out_ = "{"; }

  void number(const char* key, double value) {
    if (!std::isfinite(value)) {
      ok_ = false;
      return;
    }
    key_(key);
    append_number(out_, value);
  }

  void integer(const char* key, unsigned long value) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "%lu", value);
    key_(key);
    out_ += buf;
  }

  void battery_id(const std::string& id) {
    if (id.empty()) return;
    if (!is_valid_battery_id(id)) {
      ok_ = false;
      return;
    }
    key_("battery_id");
    append_string(out_, id);
  }

  void source(const std::string& source) {
    if (source.empty()) return;
    if (utf16_length(source) > kMaxSourceLength) {
      ok_ = false;
      return;
    }
    key_("source");
    append_string(out_, source);
  }

  bool finish() {
    out_ += "}\n";
    if (!ok_ || out_.size() > kMaxMessageBytes) {
      out_.clear();
      return false;
    }
    return true;
  }

 private:
  void key_(const char* key) {
    if (!first_) out_ += ',';
    first_ = false;
    out_ += '"';
    out_ += key;  // keys are our own literals: nothing to escape
    out_ += "\":";
  }

  std::string& out_;
  bool ok_;
  bool first_;
};

}  // namespace detail

// Sets `line` to the record as one JSON object followed by '\n'. Returns false (and clears
// `line`) when a number is not finite, the battery_id does not match the server's pattern, the
// source is longer than 128 characters, or the message would exceed 64 KiB.
inline bool encode_performance(const PerformanceRecord& r, std::string& line) {
  detail::JsonObjectWriter w(line);
  if (r.has_timestamp) w.number("timestamp", r.timestamp);
  w.number("pack_voltage", r.pack_voltage);
  w.number("pack_current", r.pack_current);
  w.number("cell_temp", r.cell_temp);
  w.number("capacity_remaining", r.capacity_remaining);
  w.integer("cycle_count", r.cycle_count);
  w.number("age_months", r.age_months);
  w.number("health_score", r.health_score);
  w.battery_id(r.battery_id);
  w.source(r.source);
  return w.finish();
}

inline bool encode_prediction(const Prediction& p, std::string& line) {
  detail::JsonObjectWriter w(line);
  if (p.has_timestamp) w.number("timestamp", p.timestamp);
  w.number("remaining_life_hours", p.remaining_life_hours);
  w.number("remaining_cycles", p.remaining_cycles);
  w.number("degradation_rate", p.degradation_rate);
  w.battery_id(p.battery_id);
  w.source(p.source);
  return w.finish();
}

// ---------------------------------------------------------------------------------------------
// Outgoing queues
// ---------------------------------------------------------------------------------------------

namespace detail {

// What a connection writes from: a queue of byte items whose head may be partly written.
//
// The head item is "pinned" once some of its bytes are on the wire: dropping it then would leave
// the receiver with half an item and misalign every frame after it. So overflow drops the oldest
// item that has not started, and a lost connection restarts the pinned item from its first byte
// (the receiver discards a partial item at disconnect, so sending it whole again is right).
class Outbox {
 public:
  Outbox() : sent_(0), dropped_(0), resent_(0) {}
  virtual ~Outbox() {}
  // The next contiguous unsent bytes; len == 0 when there is nothing to send.
  virtual const uint8_t* peek(std::size_t& len) const = 0;
  // `n` bytes of what peek() returned were written.
  virtual void consume(std::size_t n) = 0;
  // The connection was lost: a partly written head item must go again from its first byte.
  virtual void restart() = 0;
  virtual std::size_t size() const = 0;
  bool empty() const { return size() == 0; }

  uint64_t sent() const { return sent_; }
  uint64_t dropped() const { return dropped_; }
  uint64_t resent() const { return resent_; }

 protected:
  uint64_t sent_;     // items completely written to the socket
  uint64_t dropped_;  // items discarded because the queue was full
  uint64_t resent_;   // partly written items restarted after a lost connection
};

// Fixed-capacity ring of encoded frames in one contiguous allocation, so peek() can hand send()
// many frames at once (one syscall, full TCP segments) without copying.
class FrameRing : public Outbox {
 public:
  explicit FrameRing(std::size_t capacity)
      : cap_(capacity == 0 ? 1 : capacity), buf_(cap_ * kFrameBytes), head_(0), size_(0),
        head_offset_(0) {}

  // Appends a frame; when full, drops the oldest frame not yet started. Returns false if a
  // frame was dropped.
  bool push(const uint8_t frame[16]) {
    bool kept_all = true;
    if (size_ == cap_) {
      kept_all = false;
      ++dropped_;
      if (head_offset_ == 0) {
        pop_head_();
      } else if (cap_ == 1) {
        return false;  // the only slot is mid-write: the new frame is the one that cannot fit
      } else {
        // Drop the second-oldest: move the pinned head into its slot and advance.
        std::memcpy(slot_(1), slot_(0), kFrameBytes);
        pop_head_();
      }
    }
    std::memcpy(&buf_[((head_ + size_) % cap_) * kFrameBytes], frame, kFrameBytes);
    ++size_;
    return kept_all;
  }

  const uint8_t* peek(std::size_t& len) const {
    if (size_ == 0) {
      len = 0;
      return 0;
    }
    // Frames from head to the end of the storage or the tail, whichever comes first.
    const std::size_t contiguous = (head_ + size_ <= cap_) ? size_ : cap_ - head_;
    len = contiguous * kFrameBytes - head_offset_;
    return &buf_[head_ * kFrameBytes + head_offset_];
  }

  void consume(std::size_t n) {
    const std::size_t total = head_offset_ + n;
    const std::size_t whole = total / kFrameBytes;
    head_ = (head_ + whole) % cap_;
    size_ -= whole;
    sent_ += whole;
    head_offset_ = total % kFrameBytes;
  }

  void restart() {
    if (head_offset_ != 0) {
      head_offset_ = 0;
      ++resent_;
    }
  }

  std::size_t size() const { return size_; }
  std::size_t capacity() const { return cap_; }

 private:
  uint8_t* slot_(std::size_t i) { return &buf_[((head_ + i) % cap_) * kFrameBytes]; }
  void pop_head_() {
    head_ = (head_ + 1) % cap_;
    --size_;
  }

  std::size_t cap_;
  std::vector<uint8_t> buf_;
  std::size_t head_;
  std::size_t size_;
  std::size_t head_offset_;  // bytes of the head frame already written on this connection
};

// Bounded queue of JSON lines, same rules as FrameRing. Messages are rare and variable-sized, so
// a deque of strings is simpler than a byte ring and costs nothing that matters.
class MessageQueue : public Outbox {
 public:
  explicit MessageQueue(std::size_t capacity) : cap_(capacity == 0 ? 1 : capacity), head_offset_(0) {}

  bool push(const std::string& line) {
    bool kept_all = true;
    if (q_.size() == cap_) {
      kept_all = false;
      ++dropped_;
      if (head_offset_ == 0) {
        q_.pop_front();
      } else if (cap_ == 1) {
        return false;
      } else {
        q_.erase(q_.begin() + 1);
      }
    }
    q_.push_back(line);
    return kept_all;
  }

  const uint8_t* peek(std::size_t& len) const {
    if (q_.empty()) {
      len = 0;
      return 0;
    }
    len = q_.front().size() - head_offset_;
    return reinterpret_cast<const uint8_t*>(q_.front().data()) + head_offset_;
  }

  void consume(std::size_t n) {
    head_offset_ += n;
    if (head_offset_ == q_.front().size()) {
      q_.pop_front();
      head_offset_ = 0;
      ++sent_;
    }
  }

  void restart() {
    if (head_offset_ != 0) {
      head_offset_ = 0;
      ++resent_;
    }
  }

  std::size_t size() const { return q_.size(); }

 private:
  std::size_t cap_;
  std::deque<std::string> q_;
  std::size_t head_offset_;
};

typedef std::chrono::steady_clock Clock;

inline int64_t ms_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(to - from).count();
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

struct ClientOptions {
  // Collector address. A numeric address never touches DNS; a host name is resolved with
  // getaddrinfo() at each connection attempt, which can block while the resolver works.
  std::string host;
  int binary_port;  // frames; 0 disables the channel
  int json_port;    // JSON messages; 0 disables the channel
  std::size_t frame_capacity;    // readings kept while the collector is unreachable
  std::size_t message_capacity;  // JSON messages kept while the collector is unreachable
  int connect_timeout_ms;
  // Delay before reconnecting: starts at backoff_initial_ms, doubles after each failure up to
  // backoff_max_ms, with jitter (a random point in [delay/2, delay]) so a fleet of devices does not
  // reconnect in lockstep after the collector restarts. Resets after a connection stays up for
  // stable_connection_ms, so a server that accepts and immediately closes is not hammered.
  int backoff_initial_ms;
  int backoff_max_ms;
  int stable_connection_ms;
  // SO_SNDBUF for both sockets; 0 keeps the system default. Bytes in the kernel's send buffer
  // count as sent and are lost if the connection breaks, while readings still in the ring survive
  // it; a small buffer keeps more of the backlog in the ring (and uses less memory).
  int socket_send_buffer;

  ClientOptions()
      : host("127.0.0.1"), binary_port(kDefaultBinaryPort), json_port(kDefaultJsonPort),
        frame_capacity(1024), message_capacity(256), connect_timeout_ms(2000),
        backoff_initial_ms(100), backoff_max_ms(5000), stable_connection_ms(1000),
        socket_send_buffer(0) {}
};

struct Stats {
  uint64_t frames_sent;       // written completely to the binary socket
  uint64_t frames_dropped;    // oldest discarded because the ring was full
  uint64_t messages_sent;
  uint64_t messages_dropped;
  uint64_t refused;           // non-finite or invalid input, never queued
  uint64_t resent;            // partly written frames/messages sent again whole after a reconnect
  uint64_t reconnects;        // connections established after the first, both channels
  uint64_t connect_failures;  // attempts refused, timed out or unresolvable
};

namespace detail {

// One TCP connection to one port, with its reconnect state. Writes from an Outbox it does not own.
class Channel {
 public:
  Channel(const ClientOptions& options, int port, Outbox& outbox, std::minstd_rand& rng)
      : options_(options), port_(port), outbox_(outbox), rng_(rng), fd_(-1), state_(kIdle),
        next_attempt_(Clock::now()), backoff_ms_(options.backoff_initial_ms), addr_index_(0),
        ever_connected_(false), reconnects_(0), connect_failures_(0) {}

  ~Channel() { close_fd_(); }

  bool enabled() const { return port_ > 0; }
  bool connected() const { return state_ == kConnected; }
  uint64_t reconnects() const { return reconnects_; }
  uint64_t connect_failures() const { return connect_failures_; }

  // Starts a connection attempt if one is due and there is something to send (connecting lazily
  // means an idle channel holds no socket, and the collector's idle timeout never bites). Returns
  // the poll events to wait for (0: none) and lowers `wait_ms` to this channel's next deadline.
  short prepare(Clock::time_point now, int64_t& wait_ms) {
    if (!enabled()) return 0;
    if (state_ == kIdle && !outbox_.empty()) {
      if (now >= next_attempt_) {
        start_connect_(now);
      } else {
        lower_(wait_ms, ms_between(now, next_attempt_) + 1);
      }
    }
    if (state_ == kConnecting) {
      lower_(wait_ms, ms_between(now, connect_deadline_) + 1);
      return POLLOUT;
    }
    if (state_ == kConnected) {
      // POLLIN although the collector never sends: readability means it closed the connection,
      // and learning that before writing keeps readings in the ring instead of in a dead socket.
      return static_cast<short>(outbox_.empty() ? POLLIN : (POLLIN | POLLOUT));
    }
    return 0;
  }

  int fd() const { return fd_; }

  void handle(short revents, Clock::time_point now) {
    if (state_ == kConnecting) {
      if (revents & (POLLOUT | POLLERR | POLLHUP | POLLNVAL)) finish_connect_(now);
      if (state_ == kConnected) write_pending_(now);
      return;
    }
    if (state_ != kConnected) return;
    if (revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) {
      if (!drain_input_()) {
        lost_(now);
        return;
      }
    }
    if (revents & POLLOUT) write_pending_(now);
  }

  void check_timeout(Clock::time_point now) {
    if (state_ == kConnecting && now >= connect_deadline_) fail_attempt_(now);
  }

  // Half-closes the connection (after which the collector sees end-of-stream once it has read
  // everything) and waits for the collector to close its side. Returns true if it did.
  bool shutdown_and_wait(Clock::time_point deadline) {
    if (state_ != kConnected) return false;
    ::shutdown(fd_, SHUT_WR);
    bool confirmed = false;
    for (;;) {
      const int64_t left = ms_between(Clock::now(), deadline);
      if (left <= 0) break;
      struct pollfd p;
      p.fd = fd_;
      p.events = POLLIN;
      p.revents = 0;
      const int rc = ::poll(&p, 1, static_cast<int>(left));
      if (rc < 0 && errno != EINTR) break;
      if (rc > 0 && !drain_input_()) {
        confirmed = true;
        break;
      }
    }
    disconnect_();
    return confirmed;
  }

  void close_now() { disconnect_(); }

 private:
  enum State { kIdle, kConnecting, kConnected };

  static void lower_(int64_t& wait_ms, int64_t candidate) {
    if (candidate < 0) candidate = 0;
    if (wait_ms < 0 || candidate < wait_ms) wait_ms = candidate;
  }

  void start_connect_(Clock::time_point now) {
    struct addrinfo hints;
    std::memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
#ifdef AI_NUMERICSERV
    hints.ai_flags = AI_NUMERICSERV;
#endif
    char port[16];
    std::snprintf(port, sizeof port, "%d", port_);
    struct addrinfo* found = 0;
    if (::getaddrinfo(options_.host.c_str(), port, &hints, &found) != 0 || found == 0) {
      fail_attempt_(now);
      return;
    }
    // A name may resolve to several addresses (e.g. ::1 and 127.0.0.1 for "localhost"); each
    // failure moves on to the next one rather than retrying an address that refuses forever.
    std::size_t count = 0;
    for (struct addrinfo* a = found; a; a = a->ai_next) ++count;
    struct addrinfo* ai = found;
    for (std::size_t i = addr_index_ % count; i > 0; --i) ai = ai->ai_next;

    fd_ = ::socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd_ < 0) {
      ::freeaddrinfo(found);
      fail_attempt_(now);
      return;
    }
    configure_socket_(fd_, options_.socket_send_buffer);
    const int rc = ::connect(fd_, ai->ai_addr, ai->ai_addrlen);
    const int err = errno;
    ::freeaddrinfo(found);
    if (rc == 0) {
      connected_(now);
    } else if (err == EINPROGRESS || err == EINTR) {
      // POSIX: an interrupted connect carries on asynchronously, like EINPROGRESS.
      state_ = kConnecting;
      connect_deadline_ = now + std::chrono::milliseconds(options_.connect_timeout_ms);
    } else {
      fail_attempt_(now);
    }
  }

  static void configure_socket_(int fd, int send_buffer) {
    // Non-blocking, so neither connect() nor send() can stall the device loop.
    const int flags = ::fcntl(fd, F_GETFL, 0);
    if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    int one = 1;
    // Readings are small and time-sensitive: do not hold them back waiting to fill a segment.
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (send_buffer > 0) ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &send_buffer, sizeof send_buffer);
#if !defined(MSG_NOSIGNAL) && defined(SO_NOSIGPIPE)
    // BSD-style systems without MSG_NOSIGNAL: suppress SIGPIPE per socket instead.
    ::setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
  }

  void finish_connect_(Clock::time_point now) {
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err == 0) {
      connected_(now);
    } else {
      fail_attempt_(now);
    }
  }

  void connected_(Clock::time_point now) {
    state_ = kConnected;
    connected_at_ = now;
    if (ever_connected_) ++reconnects_;
    ever_connected_ = true;
  }

  // Every way a socket ends goes through here: an item cut off mid-write must start again from
  // its first byte on the next connection, or that connection's stream would begin misaligned.
  void disconnect_() {
    close_fd_();
    state_ = kIdle;
    outbox_.restart();
  }

  void fail_attempt_(Clock::time_point now) {
    disconnect_();
    ++connect_failures_;
    ++addr_index_;
    schedule_retry_(now);
  }

  void lost_(Clock::time_point now) {
    disconnect_();
    if (ms_between(connected_at_, now) >= options_.stable_connection_ms) {
      backoff_ms_ = options_.backoff_initial_ms;
    }
    schedule_retry_(now);
  }

  // Waits a random time in [backoff/2, backoff], then doubles the backoff up to the maximum.
  void schedule_retry_(Clock::time_point now) {
    const int64_t half = backoff_ms_ / 2;
    const int64_t jitter = static_cast<int64_t>(rng_() % static_cast<std::minstd_rand::result_type>(half + 1));
    next_attempt_ = now + std::chrono::milliseconds(backoff_ms_ - half + jitter);
    backoff_ms_ = (backoff_ms_ > options_.backoff_max_ms / 2) ? options_.backoff_max_ms : backoff_ms_ * 2;
    if (backoff_ms_ < 1) backoff_ms_ = 1;
  }

  // Reads and discards whatever the peer sent. Returns false on end-of-stream or error.
  bool drain_input_() {
    char scratch[512];
    for (;;) {
      const ssize_t n = ::recv(fd_, scratch, sizeof scratch, 0);
      if (n > 0) continue;
      if (n == 0) return false;
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;
    }
  }

  void write_pending_(Clock::time_point now) {
#ifdef MSG_NOSIGNAL
    const int flags = MSG_NOSIGNAL;  // a closed peer must give EPIPE, not kill the process
#else
    const int flags = 0;
#endif
    for (;;) {
      std::size_t len = 0;
      const uint8_t* data = outbox_.peek(len);
      if (len == 0) return;
      const ssize_t n = ::send(fd_, data, len, flags);
      if (n > 0) {
        // A short write is normal: consume() keeps the offset inside the frame, and the next
        // write continues from there, so frames are never torn or misaligned.
        outbox_.consume(static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;  // wait for POLLOUT
      lost_(now);
      return;
    }
  }

  void close_fd_() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  const ClientOptions& options_;
  int port_;
  Outbox& outbox_;
  std::minstd_rand& rng_;
  int fd_;
  State state_;
  Clock::time_point next_attempt_;
  Clock::time_point connect_deadline_;
  Clock::time_point connected_at_;
  int backoff_ms_;
  std::size_t addr_index_;
  bool ever_connected_;
  uint64_t reconnects_;
  uint64_t connect_failures_;
};

}  // namespace detail

// Sends readings (binary frames, port 23456) and JSON messages (port 23457) over two TCP
// connections. Not thread-safe: call it from one thread (normally the device's main loop).
//
//   battery_monitor::Client client(options);
//   loop: client.send_reading(r); ... client.poll(0);   // poll() also drives reconnects
//   at exit: client.flush(timeout_ms); client.close(timeout_ms);
class Client {
 public:
  explicit Client(const ClientOptions& options)
      : options_(options), frames_(options.frame_capacity), messages_(options.message_capacity),
        rng_(seed_()), binary_(options_, options.binary_port, frames_, rng_),
        json_(options_, options.json_port, messages_, rng_), refused_(0) {}

  // Queues a reading and tries to send it at once, without waiting. Returns false if it was
  // refused (a value is NaN or infinite); a full ring is not a refusal: the oldest is dropped.
  bool send_reading(const Reading& reading) {
    uint8_t frame[kFrameBytes];
    if (!binary_.enabled() || !encode_frame(reading, frame)) {
      ++refused_;
      return false;
    }
    frames_.push(frame);
    poll(0);
    return true;
  }

  // Queue a JSON message, as send_reading(). False if encode_performance/encode_prediction refuse.
  bool send_performance(const PerformanceRecord& record) {
    std::string line;
    encode_performance(record, line);
    return queue_message_(line);
  }

  bool send_prediction(const Prediction& prediction) {
    std::string line;
    encode_prediction(prediction, line);
    return queue_message_(line);
  }

  // Does whatever can be done now (connect, detect a closed peer, write), waiting at most
  // timeout_ms for something to happen. Call it regularly; poll(0) never waits.
  void poll(int timeout_ms) {
    const detail::Clock::time_point now = detail::Clock::now();
    int64_t wait_ms = timeout_ms < 0 ? 0 : timeout_ms;
    struct pollfd fds[2];
    detail::Channel* owners[2];
    int n = 0;
    detail::Channel* channels[2] = {&binary_, &json_};
    for (int i = 0; i < 2; ++i) {
      const short events = channels[i]->prepare(now, wait_ms);
      if (events == 0) continue;
      fds[n].fd = channels[i]->fd();
      fds[n].events = events;
      fds[n].revents = 0;
      owners[n++] = channels[i];
    }
    if (n == 0 && wait_ms <= 0) return;
    const int rc = ::poll(fds, static_cast<nfds_t>(n), static_cast<int>(wait_ms));
    const detail::Clock::time_point after = detail::Clock::now();
    if (rc > 0) {
      for (int i = 0; i < n; ++i) {
        if (fds[i].revents != 0) owners[i]->handle(fds[i].revents, after);
      }
    }
    binary_.check_timeout(after);
    json_.check_timeout(after);
  }

  // Polls until everything queued has been written or timeout_ms has passed. True if all written.
  bool flush(int timeout_ms) {
    const detail::Clock::time_point deadline =
        detail::Clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      if (frames_.empty() && messages_.empty()) return true;
      const int64_t left = detail::ms_between(detail::Clock::now(), deadline);
      if (left <= 0) return false;
      poll(static_cast<int>(left));
    }
  }

  // Flushes, then closes both connections gracefully: half-close, and wait for the collector to
  // close its side, which it does only after reading everything sent. Returns true if everything
  // was written and every open connection was closed by the collector within timeout_ms.
  bool close(int timeout_ms) {
    const detail::Clock::time_point deadline =
        detail::Clock::now() + std::chrono::milliseconds(timeout_ms);
    const bool flushed = flush(timeout_ms);
    bool confirmed = true;
    detail::Channel* channels[2] = {&binary_, &json_};
    for (int i = 0; i < 2; ++i) {
      if (channels[i]->connected() && !channels[i]->shutdown_and_wait(deadline)) confirmed = false;
      channels[i]->close_now();
    }
    return flushed && confirmed;
  }

  Stats stats() const {
    Stats s;
    s.frames_sent = frames_.sent();
    s.frames_dropped = frames_.dropped();
    s.messages_sent = messages_.sent();
    s.messages_dropped = messages_.dropped();
    s.refused = refused_;
    s.resent = frames_.resent() + messages_.resent();
    s.reconnects = binary_.reconnects() + json_.reconnects();
    s.connect_failures = binary_.connect_failures() + json_.connect_failures();
    return s;
  }

  std::size_t pending_frames() const { return frames_.size(); }
  std::size_t pending_messages() const { return messages_.size(); }
  bool binary_connected() const { return binary_.connected(); }
  bool json_connected() const { return json_.connected(); }

 private:
  Client(const Client&);             // not copyable: the channels refer to the queues
  Client& operator=(const Client&);  // (declared, never defined: C++03-style for old toolchains)

  // An empty line is what the encoders leave when they refuse a record.
  bool queue_message_(const std::string& line) {
    if (!json_.enabled() || line.empty()) {
      ++refused_;
      return false;
    }
    messages_.push(line);
    poll(0);
    return true;
  }

  static std::minstd_rand::result_type seed_() {
    // Jitter only needs devices to differ from each other: clock ticks are enough.
    const uint64_t ticks =
        static_cast<uint64_t>(detail::Clock::now().time_since_epoch().count());
    return (ticks ^ (ticks >> 32)) % 2147483646u + 1u;  // minstd needs a seed in [1, 2^31 - 2]
  }

  ClientOptions options_;
  detail::FrameRing frames_;
  detail::MessageQueue messages_;
  std::minstd_rand rng_;
  detail::Channel binary_;
  detail::Channel json_;
  uint64_t refused_;
};

}  // namespace battery_monitor

#endif  // BATTERY_MONITOR_CLIENT_HPP
