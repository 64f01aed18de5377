// battery_monitor/client.hpp: edge-device client for the battery telemetry collector.
//
// Header-only, C++11, POSIX sockets only, no dependencies, no threads, no signal handlers, so it
// builds with QNX's toolchain as well as with g++/clang++ on Linux. It speaks the collector's two
// wire formats (DESIGN.md, "Wire formats"):
//   - port 23456: a TCP stream of 16-byte frames, four little-endian IEEE-754 float32:
//     device time, pack_voltage, pack_current, cell_temp;
//   - port 23457: newline-delimited JSON objects (performance records, predictions, and readings
//     with per-cell values, which a frame has no room for).
// Edge protocol v2 (port 23458: sequenced, acknowledged frames from an on-disk queue) is
// battery_monitor/v2.hpp, which builds on this header.
//
// Synopsis (public API; everything in namespace detail, below the public part, is internal):
//
//   Client c;                                         // no heap, no sockets yet
//   ClientOptions o;  o.host = "10.0.0.5";            // see ClientOptions for every option
//   Error e = c.init(o);                              // validates; or init(o, storage, Client::storage_bytes(o))
//   c.send_reading(Reading(t, v, i, temp));           // queues (never writes, never blocks)
//   c.send_performance(record);  c.send_prediction(prediction);
//   c.send_cell_reading(cells);                       // JSON; set o.max_cells first (sizes the buffers)
//   c.poll(timeout_ms);                               // the library's own ::poll: connects, writes, times out
//     or, in your event loop:  n = c.descriptors(fds, 2);  t = c.next_timeout_ms();  <wait>;  c.process(fds, n);
//   c.flush(timeout_ms);  c.close(timeout_ms);        // at exit; close() == kOk: written and confirmed
//   c.stats();  c.last_error();  c.last_errno();
//
// Delivery promise, precisely: readings and messages wait in bounded rings (the oldest not yet
// started is dropped when full, and counted); a frame or message is never split across
// connections, a partly written one goes again whole on the next connection. "Sent" means the
// kernel accepted the bytes; the protocol has no acknowledgements, so bytes in the kernel's send
// buffer when a connection breaks can be lost. close() returns kOk only when everything was
// written and the collector then ended its side in order (recv() returned 0), which it does
// after reading all that was sent; a reset, an error or no answer within the time is not a
// confirmation.

#ifndef BATTERY_MONITOR_CLIENT_HPP
#define BATTERY_MONITOR_CLIENT_HPP

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <random>
#include <stdint.h>
#include <string>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

// A send() to a connection the peer has closed raises SIGPIPE, which kills a process that has not
// ignored it. The library suppresses it per call (MSG_NOSIGNAL) or per socket (SO_NOSIGPIPE); where
// the system offers neither, the application must ignore SIGPIPE itself and say so here, rather
// than find out in the field.
#if !defined(MSG_NOSIGNAL) && !defined(SO_NOSIGPIPE) && !defined(BATTERY_MONITOR_APP_IGNORES_SIGPIPE)
#error "battery_monitor: neither MSG_NOSIGNAL nor SO_NOSIGPIPE exists here; ignore SIGPIPE in the application (signal(SIGPIPE, SIG_IGN)) and define BATTERY_MONITOR_APP_IGNORES_SIGPIPE"
#endif

namespace battery_monitor {

// The frame format is IEEE-754 binary32; refuse to build where float is anything else rather than
// send bytes the collector would misread.
static_assert(std::numeric_limits<float>::is_iec559 && sizeof(float) == 4, "battery_monitor needs IEEE-754 binary32 float");
static_assert(std::numeric_limits<double>::is_iec559 && sizeof(double) == 8, "battery_monitor needs IEEE-754 binary64 double");

// =============================================================================================
// Public API
// =============================================================================================

const int kDefaultBinaryPort = 23456;
const int kDefaultJsonPort = 23457;
const std::size_t kFrameBytes = 16;
// The longest performance record or prediction the encoders produce (a valid record needs about
// 1.3 KiB at most). Longer output, only possible with invalid UTF-8 in `source`, is refused, so a
// message ring of this size always holds any such message.
const std::size_t kMaxMessageBytes = 2048;
// The collector's limit on one JSON message (src/collector/json-decoder.ts, MAX_MESSAGE_BYTES).
const std::size_t kCollectorMaxMessageBytes = 64 * 1024;
// Values per cell array in a CellReading: the collector's limit.
const std::size_t kMaxCells = 1024;
// The longest message a CellReading with at most `cells` values per array encodes to (longer
// output is refused, as above): every field but the cells within kMaxMessageBytes, each cell value
// at most 24 characters ("-2.2250738585072014e-308") and a comma, and 64 bytes for the two
// arrays' keys and brackets. 53,312 bytes for kMaxCells.
inline constexpr std::size_t max_cell_message_bytes(std::size_t cells) { return kMaxMessageBytes + 64 + 2 * cells * 25; }
static_assert(max_cell_message_bytes(kMaxCells) < kCollectorMaxMessageBytes, "the longest cell message must fit the collector's limit");
// Limits from the collector's record schema (src/records/schemas.ts).
const std::size_t kMaxBatteryIdLength = 64;
const std::size_t kMaxSourceLength = 128;
const std::size_t kMaxHostLength = 255;
// Addresses kept from one name lookup; connection attempts rotate through them.
const int kMaxAddresses = 8;

// One battery-data reading as it travels in a frame. float, not double: the frame carries float32,
// so the type says what precision actually reaches the server.
struct Reading {
  float device_time;  // device clock (e.g. seconds since boot); the server stamps arrival time
  float pack_voltage;
  float pack_current;
  float cell_temp;

  Reading() : device_time(0), pack_voltage(0), pack_current(0), cell_temp(0) {}
  Reading(float t, float voltage, float current, float temp) : device_time(t), pack_voltage(voltage), pack_current(current), cell_temp(temp) {}
};

// JSON records. Strings are borrowed (the record holds no heap): null or "" leaves the field out,
// and the server fills in its default (battery_id "default", the kind's default source); so does
// has_timestamp == false (arrival time).
struct PerformanceRecord {
  double pack_voltage;
  double pack_current;
  double cell_temp;
  double capacity_remaining;  // percent of nominal
  uint32_t cycle_count;       // an integer on the wire, as the schema requires
  double age_months;
  double health_score;
  bool has_timestamp;
  double timestamp;        // Unix seconds
  const char* battery_id;  // 1-64 of A-Z a-z 0-9 . _ : -
  const char* source;      // UTF-8, at most 128 UTF-16 code units

  PerformanceRecord()
      : pack_voltage(0), pack_current(0), cell_temp(0), capacity_remaining(0), cycle_count(0), age_months(0), health_score(0),
        has_timestamp(false), timestamp(0), battery_id(0), source(0) {}
};

struct Prediction {
  double remaining_life_hours;
  double remaining_cycles;
  double degradation_rate;
  bool has_timestamp;
  double timestamp;  // Unix seconds
  const char* battery_id;
  const char* source;

  Prediction() : remaining_life_hours(0), remaining_cycles(0), degradation_rate(0), has_timestamp(false), timestamp(0), battery_id(0), source(0) {}
};

// A battery-data reading with per-cell values. A 16-byte frame has no room for cells, so it travels
// as a JSON message on the JSON port (a battery-data record there, routed by pack_voltage) and
// counts as a message in Stats. Doubles, as JSON carries them. The cell arrays are borrowed for the
// call like the strings (the reading holds no heap): a count of 0 leaves that array out; more than
// ClientOptions::max_cells is refused (kErrTooManyCells), and so is a non-finite value anywhere.
struct CellReading {
  double pack_voltage;
  double pack_current;
  double cell_temp;
  const double* cell_voltages;     // volts, cell_voltage_count of them
  std::size_t cell_voltage_count;
  const double* cell_temps;        // degrees C, cell_temp_count of them
  std::size_t cell_temp_count;
  bool has_timestamp;
  double timestamp;       // Unix seconds; without it the server stamps arrival time
  bool has_device_time;
  double device_time;     // the device clock, kept beside timestamp as a frame's is
  const char* battery_id;
  const char* source;

  CellReading()
      : pack_voltage(0), pack_current(0), cell_temp(0), cell_voltages(0), cell_voltage_count(0), cell_temps(0), cell_temp_count(0),
        has_timestamp(false), timestamp(0), has_device_time(false), device_time(0), battery_id(0), source(0) {}
};

// Encoders and decoder, usable without a Client. Non-finite numbers are refused by their bits, so
// the check holds under -ffast-math / -Ofast too.
inline bool encode_frame(const Reading& reading, uint8_t out[16]);  // little-endian on any host; false (out untouched) if NaN/inf
inline bool decode_frame(const uint8_t in[16], Reading& reading);   // always fills; false if the collector would reject it
inline bool is_valid_battery_id(const char* id);                    // the server's pattern
// One JSON object and '\n' into out[0, capacity); returns its length, or 0 when refused: a
// non-finite number, an invalid battery_id, a source over 128 characters, or no room.
inline std::size_t encode_performance(const PerformanceRecord& record, char* out, std::size_t capacity);
inline std::size_t encode_prediction(const Prediction& prediction, char* out, std::size_t capacity);
// The same for a reading with cells; also 0 for more than kMaxCells values in an array, or a null
// array with a count. The result is at most max_cell_message_bytes(larger count) long.
inline std::size_t encode_cell_reading(const CellReading& reading, char* out, std::size_t capacity);
// The same into a std::string (allocates); false and `line` empty when refused.
inline bool encode_performance(const PerformanceRecord& record, std::string& line);
inline bool encode_prediction(const Prediction& prediction, std::string& line);
inline bool encode_cell_reading(const CellReading& reading, std::string& line);

enum Error {
  kOk = 0,
  kErrInvalidOptions,  // init(): an option is out of range; Client::validate() names it
  kErrNoMemory,        // init(): the rings could not be allocated, or the storage given is too small
  kErrNotInitialized,  // called before a successful init()
  kErrRefused,         // a value the collector would reject (non-finite, invalid id, too long): not queued
  kErrLinkDisabled,    // that link's port is 0
  kErrResolve,         // the host name did not resolve
  kErrConnect,         // connect() failed at once or later; last_errno() says why
  kErrConnectTimeout,  // the handshake did not finish within connect_timeout_ms
  kErrStalled,         // connected, bytes waiting, none accepted for stall_timeout_ms: abandoned
  kErrPeerClosed,      // the collector ended the connection (orderly)
  kErrIo,              // send() or recv() failed (ECONNRESET, EPIPE...); last_errno() says which
  kErrTimeout,         // flush()/close(): not everything written within the time
  kErrNotConfirmed,    // close(): written, but the collector did not end its side in order in time
  kErrTooManyCells,    // send_cell_reading(): an array longer than ClientOptions::max_cells: not queued
  // Edge protocol v2 (v2.hpp) only:
  kErrQueue,           // the on-disk queue could not be opened, written or synced; last_errno() says why
  kErrRejected,        // the handshake was answered with a status other than 0 (v2::Client::last_status())
  kErrProtocol         // an answer or acknowledgement failed its checks (CRC, magic, a sequence never sent)
};

inline const char* error_name(Error error);

// The two connections, one per wire format.
enum Link { kBinaryLink = 0, kJsonLink = 1 };

// Reported to ClientOptions::on_event, from inside the Client's calls.
enum EventKind {
  kEventConnecting,     // an attempt started (address: which one)
  kEventConnected,      // the handshake finished
  kEventConnectFailed,  // error/sys_errno: why; the next attempt follows the backoff
  kEventDisconnected    // a connection ended: kErrPeerClosed, kErrIo, kErrStalled, or kOk (close())
};

struct Address {
  struct sockaddr_storage storage;
  socklen_t length;
};

struct Event {
  Link link;
  EventKind kind;
  Error error;
  int sys_errno;
  const Address* address;  // the address attempted (kEventConnecting, kEventConnected), else 0
};

typedef void (*EventCallback)(void* context, const Event& event);

struct ClientOptions;

// The seam between the Client and the network: name lookup and one non-blocking stream per
// descriptor. PosixTransport (below) is the default; a TLS transport, or a test's fault injection,
// implements the same calls. Each returns as its POSIX counterpart does (-1 and errno on failure).
class Transport {
 public:
  virtual ~Transport() {}
  // Fills out[0, max) with the host's addresses (port left 0); returns how many, or -1. Called
  // only for a host name: a numeric host is parsed once in init().
  virtual int resolve(const char* host, Address* out, int max) = 0;
  // Opens a non-blocking stream socket and starts connecting. Returns the descriptor, with
  // in_progress set when the handshake finishes later (the descriptor turns writable), or -1.
  virtual int connect(const Address& to, const ClientOptions& options, bool& in_progress) = 0;
  // After the descriptor turned writable: 0 when connected, else the errno of the failure.
  virtual int connect_result(int fd) = 0;
  virtual long send(int fd, const uint8_t* data, std::size_t length) = 0;
  virtual long recv(int fd, uint8_t* buffer, std::size_t length) = 0;
  virtual void shutdown_write(int fd) = 0;
  virtual void close(int fd) = 0;
};

// Monotonic milliseconds. The default reads std::chrono::steady_clock; a test may step its own.
class Clock {
 public:
  virtual ~Clock() {}
  virtual int64_t now_ms() = 0;
};

struct ClientOptions {
  // Collector address: a numeric IPv4/IPv6 address (never touches the resolver) or a host name,
  // resolved once, at the first connection attempt, for both links, and again only after every
  // address it gave has failed in a row. getaddrinfo() blocks while it works: give a numeric
  // address where that matters.
  std::string host;
  int binary_port;  // frames; 0 disables the link
  int json_port;    // JSON messages; 0 disables the link
  std::size_t frame_capacity;        // readings kept while the collector is unreachable (x 16 bytes)
  std::size_t message_buffer_bytes;  // bytes of JSON messages kept likewise (>= kMaxMessageBytes)
  // Cells per array a CellReading may carry, 0-kMaxCells; 0 (the default) sends none. init() sizes
  // for it: storage_bytes() grows by max_cell_message_bytes(max_cells) (the encoding buffer), and
  // message_buffer_bytes must hold one such message.
  std::size_t max_cells;
  int connect_timeout_ms;
  // Delay before reconnecting: starts at backoff_initial_ms, doubles after each failure up to
  // backoff_max_ms, with jitter (a random point in [delay/2, delay]) so a fleet of devices does not
  // reconnect in lockstep after the collector restarts. Resets after a connection stayed up for
  // stable_connection_ms, so a server that accepts and closes at once is not hammered.
  int backoff_initial_ms;
  int backoff_max_ms;
  int stable_connection_ms;
  // A connection with bytes waiting that accepts none for this long is abandoned and reopened
  // (a stalled or vanished collector); 0 disables.
  int stall_timeout_ms;
  // TCP keepalive, so an idle connection to a vanished host is noticed; 0 disables. Interval and
  // count apply where the system lets a socket set them (TCP_KEEPINTVL, TCP_KEEPCNT).
  int keepalive_idle_s;
  int keepalive_interval_s;
  int keepalive_count;
  // Writes coalesce: queued bytes go out when at least write_batch_bytes wait, or when the oldest
  // has waited max_write_delay_ms (0: at the next poll/process), or in flush()/close(). Fewer,
  // larger send() calls matter where each is a message to the network stack (QNX io-pkt).
  std::size_t write_batch_bytes;
  int max_write_delay_ms;
  // SO_SNDBUF for both sockets; 0 keeps the system default. Bytes in the kernel's send buffer count
  // as sent and are lost if the connection breaks, while the rings survive it: a small buffer
  // keeps more of a backlog in the rings.
  int socket_send_buffer;
  Transport* transport;   // 0: PosixTransport. Not owned; must outlive the Client.
  Clock* clock;           // 0: steady_clock. Not owned.
  EventCallback on_event; // 0: none. Called with event_context from inside the Client's calls.
  void* event_context;

  ClientOptions()
      : host("127.0.0.1"), binary_port(kDefaultBinaryPort), json_port(kDefaultJsonPort), frame_capacity(1024),
        message_buffer_bytes(32 * 1024), max_cells(0), connect_timeout_ms(2000), backoff_initial_ms(100), backoff_max_ms(5000),
        stable_connection_ms(1000), stall_timeout_ms(20000), keepalive_idle_s(30), keepalive_interval_s(10), keepalive_count(3),
        write_batch_bytes(1024), max_write_delay_ms(20), socket_send_buffer(0), transport(0), clock(0), on_event(0), event_context(0) {}
};

struct Stats {
  uint64_t frames_sent;       // written completely to the binary socket
  uint64_t frames_dropped;    // discarded because the ring was full (the oldest not yet started)
  uint64_t messages_sent;     // performance records, predictions and cell readings alike
  uint64_t messages_dropped;
  uint64_t refused;           // not queued: invalid input (kErrRefused, kErrTooManyCells) or a disabled link
  uint64_t resent;            // partly written frames/messages sent again whole after a reconnect
  uint64_t reconnects;        // connections established after the first, both links
  uint64_t connect_failures;  // attempts refused, timed out or unresolvable
  uint64_t stalls;            // connections abandoned by stall_timeout_ms
  uint64_t writes;            // send() calls that wrote bytes
};

namespace detail {
class Engine;
}

// The client: two links, their rings and timers. Not thread-safe: use it from one thread.
// Use the Client typedef. BasicClient only forwards to detail::Engine; it is a template so that
// this public part can come before the internals it holds by value (a class needs its members'
// types complete where it is defined, a template only where it is used).
template <class Engine>
class BasicClient {
 public:
  BasicClient() {}

  // Checks every option. Returns kOk, or kErrInvalidOptions with *problem naming the option.
  static Error validate(const ClientOptions& options, const char** problem = 0) { return Engine::validate(options, problem); }
  // Bytes of ring storage the options need; 0 if they are invalid.
  static std::size_t storage_bytes(const ClientOptions& options) { return Engine::storage_bytes(options); }
  // Validates, then takes the rings (and, with max_cells, the buffer cell readings are encoded in)
  // from `storage` (caller-owned, storage_bytes(options) long, must outlive the Client), or
  // allocates them once when storage is 0. Nothing allocates after this except getaddrinfo() for
  // a host name. Never aborts; call it once.
  Error init(const ClientOptions& options, void* storage = 0, std::size_t storage_size = 0) { return e_.init(options, storage, storage_size); }

  // Queue; never write and never block. A full ring is no error: its oldest entry is dropped.
  Error send_reading(const Reading& reading) { return e_.send_reading(reading); }
  Error send_performance(const PerformanceRecord& record) { return e_.send_performance(record); }
  Error send_prediction(const Prediction& prediction) { return e_.send_prediction(prediction); }
  // On the JSON port, with the same promise as the other messages. kErrTooManyCells beyond max_cells.
  Error send_cell_reading(const CellReading& reading) { return e_.send_cell_reading(reading); }

  // Event-loop integration (as mosquitto's socket/want_write/loop_misc, or libcurl multi's socket
  // and timer callbacks): wait on descriptors() (fd and POLLIN/POLLOUT; at most 2, only while a
  // connection is open or opening) or until next_timeout_ms() (-1: no timer), then call
  // process() with what happened (revents; count 0 after a timeout). Ask again after every call:
  // the set changes only inside the Client's calls (on_event reports each change).
  int descriptors(struct pollfd* out, int max) const { return e_.descriptors(out, max); }
  int64_t next_timeout_ms() const { return e_.next_timeout_ms(); }
  void process(const struct pollfd* fds, int count) { e_.process(fds, count); }
  // The same with the library's own ::poll, waiting at most timeout_ms. poll(0) never waits.
  Error poll(int timeout_ms) { return e_.poll(timeout_ms); }

  // Polls until everything queued is written (kOk) or timeout_ms passed (kErrTimeout), ignoring
  // the write coalescing.
  Error flush(int timeout_ms) { return e_.flush(timeout_ms); }
  // Flushes, half-closes each open connection and waits for the collector to end its side.
  // kOk: everything written and confirmed by an orderly end of stream; kErrTimeout: not all
  // written; kErrNotConfirmed: a reset, an error, or no end within timeout_ms. Blocks up to
  // timeout_ms. The Client stays usable: a later send reconnects.
  Error close(int timeout_ms) { return e_.close(timeout_ms); }

  Stats stats() const { return e_.stats(); }
  // The last failure on a link (why an attempt failed or a connection ended, kOk if none yet) and
  // its errno: what to log when flush() or close() did not succeed.
  Error last_error() const { return e_.last_error(); }
  int last_errno() const { return e_.last_errno(); }
  std::size_t pending_frames() const { return e_.pending_frames(); }
  std::size_t pending_messages() const { return e_.pending_messages(); }
  bool connected(Link link) const { return e_.connected(link); }
  int socket(Link link) const { return e_.socket(link); }  // -1 when not open

 private:
  BasicClient(const BasicClient&);             // not copyable: the links point into the rings
  BasicClient& operator=(const BasicClient&);  // (declared, never defined: C++03 style for old toolchains)
  Engine e_;
};

typedef BasicClient<detail::Engine> Client;

// =============================================================================================
// Internals
// =============================================================================================

namespace detail {

// Finiteness from the exponent bits: std::isfinite folds to true under -ffinite-math-only
// (-ffast-math, -Ofast), which would let a NaN through; integer bits cannot be folded away.
inline bool is_finite(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return ((bits >> 23) & 0xFFu) != 0xFFu;
}

inline bool is_finite(double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return ((bits >> 52) & 0x7FFu) != 0x7FFu;
}

// Byte order is written out with shifts, so the result is little-endian whatever the host's byte
// order (QNX also runs on big-endian targets). memcpy is the defined way to get a float's bits.
inline void put_f32_le(float value, uint8_t* out) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  out[0] = static_cast<uint8_t>(bits);
  out[1] = static_cast<uint8_t>(bits >> 8);
  out[2] = static_cast<uint8_t>(bits >> 16);
  out[3] = static_cast<uint8_t>(bits >> 24);
}

inline float get_f32_le(const uint8_t* in) {
  const uint32_t bits = static_cast<uint32_t>(in[0]) | (static_cast<uint32_t>(in[1]) << 8) | (static_cast<uint32_t>(in[2]) << 16) |
                        (static_cast<uint32_t>(in[3]) << 24);
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// Length as the server counts it (JavaScript: UTF-16 code units) for UTF-8 input: one unit per
// code point, two for code points outside the BMP (4-byte sequences).
inline std::size_t utf16_length(const char* s) {
  std::size_t units = 0;
  for (; *s; ++s) {
    const unsigned char c = static_cast<unsigned char>(*s);
    if ((c & 0xC0) != 0x80) units += (c >= 0xF0) ? 2 : 1;
  }
  return units;
}

// Builds one newline-terminated JSON object in a fixed buffer, remembering whether any field was
// invalid or the buffer ran out, so the encoders refuse the whole message at the end. Output over
// `limit` bytes is refused too: the rings are sized by that bound.
class JsonWriter {
 public:
  JsonWriter(char* out, std::size_t capacity, std::size_t limit = kMaxMessageBytes)
      : out_(out), cap_(capacity), limit_(limit), len_(0), ok_(true), first_(true) {
    put_('{');
  }

  void number(const char* key, double value) {
    if (!is_finite(value)) {
      ok_ = false;
      return;
    }
    key_(key);
    value_(value);
  }

  // An array of numbers; count 0 leaves the field out. All are checked before any is written.
  void numbers(const char* key, const double* values, std::size_t count) {
    if (count == 0) return;
    if (values == 0) {
      ok_ = false;
      return;
    }
    for (std::size_t i = 0; i < count; ++i) {
      if (!is_finite(values[i])) {
        ok_ = false;
        return;
      }
    }
    key_(key);
    put_('[');
    for (std::size_t i = 0; i < count; ++i) {
      if (i > 0) put_(',');
      value_(values[i]);
    }
    put_(']');
  }

  void integer(const char* key, unsigned long value) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "%lu", value);
    key_(key);
    raw_(buf);
  }

  void battery_id(const char* id) {
    if (id == 0 || *id == 0) return;
    if (!is_valid_battery_id(id)) {
      ok_ = false;
      return;
    }
    key_("battery_id");
    string_(id);
  }

  void source(const char* source) {
    if (source == 0 || *source == 0) return;
    if (utf16_length(source) > kMaxSourceLength) {
      ok_ = false;
      return;
    }
    key_("source");
    string_(source);
  }

  std::size_t finish() {
    put_('}');
    put_('\n');
    return ok_ && len_ <= limit_ ? len_ : 0;
  }

 private:
  // A finite number: the shortest of %.15g/%.16g/%.17g that reads back as the same double. It
  // always round-trips (%.17g is the fallback), but 92.3 stays "92.3" rather than
  // "92.299999999999997". The bits are compared, not the values: with -ffast-math, denormals
  // compare equal to zero.
  void value_(double value) {
    char buf[40];
    for (int precision = 15; precision <= 17; ++precision) {
      std::snprintf(buf, sizeof buf, "%.*g", precision, value);
      const double back = std::strtod(buf, 0);
      if (precision == 17 || std::memcmp(&back, &value, sizeof back) == 0) break;
    }
    // snprintf and strtod follow the C locale's decimal point; a device that called setlocale()
    // could get "87,5". For a finite %g the only characters besides digits, sign and exponent are
    // the decimal point, so map that run to '.', whatever the locale uses.
    bool in_point = false;
    for (const char* p = buf; *p; ++p) {
      const char c = *p;
      if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == 'e' || c == 'E') {
        put_(c);
        in_point = false;
      } else if (!in_point) {
        put_('.');
        in_point = true;
      }
    }
  }

  void put_(char c) {
    if (len_ < cap_) {
      out_[len_++] = c;
    } else {
      ok_ = false;
    }
  }

  void raw_(const char* s) {
    for (; *s; ++s) put_(*s);
  }

  void key_(const char* key) {
    if (!first_) put_(',');
    first_ = false;
    put_('"');
    raw_(key);  // keys are our own literals: nothing to escape
    put_('"');
    put_(':');
  }

  // JSON string escaping. Bytes >= 0x80 pass through: strings are expected to be UTF-8.
  void string_(const char* s) {
    put_('"');
    for (; *s; ++s) {
      const unsigned char c = static_cast<unsigned char>(*s);
      switch (c) {
        case '"': raw_("\\\""); break;
        case '\\': raw_("\\\\"); break;
        case '\b': raw_("\\b"); break;
        case '\f': raw_("\\f"); break;
        case '\n': raw_("\\n"); break;
        case '\r': raw_("\\r"); break;
        case '\t': raw_("\\t"); break;
        default:
          if (c < 0x20) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
            raw_(buf);
          } else {
            put_(static_cast<char>(c));
          }
      }
    }
    put_('"');
  }

  char* out_;
  std::size_t cap_;
  std::size_t limit_;
  std::size_t len_;
  bool ok_;
  bool first_;
};

// A bounded queue of byte items in one contiguous ring, so peek() hands send() many items at once
// (one call, full segments) without copying. Items are either fixed-size (frames) or end at '\n'
// (JSON lines, which hold no raw newline), so the ring needs no index beside the bytes.
//
// The head item is "pinned" once some of its bytes are on the wire: dropping it then would leave
// the receiver with half an item and misalign everything after it. So overflow drops the oldest
// item not yet started, and a lost connection restarts the pinned item from its first byte (the
// collector discards a partial item at disconnect, so sending it whole again is right).
class ByteRing {
 public:
  ByteRing() : buf_(0), cap_(0), item_bytes_(0), head_(0), used_(0), offset_(0), items_(0), sent_(0), dropped_(0), resent_(0) {}

  // item_bytes: the fixed item size, or 0 for newline-terminated items.
  void attach(uint8_t* buffer, std::size_t capacity, std::size_t item_bytes) {
    buf_ = buffer;
    cap_ = capacity;
    item_bytes_ = item_bytes;
  }

  // Appends one item (length <= capacity(), checked by the caller). Makes room by dropping the
  // oldest item not yet started; when only the pinned head is left and there is still no room,
  // the new item is the one dropped. Returns false if anything was dropped.
  bool push(const uint8_t* item, std::size_t length) {
    bool kept_all = true;
    while (cap_ - used_ < length) {
      kept_all = false;
      ++dropped_;
      if (offset_ == 0) {
        pop_head_();
      } else if (items_ == 1) {
        return false;
      } else {
        // Drop the second-oldest: move the pinned head's bytes forward over it.
        const std::size_t first = item_length_(head_);
        const std::size_t second = item_length_((head_ + first) % cap_);
        for (std::size_t i = first; i-- > 0;) buf_[(head_ + second + i) % cap_] = buf_[(head_ + i) % cap_];
        head_ = (head_ + second) % cap_;
        used_ -= second;
        --items_;
      }
    }
    const std::size_t tail = (head_ + used_) % cap_;
    const std::size_t part = length < cap_ - tail ? length : cap_ - tail;
    std::memcpy(buf_ + tail, item, part);
    std::memcpy(buf_, item + part, length - part);
    used_ += length;
    ++items_;
    return kept_all;
  }

  // The next contiguous unsent bytes; length 0 when there is nothing to send.
  const uint8_t* peek(std::size_t& length) const {
    const std::size_t pending = used_ - offset_;
    if (pending == 0) {
      length = 0;
      return 0;
    }
    const std::size_t start = (head_ + offset_) % cap_;
    length = pending < cap_ - start ? pending : cap_ - start;
    return buf_ + start;
  }

  // `n` bytes of what peek() returned were written.
  void consume(std::size_t n) {
    offset_ += n;
    while (items_ > 0) {
      const std::size_t length = item_length_(head_);
      if (offset_ < length) break;
      offset_ -= length;
      pop_head_();
      ++sent_;
    }
  }

  // The connection was lost: a partly written head item goes again from its first byte.
  void restart() {
    if (offset_ != 0) {
      offset_ = 0;
      ++resent_;
    }
  }

  std::size_t size() const { return items_; }
  bool empty() const { return items_ == 0; }
  std::size_t pending_bytes() const { return used_ - offset_; }
  std::size_t capacity() const { return cap_; }
  bool pinned() const { return offset_ != 0; }
  uint64_t sent() const { return sent_; }
  uint64_t dropped() const { return dropped_; }
  uint64_t resent() const { return resent_; }

 private:
  std::size_t item_length_(std::size_t start) const {
    if (item_bytes_ != 0) return item_bytes_;
    for (std::size_t i = 0; i < used_; ++i) {
      if (buf_[(start + i) % cap_] == '\n') return i + 1;
    }
    return used_;  // not reached: every pushed message ends in '\n'
  }

  void pop_head_() {
    const std::size_t length = item_length_(head_);
    head_ = (head_ + length) % cap_;
    used_ -= length;
    --items_;
  }

  uint8_t* buf_;
  std::size_t cap_;
  std::size_t item_bytes_;
  std::size_t head_;    // first byte of the oldest item
  std::size_t used_;    // bytes of all items
  std::size_t offset_;  // bytes of the head item already written on this connection
  std::size_t items_;
  uint64_t sent_;     // items completely written to a socket
  uint64_t dropped_;  // items discarded because the ring was full
  uint64_t resent_;   // partly written items restarted after a lost connection
};

// Sockets as POSIX offers them. Every descriptor is non-blocking, so neither connect() nor send()
// can stall the device loop.
class PosixTransport : public Transport {
 public:
  int resolve(const char* host, Address* out, int max) {
    if (max < 1) {
      errno = EINVAL;
      return -1;
    }
    // A numeric address needs no resolver (and no allocation).
    std::memset(&out[0], 0, sizeof out[0]);
    struct sockaddr_in* v4 = reinterpret_cast<struct sockaddr_in*>(&out[0].storage);
    if (::inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
      v4->sin_family = AF_INET;
      out[0].length = sizeof(struct sockaddr_in);
      return 1;
    }
    struct sockaddr_in6* v6 = reinterpret_cast<struct sockaddr_in6*>(&out[0].storage);
    if (::inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
      v6->sin6_family = AF_INET6;
      out[0].length = sizeof(struct sockaddr_in6);
      return 1;
    }
    struct addrinfo hints;
    std::memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    struct addrinfo* found = 0;
    const int rc = ::getaddrinfo(host, 0, &hints, &found);
    if (rc != 0) {
      if (rc != EAI_SYSTEM) errno = ENOENT;
      return -1;
    }
    int count = 0;
    for (struct addrinfo* a = found; a && count < max; a = a->ai_next) {
      if (a->ai_addrlen > sizeof out[count].storage) continue;
      std::memset(&out[count], 0, sizeof out[count]);
      std::memcpy(&out[count].storage, a->ai_addr, a->ai_addrlen);
      out[count].length = static_cast<socklen_t>(a->ai_addrlen);
      ++count;
    }
    ::freeaddrinfo(found);
    if (count == 0) errno = ENOENT;
    return count > 0 ? count : -1;
  }

  int connect(const Address& to, const ClientOptions& options, bool& in_progress) {
    in_progress = false;
    const int fd = ::socket(to.storage.ss_family, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    configure_(fd, options);
    if (::connect(fd, reinterpret_cast<const struct sockaddr*>(&to.storage), to.length) == 0) return fd;
    const int err = errno;
    // POSIX: an interrupted connect carries on asynchronously, like EINPROGRESS.
    if (err == EINPROGRESS || err == EINTR) {
      in_progress = true;
      return fd;
    }
    ::close(fd);
    errno = err;
    return -1;
  }

  int connect_result(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    return err;
  }

  long send(int fd, const uint8_t* data, std::size_t length) {
#ifdef MSG_NOSIGNAL
    const int flags = MSG_NOSIGNAL;  // a closed peer must give EPIPE, not kill the process
#else
    const int flags = 0;
#endif
    return static_cast<long>(::send(fd, data, length, flags));
  }

  long recv(int fd, uint8_t* buffer, std::size_t length) { return static_cast<long>(::recv(fd, buffer, length, 0)); }
  void shutdown_write(int fd) { ::shutdown(fd, SHUT_WR); }
  void close(int fd) { ::close(fd); }

 private:
  static void configure_(int fd, const ClientOptions& options) {
    const int flags = ::fcntl(fd, F_GETFL, 0);
    if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    int one = 1;
    // The Client coalesces writes itself; what it hands over should go now, not wait for an ACK.
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (options.socket_send_buffer > 0) {
      ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &options.socket_send_buffer, sizeof options.socket_send_buffer);
    }
#if !defined(MSG_NOSIGNAL) && defined(SO_NOSIGPIPE)
    // BSD-style systems without MSG_NOSIGNAL: suppress SIGPIPE per socket instead.
    ::setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
    if (options.keepalive_idle_s > 0) {
      ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
#if defined(TCP_KEEPIDLE)
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &options.keepalive_idle_s, sizeof options.keepalive_idle_s);
#elif defined(TCP_KEEPALIVE)
      // The same option under its BSD/Darwin name.
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPALIVE, &options.keepalive_idle_s, sizeof options.keepalive_idle_s);
#endif
#ifdef TCP_KEEPINTVL
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &options.keepalive_interval_s, sizeof options.keepalive_interval_s);
#endif
#ifdef TCP_KEEPCNT
      ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &options.keepalive_count, sizeof options.keepalive_count);
#endif
    }
  }
};

class SteadyClock : public Clock {
 public:
  int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
  }
};

inline void set_port(Address& address, int port) {
  if (address.storage.ss_family == AF_INET6) {
    reinterpret_cast<struct sockaddr_in6*>(&address.storage)->sin6_port = htons(static_cast<uint16_t>(port));
  } else {
    reinterpret_cast<struct sockaddr_in*>(&address.storage)->sin_port = htons(static_cast<uint16_t>(port));
  }
}

// One TCP connection to one port, with its reconnect state and the ring it writes from.
struct LinkState {
  enum Phase { kIdle, kConnecting, kConnected };

  LinkState()
      : port(0), fd(-1), phase(kIdle), next_attempt_ms(0), deadline_ms(0), connected_at_ms(0), pending_since_ms(0), progress_ms(0),
        blocked(false), backoff_ms(0), addr_index(0), failures_in_row(0), ever_connected(false), reconnects(0), connect_failures(0),
        stalls(0) {}

  int port;
  ByteRing ring;
  int fd;
  Phase phase;
  int64_t next_attempt_ms;
  int64_t deadline_ms;       // of the handshake in progress
  int64_t connected_at_ms;
  int64_t pending_since_ms;  // when the ring last turned non-empty: the write-delay bound counts from here
  int64_t progress_ms;       // while blocked: when the socket last accepted bytes (or blocking began)
  bool blocked;              // the last send() could not take everything: wait for POLLOUT
  int backoff_ms;
  int addr_index;
  int failures_in_row;
  bool ever_connected;
  uint64_t reconnects;
  uint64_t connect_failures;
  uint64_t stalls;
};

class Engine {
 public:
  Engine()
      : initialized_(false), owned_(0), transport_(0), clock_(0), addr_count_(0), numeric_host_(false), need_resolve_(true), flushing_(false),
        rng_(1), cell_scratch_(scratch_), cell_scratch_bytes_(sizeof scratch_), refused_(0), writes_(0), last_error_(kOk), last_errno_(0) {
    host_[0] = 0;
  }

  ~Engine() {
    for (int i = 0; i < 2; ++i) close_fd_(links_[i]);
    delete[] owned_;
  }

  static Error validate(const ClientOptions& o, const char** problem) {
    const char* bad = 0;
    const std::size_t max_bytes = std::numeric_limits<std::size_t>::max() / 4;  // sums and indices stay far from wrapping
    if (o.host.empty() || o.host.size() > kMaxHostLength || o.host.find('\0') != std::string::npos) {
      bad = "host: 1-255 characters";
    } else if (o.binary_port < 0 || o.binary_port > 65535 || o.json_port < 0 || o.json_port > 65535) {
      bad = "binary_port, json_port: 0-65535";
    } else if (o.binary_port == 0 && o.json_port == 0) {
      bad = "binary_port, json_port: at least one not 0";
    } else if (o.binary_port != 0 && (o.frame_capacity < 1 || o.frame_capacity > max_bytes / kFrameBytes)) {
      bad = "frame_capacity: at least 1, and its bytes must fit in memory";
    } else if (o.json_port != 0 && (o.message_buffer_bytes < kMaxMessageBytes || o.message_buffer_bytes > max_bytes)) {
      bad = "message_buffer_bytes: at least kMaxMessageBytes (2048)";
    } else if (o.max_cells > kMaxCells) {
      bad = "max_cells: 0-1024 (kMaxCells)";
    } else if (o.json_port != 0 && o.max_cells > 0 && o.message_buffer_bytes < max_cell_message_bytes(o.max_cells)) {
      // A ring that cannot hold the longest cell message would have to drop it whole.
      bad = "message_buffer_bytes: at least max_cell_message_bytes(max_cells) (53312 for 1024 cells)";
    } else if (o.connect_timeout_ms < 1 || o.connect_timeout_ms > 3600000) {
      bad = "connect_timeout_ms: 1-3600000";
    } else if (o.backoff_initial_ms < 1 || o.backoff_max_ms < o.backoff_initial_ms || o.backoff_max_ms > 3600000) {
      bad = "backoff_initial_ms, backoff_max_ms: 1 <= initial <= max <= 3600000";
    } else if (o.stable_connection_ms < 0 || o.stall_timeout_ms < 0 || o.max_write_delay_ms < 0) {
      bad = "stable_connection_ms, stall_timeout_ms, max_write_delay_ms: not negative";
    } else if (o.keepalive_idle_s < 0 || (o.keepalive_idle_s > 0 && (o.keepalive_interval_s < 1 || o.keepalive_count < 1))) {
      bad = "keepalive_idle_s: not negative; keepalive_interval_s, keepalive_count: at least 1";
    } else if (o.socket_send_buffer < 0) {
      bad = "socket_send_buffer: not negative";
    }
    if (problem) *problem = bad;
    return bad ? kErrInvalidOptions : kOk;
  }

  static std::size_t storage_bytes(const ClientOptions& o) {
    if (validate(o, 0) != kOk) return 0;
    return (o.binary_port ? o.frame_capacity * kFrameBytes : 0) + (o.json_port ? o.message_buffer_bytes + cell_buffer_bytes_(o) : 0);
  }

  Error init(const ClientOptions& options, void* storage, std::size_t storage_size) {
    if (initialized_) return fail_(kErrInvalidOptions, 0);
    if (validate(options, 0) != kOk) return fail_(kErrInvalidOptions, EINVAL);
    const std::size_t need = storage_bytes(options);
    uint8_t* bytes = static_cast<uint8_t*>(storage);
    if (bytes == 0) {
      owned_ = new (std::nothrow) uint8_t[need];
      if (owned_ == 0) return fail_(kErrNoMemory, ENOMEM);
      bytes = owned_;
    } else if (storage_size < need) {
      return fail_(kErrNoMemory, ENOMEM);
    }
    options_ = options;
    std::memcpy(host_, options.host.c_str(), options.host.size() + 1);
    transport_ = options.transport ? options.transport : &posix_;
    clock_ = options.clock ? options.clock : &steady_;
    // Jitter only needs devices to differ from each other: clock ticks are enough.
    const uint64_t ticks = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    rng_.seed(static_cast<std::minstd_rand::result_type>((ticks ^ (ticks >> 32)) % 2147483646u + 1u));
    links_[kBinaryLink].port = options.binary_port;
    links_[kJsonLink].port = options.json_port;
    std::size_t frame_bytes = options.binary_port ? options.frame_capacity * kFrameBytes : 0;
    links_[kBinaryLink].ring.attach(bytes, frame_bytes, kFrameBytes);
    const std::size_t message_bytes = options.json_port ? options.message_buffer_bytes : 0;
    links_[kJsonLink].ring.attach(bytes + frame_bytes, message_bytes, 0);
    // Cell readings are encoded in the storage too, not in the Client: up to 52 KiB that a device
    // sending no cells should not carry. Without cells, the 2 KiB scratch serves.
    cell_scratch_ = scratch_;
    cell_scratch_bytes_ = sizeof scratch_;
    if (cell_buffer_bytes_(options) > 0) {
      cell_scratch_ = reinterpret_cast<char*>(bytes + frame_bytes + message_bytes);
      cell_scratch_bytes_ = cell_buffer_bytes_(options);
    }
    const int64_t now = clock_->now_ms();
    for (int i = 0; i < 2; ++i) {
      links_[i].backoff_ms = options.backoff_initial_ms;
      links_[i].next_attempt_ms = now;
    }
    // A numeric host is resolved here, without the resolver; a name at the first attempt.
    Address probe[1];
    struct in6_addr scratch;
    numeric_host_ = ::inet_pton(AF_INET, host_, &scratch) == 1 || ::inet_pton(AF_INET6, host_, &scratch) == 1;
    if (numeric_host_ && posix_.resolve(host_, probe, 1) == 1) {
      addrs_[0] = probe[0];
      addr_count_ = 1;
      need_resolve_ = false;
    }
    initialized_ = true;
    return kOk;
  }

  Error send_reading(const Reading& reading) {
    if (!initialized_) return kErrNotInitialized;
    LinkState& link = links_[kBinaryLink];
    if (link.port == 0) return refuse_(kErrLinkDisabled);
    uint8_t frame[kFrameBytes];
    if (!encode_frame(reading, frame)) return refuse_(kErrRefused);
    queue_(link, frame, kFrameBytes);
    return kOk;
  }

  Error send_performance(const PerformanceRecord& record) {
    if (!initialized_) return kErrNotInitialized;
    if (links_[kJsonLink].port == 0) return refuse_(kErrLinkDisabled);
    return queue_message_(scratch_, encode_performance(record, scratch_, sizeof scratch_));
  }

  Error send_prediction(const Prediction& prediction) {
    if (!initialized_) return kErrNotInitialized;
    if (links_[kJsonLink].port == 0) return refuse_(kErrLinkDisabled);
    return queue_message_(scratch_, encode_prediction(prediction, scratch_, sizeof scratch_));
  }

  Error send_cell_reading(const CellReading& reading) {
    if (!initialized_) return kErrNotInitialized;
    if (links_[kJsonLink].port == 0) return refuse_(kErrLinkDisabled);
    if (reading.cell_voltage_count > options_.max_cells || reading.cell_temp_count > options_.max_cells) return refuse_(kErrTooManyCells);
    return queue_message_(cell_scratch_, encode_cell_reading(reading, cell_scratch_, cell_scratch_bytes_));
  }

  int descriptors(struct pollfd* out, int max) const {
    int n = 0;
    if (!initialized_) return 0;
    for (int i = 0; i < 2 && n < max; ++i) {
      const LinkState& link = links_[i];
      if (link.fd < 0) continue;
      short events = 0;
      if (link.phase == LinkState::kConnecting) {
        events = POLLOUT;
      } else {
        // POLLIN although the collector never sends: readability means it closed the connection,
        // and learning that before writing keeps readings in the ring instead of a dead socket.
        events = POLLIN;
        if (link.blocked) events = static_cast<short>(events | POLLOUT);
      }
      out[n].fd = link.fd;
      out[n].events = events;
      out[n].revents = 0;
      ++n;
    }
    return n;
  }

  int64_t next_timeout_ms() const {
    if (!initialized_) return -1;
    const int64_t now = clock_->now_ms();
    int64_t wait = -1;
    for (int i = 0; i < 2; ++i) {
      const LinkState& link = links_[i];
      if (link.phase == LinkState::kConnecting) {
        lower_(wait, link.deadline_ms - now);
      } else if (link.ring.empty()) {
        continue;
      } else if (link.phase == LinkState::kIdle) {
        lower_(wait, link.next_attempt_ms - now);
      } else if (link.blocked) {
        if (options_.stall_timeout_ms > 0) lower_(wait, link.progress_ms + options_.stall_timeout_ms - now);
      } else if (write_due_(link, now)) {
        lower_(wait, 0);
      } else {
        lower_(wait, link.pending_since_ms + options_.max_write_delay_ms - now);
      }
    }
    return wait;
  }

  void process(const struct pollfd* fds, int count) {
    if (!initialized_) return;
    int64_t now = clock_->now_ms();
    for (int k = 0; k < count; ++k) {
      if (fds[k].revents == 0) continue;
      for (int i = 0; i < 2; ++i) {
        if (links_[i].fd >= 0 && links_[i].fd == fds[k].fd) handle_io_(links_[i], fds[k].revents, now);
      }
    }
    for (int i = 0; i < 2; ++i) {
      LinkState& link = links_[i];
      now = clock_->now_ms();
      if (link.phase == LinkState::kConnecting && now >= link.deadline_ms) {
        fail_attempt_(link, now, kErrConnectTimeout, ETIMEDOUT);
      } else if (link.phase == LinkState::kConnected && link.blocked && options_.stall_timeout_ms > 0 &&
                 now - link.progress_ms >= options_.stall_timeout_ms) {
        ++link.stalls;
        lost_(link, now, kErrStalled, ETIMEDOUT);
      }
      if (link.phase == LinkState::kIdle && !link.ring.empty() && now >= link.next_attempt_ms) start_connect_(link);
      now = clock_->now_ms();
      if (link.phase == LinkState::kConnected && !link.blocked && write_due_(link, now)) write_(link, now);
    }
  }

  Error poll(int timeout_ms) {
    if (!initialized_) return kErrNotInitialized;
    process(0, 0);
    struct pollfd fds[2];
    const int n = descriptors(fds, 2);
    int64_t wait = next_timeout_ms();
    const int64_t limit = timeout_ms < 0 ? 0 : timeout_ms;
    if (wait < 0 || wait > limit) wait = limit;
    if (n == 0 && wait == 0) return kOk;
    const int rc = ::poll(fds, static_cast<nfds_t>(n), static_cast<int>(wait));
    // EINTR (a signal arrived) is no error: the caller's loop simply comes round again.
    if (rc < 0 && errno != EINTR) return fail_(kErrIo, errno);
    process(fds, rc > 0 ? n : 0);
    return kOk;
  }

  Error flush(int timeout_ms) {
    if (!initialized_) return kErrNotInitialized;
    const int64_t deadline = clock_->now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    flushing_ = true;
    Error result = kOk;
    for (;;) {
      if (links_[0].ring.empty() && links_[1].ring.empty()) break;
      const int64_t left = deadline - clock_->now_ms();
      if (left <= 0) {
        result = kErrTimeout;  // last_error() keeps saying why: the link's own failure
        break;
      }
      poll(static_cast<int>(left));
    }
    flushing_ = false;
    return result;
  }

  Error close(int timeout_ms) {
    if (!initialized_) return kErrNotInitialized;
    const int64_t deadline = clock_->now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    const Error flushed = flush(timeout_ms);
    bool confirmed = true;
    for (int i = 0; i < 2; ++i) {
      LinkState& link = links_[i];
      if (link.phase == LinkState::kConnected && !shutdown_and_wait_(link, deadline)) confirmed = false;
      if (link.fd >= 0) disconnect_(link, kOk, 0);
    }
    if (flushed != kOk) return flushed;
    return confirmed ? kOk : kErrNotConfirmed;
  }

  Stats stats() const {
    Stats s;
    const LinkState& b = links_[kBinaryLink];
    const LinkState& j = links_[kJsonLink];
    s.frames_sent = b.ring.sent();
    s.frames_dropped = b.ring.dropped();
    s.messages_sent = j.ring.sent();
    s.messages_dropped = j.ring.dropped();
    s.refused = refused_;
    s.resent = b.ring.resent() + j.ring.resent();
    s.reconnects = b.reconnects + j.reconnects;
    s.connect_failures = b.connect_failures + j.connect_failures;
    s.stalls = b.stalls + j.stalls;
    s.writes = writes_;
    return s;
  }

  Error last_error() const { return last_error_; }
  int last_errno() const { return last_errno_; }
  std::size_t pending_frames() const { return links_[kBinaryLink].ring.size(); }
  std::size_t pending_messages() const { return links_[kJsonLink].ring.size(); }
  bool connected(Link link) const { return links_[link].phase == LinkState::kConnected; }
  int socket(Link link) const { return links_[link].fd; }

 private:
  static void lower_(int64_t& wait, int64_t candidate) {
    if (candidate < 0) candidate = 0;
    if (wait < 0 || candidate < wait) wait = candidate;
  }

  Error fail_(Error error, int sys_errno) {
    last_error_ = error;
    last_errno_ = sys_errno;
    return error;
  }

  // A refusal is the caller's answer, not a link failure: last_error() is left alone.
  Error refuse_(Error error) {
    ++refused_;
    return error;
  }

  void emit_(const LinkState& link, EventKind kind, Error error, int sys_errno, const Address* address) {
    if (!options_.on_event) return;
    Event e;
    e.link = &link == &links_[kBinaryLink] ? kBinaryLink : kJsonLink;
    e.kind = kind;
    e.error = error;
    e.sys_errno = sys_errno;
    e.address = address;
    options_.on_event(options_.event_context, e);
  }

  void queue_(LinkState& link, const uint8_t* item, std::size_t length) {
    if (link.ring.empty()) {
      // Both timers count from the first byte waiting: an idle hour before it is no stall.
      link.pending_since_ms = clock_->now_ms();
      link.progress_ms = link.pending_since_ms;
    }
    link.ring.push(item, length);
  }

  Error queue_message_(const char* message, std::size_t length) {
    if (length == 0) return refuse_(kErrRefused);
    queue_(links_[kJsonLink], reinterpret_cast<const uint8_t*>(message), length);
    return kOk;
  }

  // The buffer cell readings are encoded in, within the storage; 0 when cells are off.
  static std::size_t cell_buffer_bytes_(const ClientOptions& o) { return o.json_port && o.max_cells ? max_cell_message_bytes(o.max_cells) : 0; }

  // Write now, or let more gather: by size, by the oldest byte's age, or because a flush, a pinned
  // head or a ring more than half full cannot wait.
  bool write_due_(const LinkState& link, int64_t now) const {
    if (link.ring.empty()) return false;
    return flushing_ || link.ring.pinned() || link.ring.pending_bytes() >= options_.write_batch_bytes ||
           link.ring.pending_bytes() * 2 > link.ring.capacity() || now - link.pending_since_ms >= options_.max_write_delay_ms;
  }

  void start_connect_(LinkState& link) {
    if (need_resolve_) {
      const int count = transport_->resolve(host_, addrs_, kMaxAddresses);
      if (count <= 0) {
        fail_attempt_(link, clock_->now_ms(), kErrResolve, errno);
        return;
      }
      addr_count_ = count;
      need_resolve_ = false;
    }
    // The handshake's deadline counts from after the lookup, which may have taken a while.
    const int64_t now = clock_->now_ms();
    Address to = addrs_[link.addr_index % addr_count_];
    set_port(to, link.port);
    bool in_progress = false;
    emit_(link, kEventConnecting, kOk, 0, &to);
    const int fd = transport_->connect(to, options_, in_progress);
    if (fd < 0) {
      fail_attempt_(link, now, kErrConnect, errno);
      return;
    }
    link.fd = fd;
    if (in_progress) {
      link.phase = LinkState::kConnecting;
      link.deadline_ms = now + options_.connect_timeout_ms;
    } else {
      connected_(link, now);
    }
  }

  void handle_io_(LinkState& link, short revents, int64_t now) {
    if (link.phase == LinkState::kConnecting) {
      if (revents & (POLLOUT | POLLERR | POLLHUP | POLLNVAL)) {
        const int err = transport_->connect_result(link.fd);
        if (err == 0) {
          connected_(link, now);
        } else {
          fail_attempt_(link, now, kErrConnect, err);
        }
      }
      return;
    }
    if (link.phase != LinkState::kConnected) return;
    if (revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) {
      int err = 0;
      const int end = drain_(link, err);
      if (end > 0) {
        lost_(link, now, kErrPeerClosed, 0);
        return;
      }
      if (end < 0) {
        lost_(link, now, kErrIo, err);
        return;
      }
    }
    if (revents & POLLOUT) link.blocked = false;
  }

  // Reads and discards what the peer sent. 0: nothing more for now; 1: orderly end of stream;
  // -1: an error (err set).
  int drain_(LinkState& link, int& err) {
    uint8_t scratch[256];
    for (;;) {
      const long n = transport_->recv(link.fd, scratch, sizeof scratch);
      if (n > 0) continue;
      if (n == 0) return 1;
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      err = errno;
      return -1;
    }
  }

  void write_(LinkState& link, int64_t now) {
    for (;;) {
      std::size_t length = 0;
      const uint8_t* data = link.ring.peek(length);
      if (length == 0) {
        link.blocked = false;
        return;
      }
      const long n = transport_->send(link.fd, data, length);
      if (n > 0) {
        // A short write is normal: consume() keeps the offset inside the item, and the next write
        // continues from there, so items are never torn or misaligned.
        link.ring.consume(static_cast<std::size_t>(n));
        link.progress_ms = now;
        ++writes_;
        if (static_cast<std::size_t>(n) < length) {
          // The socket is full: another call now would only say EAGAIN. Wait for POLLOUT.
          link.blocked = true;
          return;
        }
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        link.blocked = true;
        return;
      }
      lost_(link, now, kErrIo, n < 0 ? errno : EPIPE);
      return;
    }
  }

  void connected_(LinkState& link, int64_t now) {
    link.phase = LinkState::kConnected;
    link.connected_at_ms = now;
    link.progress_ms = now;
    link.blocked = false;
    link.failures_in_row = 0;
    if (link.ever_connected) ++link.reconnects;
    link.ever_connected = true;
    Address to = addrs_[link.addr_index % addr_count_];
    set_port(to, link.port);
    emit_(link, kEventConnected, kOk, 0, &to);
  }

  void close_fd_(LinkState& link) {
    if (link.fd >= 0 && transport_) transport_->close(link.fd);
    link.fd = -1;
  }

  // Every way a socket ends goes through here: an item cut off mid-write must start again from its
  // first byte on the next connection, or that connection's stream would begin misaligned.
  void disconnect_(LinkState& link, Error why, int sys_errno) {
    const bool was_connected = link.phase == LinkState::kConnected;
    close_fd_(link);
    link.phase = LinkState::kIdle;
    link.blocked = false;
    link.ring.restart();
    if (was_connected) emit_(link, kEventDisconnected, why, sys_errno, 0);
  }

  void fail_attempt_(LinkState& link, int64_t now, Error why, int sys_errno) {
    close_fd_(link);
    link.phase = LinkState::kIdle;
    link.ring.restart();
    ++link.connect_failures;
    ++link.addr_index;
    // Every address failed in a row: the name may point elsewhere now.
    if (!numeric_host_ && ++link.failures_in_row >= addr_count_) {
      need_resolve_ = true;
      link.failures_in_row = 0;
    }
    fail_(why, sys_errno);
    emit_(link, kEventConnectFailed, why, sys_errno, 0);
    schedule_retry_(link, now);
  }

  void lost_(LinkState& link, int64_t now, Error why, int sys_errno) {
    disconnect_(link, why, sys_errno);
    fail_(why, sys_errno);
    if (now - link.connected_at_ms >= options_.stable_connection_ms) link.backoff_ms = options_.backoff_initial_ms;
    schedule_retry_(link, now);
  }

  // Waits a random time in [backoff/2, backoff], then doubles the backoff up to the maximum.
  void schedule_retry_(LinkState& link, int64_t now) {
    const int64_t half = link.backoff_ms / 2;
    const int64_t jitter = static_cast<int64_t>(rng_() % static_cast<std::minstd_rand::result_type>(half + 1));
    link.next_attempt_ms = now + link.backoff_ms - half + jitter;
    link.backoff_ms = link.backoff_ms > options_.backoff_max_ms / 2 ? options_.backoff_max_ms : link.backoff_ms * 2;
  }

  // Half-closes (the collector sees end of stream once it has read everything) and waits for the
  // collector to end its side. Only an orderly end (recv() == 0) confirms; a reset or other error
  // means it did not read everything.
  bool shutdown_and_wait_(LinkState& link, int64_t deadline) {
    transport_->shutdown_write(link.fd);
    for (;;) {
      const int64_t left = deadline - clock_->now_ms();
      if (left <= 0) return false;
      struct pollfd p;
      p.fd = link.fd;
      p.events = POLLIN;
      p.revents = 0;
      const int rc = ::poll(&p, 1, static_cast<int>(left));
      if (rc < 0 && errno != EINTR) {
        fail_(kErrIo, errno);
        return false;
      }
      if (rc <= 0) continue;
      int err = 0;
      const int end = drain_(link, err);
      if (end > 0) return true;
      if (end < 0) {
        fail_(kErrIo, err);
        return false;
      }
    }
  }

  bool initialized_;
  ClientOptions options_;
  uint8_t* owned_;
  Transport* transport_;
  Clock* clock_;
  PosixTransport posix_;
  SteadyClock steady_;
  char host_[kMaxHostLength + 1];
  Address addrs_[kMaxAddresses];
  int addr_count_;
  bool numeric_host_;
  bool need_resolve_;
  bool flushing_;
  LinkState links_[2];
  std::minstd_rand rng_;
  char scratch_[kMaxMessageBytes];
  char* cell_scratch_;
  std::size_t cell_scratch_bytes_;
  uint64_t refused_;
  uint64_t writes_;
  Error last_error_;
  int last_errno_;
};

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Encoders (declared in the public part)
// ---------------------------------------------------------------------------------------------

inline bool encode_frame(const Reading& reading, uint8_t out[16]) {
  if (!detail::is_finite(reading.device_time) || !detail::is_finite(reading.pack_voltage) || !detail::is_finite(reading.pack_current) ||
      !detail::is_finite(reading.cell_temp)) {
    return false;
  }
  detail::put_f32_le(reading.device_time, out);
  detail::put_f32_le(reading.pack_voltage, out + 4);
  detail::put_f32_le(reading.pack_current, out + 8);
  detail::put_f32_le(reading.cell_temp, out + 12);
  return true;
}

inline bool decode_frame(const uint8_t in[16], Reading& reading) {
  reading.device_time = detail::get_f32_le(in);
  reading.pack_voltage = detail::get_f32_le(in + 4);
  reading.pack_current = detail::get_f32_le(in + 8);
  reading.cell_temp = detail::get_f32_le(in + 12);
  return detail::is_finite(reading.device_time) && detail::is_finite(reading.pack_voltage) && detail::is_finite(reading.pack_current) &&
         detail::is_finite(reading.cell_temp);
}

// Checked on the device because a message the server rejects is lost silently from the device's
// point of view.
inline bool is_valid_battery_id(const char* id) {
  if (id == 0) return false;
  std::size_t length = 0;
  for (; id[length]; ++length) {
    const char c = id[length];
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' || c == '-';
    if (!ok || length >= kMaxBatteryIdLength) return false;
  }
  return length > 0;
}

inline std::size_t encode_performance(const PerformanceRecord& r, char* out, std::size_t capacity) {
  detail::JsonWriter w(out, capacity);
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

inline std::size_t encode_prediction(const Prediction& p, char* out, std::size_t capacity) {
  detail::JsonWriter w(out, capacity);
  if (p.has_timestamp) w.number("timestamp", p.timestamp);
  w.number("remaining_life_hours", p.remaining_life_hours);
  w.number("remaining_cycles", p.remaining_cycles);
  w.number("degradation_rate", p.degradation_rate);
  w.battery_id(p.battery_id);
  w.source(p.source);
  return w.finish();
}

inline std::size_t encode_cell_reading(const CellReading& r, char* out, std::size_t capacity) {
  if (r.cell_voltage_count > kMaxCells || r.cell_temp_count > kMaxCells) return 0;
  const std::size_t cells = r.cell_voltage_count > r.cell_temp_count ? r.cell_voltage_count : r.cell_temp_count;
  detail::JsonWriter w(out, capacity, max_cell_message_bytes(cells));
  if (r.has_timestamp) w.number("timestamp", r.timestamp);
  if (r.has_device_time) w.number("device_time", r.device_time);
  w.number("pack_voltage", r.pack_voltage);
  w.number("pack_current", r.pack_current);
  w.number("cell_temp", r.cell_temp);
  w.numbers("cell_voltages", r.cell_voltages, r.cell_voltage_count);
  w.numbers("cell_temps", r.cell_temps, r.cell_temp_count);
  w.battery_id(r.battery_id);
  w.source(r.source);
  return w.finish();
}

inline bool encode_performance(const PerformanceRecord& record, std::string& line) {
  char buf[kMaxMessageBytes];
  line.assign(buf, encode_performance(record, buf, sizeof buf));
  return !line.empty();
}

inline bool encode_prediction(const Prediction& prediction, std::string& line) {
  char buf[kMaxMessageBytes];
  line.assign(buf, encode_prediction(prediction, buf, sizeof buf));
  return !line.empty();
}

// On the heap: the longest cell message is too big for a device's stack.
inline bool encode_cell_reading(const CellReading& reading, std::string& line) {
  line.resize(max_cell_message_bytes(kMaxCells));
  line.resize(encode_cell_reading(reading, &line[0], line.size()));
  return !line.empty();
}

inline const char* error_name(Error error) {
  switch (error) {
    case kOk: return "ok";
    case kErrInvalidOptions: return "invalid options";
    case kErrNoMemory: return "no memory";
    case kErrNotInitialized: return "not initialized";
    case kErrRefused: return "refused";
    case kErrLinkDisabled: return "link disabled";
    case kErrResolve: return "host not resolved";
    case kErrConnect: return "connect failed";
    case kErrConnectTimeout: return "connect timed out";
    case kErrStalled: return "stalled";
    case kErrPeerClosed: return "closed by the collector";
    case kErrIo: return "I/O error";
    case kErrTimeout: return "timed out";
    case kErrNotConfirmed: return "not confirmed";
    case kErrTooManyCells: return "too many cells";
    case kErrQueue: return "queue file error";
    case kErrRejected: return "rejected by the service";
    case kErrProtocol: return "protocol error";
  }
  return "unknown";
}

}  // namespace battery_monitor

#endif  // BATTERY_MONITOR_CLIENT_HPP
