// battery_monitor/v2.hpp: edge protocol v2 client (sequenced, acknowledged, checksummed frames).
//
// Header-only, C++11, POSIX, no dependencies, no threads, no signal handlers; it reuses the
// Transport and Clock seams, the Error codes and the POSIX transport of client.hpp (the legacy
// client), which it includes. The wire format is docs/protocol.md ("Edge protocol v2"):
// a handshake (magic "BMV2", battery_id, stream_id) answered with resume_after, then frames
// (length, type, flags, sequence, float64 device timestamp, payload, CRC-32C) answered with
// cumulative acknowledgements once the service has stored them durably.
//
// Synopsis (public API; everything in namespace v2::detail, below the public part, is internal):
//
//   v2::ClientOptions o;                              // see v2::ClientOptions for every option
//   o.host = "10.0.0.5";  o.battery_id = "pack-1";
//   o.queue.path = "/var/bm/queue";  o.queue.file_bytes = 1 << 20;  o.queue.fsync = v2::kFsyncAlways;
//   v2::Client c;
//   Error e = c.init(o);                              // opens (or creates) the queue file; or init(o, storage, size)
//   c.send_reading(reading);                          // kOk: written to the queue file (accepted); never touches the network
//   c.send_performance(p);  c.send_prediction(q);
//   c.poll(timeout_ms);  or descriptors()/next_timeout_ms()/process() as the legacy client
//   c.flush(timeout_ms);                              // kOk: everything accepted is acknowledged
//   c.close(timeout_ms);  c.stats();  c.last_error();  c.last_errno();  c.last_status();
//
// Delivery promise: a reading is accepted once its frame is written to the queue file (and, by
// the fsync policy, on the disk); it stays there, across reconnects, process kills and reboots,
// until the service acknowledges it, and is sent in sequence order after the handshake's
// resume_after. The service stores each (battery_id, stream_id, sequence) once, so a frame sent
// again is not stored twice. A full queue drops its oldest readings, counted.

#ifndef BATTERY_MONITOR_V2_HPP
#define BATTERY_MONITOR_V2_HPP

#include "client.hpp"

#include <sys/stat.h>

namespace battery_monitor {
namespace v2 {

// =============================================================================================
// Public API
// =============================================================================================

const int kDefaultPort = 23458;
const uint8_t kVersion = 2;
const std::size_t kHandshakeFixedBytes = 16;                        // then battery_id, then the CRC
const std::size_t kMaxHandshakeBytes = 16 + kMaxBatteryIdLength + 4;
const std::size_t kAnswerBytes = 24;
const std::size_t kAckBytes = 16;
const uint8_t kAckType = 0x81;
const std::size_t kFrameHeaderBytes = 20;                           // length, type, flags, sequence, timestamp
const std::size_t kMinFrameBytes = 24;
const std::size_t kMaxFrameBytes = 16436;                           // a battery-data frame with 1,024 + 1,024 cells
// Frame flags (byte 3). kFlagSkipped: the device does not send the sequences between the previous
// frame it sent on this connection (the first frame: the handshake's resume_after) and this one, as
// it no longer holds them (dropped by a full queue, lost to a corrupt slot, or acknowledged before
// a resume_after that lags after a crash of the service). The service refuses a gap without it as
// a frame lost on the way. The other bits are reserved.
const uint8_t kFlagSkipped = 0x01;

enum FrameType { kBatteryData = 1, kBatteryPerformance = 2, kBatteryPrediction = 3 };

// The handshake answer's status.
enum Status { kStatusOk = 0, kStatusUnsupportedVersion = 1, kStatusBadBatteryId = 2, kStatusMalformed = 3, kStatusBusy = 4 };

// CRC-32C (Castagnoli, reflected, by a 256-entry table). Pass the previous result to continue a
// running checksum; crc32c("123456789", 9) == 0xE3069283.
inline uint32_t crc32c(const void* data, std::size_t length, uint32_t previous = 0);

// A battery-data reading with its device timestamp (Unix seconds from the device clock) and,
// optionally, its cells (borrowed arrays; a count of 0 sends none).
struct DataReading {
  double timestamp;
  double pack_voltage;
  double pack_current;
  double cell_temp;
  const double* cell_voltages;
  std::size_t cell_voltage_count;  // at most kMaxCells
  const double* cell_temps;
  std::size_t cell_temp_count;

  DataReading()
      : timestamp(0), pack_voltage(0), pack_current(0), cell_temp(0), cell_voltages(0), cell_voltage_count(0), cell_temps(0),
        cell_temp_count(0) {}
};

struct Performance {
  double timestamp;
  double pack_voltage;
  double pack_current;
  double cell_temp;
  double capacity_remaining;
  double cycle_count;  // a float64 on the wire; must hold an integer of at most 2^53 - 1
  double age_months;
  double health_score;

  Performance()
      : timestamp(0), pack_voltage(0), pack_current(0), cell_temp(0), capacity_remaining(0), cycle_count(0), age_months(0), health_score(0) {}
};

struct Prediction {
  double timestamp;
  double remaining_life_hours;
  double remaining_cycles;
  double degradation_rate;

  Prediction() : timestamp(0), remaining_life_hours(0), remaining_cycles(0), degradation_rate(0) {}
};

// Encoders: one whole frame into out[0, capacity); the frame's length, or 0 when refused (a
// sequence of 0, a non-finite number, a non-integer cycle_count, more than kMaxCells cells, a null
// array with a count, or no room). Refused frames are what the service would count and not store.
inline std::size_t data_frame_bytes(std::size_t cell_voltages, std::size_t cell_temps);
inline std::size_t encode_data(uint64_t sequence, const DataReading& reading, uint8_t* out, std::size_t capacity);
inline std::size_t encode_performance(uint64_t sequence, const Performance& record, uint8_t* out, std::size_t capacity);
inline std::size_t encode_prediction(uint64_t sequence, const Prediction& prediction, uint8_t* out, std::size_t capacity);
// Rewrites the flags byte of a whole encoded frame, and its CRC (encoders write flags 0).
inline void set_frame_flags(uint8_t* frame, uint8_t flags);

// What decode_frame() found, named as the service counts it (frame_check_name()).
enum FrameCheck { kFrameOk, kFramePartial, kFrameBadCrc, kFrameMalformed, kFrameUnknownKind, kFrameNonFinite, kFrameInvalidRecord };
inline const char* frame_check_name(FrameCheck check);

// A decoded frame: views into the bytes given to decode_frame().
struct FrameView {
  std::size_t length;  // N; 0 when not yet known (fewer than 2 bytes)
  uint8_t type;
  uint8_t flags;
  uint64_t sequence;
  double timestamp;
  const uint8_t* payload;
  std::size_t payload_length;
  std::size_t cell_voltage_count;  // battery-data only
  std::size_t cell_temp_count;

  FrameView()
      : length(0), type(0), flags(0), sequence(0), timestamp(0), payload(0), payload_length(0), cell_voltage_count(0), cell_temp_count(0) {}
  double value(std::size_t i) const;         // the i-th float64 of the fixed fields (kinds table order)
  double cell_voltage(std::size_t i) const;  // battery-data with cells
  double cell_temp(std::size_t i) const;
};

// The frame at in[0, available). kFramePartial: more bytes are needed (view.length says how many
// when known). Every other result has view.length bytes to skip (kFrameMalformed with N out of
// range: none; the service closes the connection then). The checks run in the service's order:
// length range, completeness, CRC, type, payload size, finiteness, integer cycle_count.
inline FrameCheck decode_frame(const uint8_t* in, std::size_t available, FrameView& view);

// Handshake, device side: its length (16 + L + 4), or 0 when refused (invalid battery_id, stream 0).
inline std::size_t encode_handshake(const char* battery_id, uint64_t stream_id, uint8_t* out, std::size_t capacity);

// Handshake, service side (a peer in the tests, a gateway): -1 while more bytes are needed, else
// the status the service answers (kStatusOk with battery_id and stream_id filled in).
struct Handshake {
  uint64_t stream_id;
  char battery_id[kMaxBatteryIdLength + 1];
  std::size_t length;  // bytes the handshake took

  Handshake() : stream_id(0), length(0) { battery_id[0] = 0; }
};
inline int check_handshake(const uint8_t* in, std::size_t available, Handshake& out);

struct Answer {
  uint8_t status;
  uint64_t resume_after;
  uint32_t max_frame_bytes;

  Answer() : status(0), resume_after(0), max_frame_bytes(static_cast<uint32_t>(kMaxFrameBytes)) {}
};
inline void encode_answer(const Answer& answer, uint8_t out[24]);
inline bool decode_answer(const uint8_t in[24], Answer& answer);  // false: magic, version, reserved or CRC wrong
inline void encode_ack(uint64_t sequence, uint8_t out[16]);
inline bool decode_ack(const uint8_t in[16], uint64_t& sequence);  // false: length, type, flags or CRC wrong

// ---------------------------------------------------------------------------------------------
// The on-disk queue: one file, a fixed-size ring of fixed-size slots
// ---------------------------------------------------------------------------------------------
//
// Layout (all integers little-endian):
//   [0, 64)     header copy A      } written alternately, each with a generation and a CRC-32C,
//   [512, 576)  header copy B      } so a torn header write leaves the other copy readable
//   [1024, ...) slot_count slots of slot_bytes each; slot (sequence % slot_count) holds that
//               sequence's frame, exactly as it goes on the wire (its own length and CRC)
// Header: magic "BMVQ" | format u32 (1) | slot_bytes u32 | slot_count u32 | stream_id u64 |
//   generation u64 | head_seq u64 | tail_seq u64 | dropped u64 | reserved u32 | CRC-32C of [0, 60) u32.
// head_seq: every sequence below it is acknowledged (or dropped); tail_seq: the next sequence, as
// of that header write. Sequences between them are the queue; a slot is valid when its frame's
// CRC holds and its sequence maps to the slot, so a torn or corrupt slot loses that one reading
// only. See README.md ("The queue file").

enum FsyncPolicy {
  kFsyncAlways,  // fsync before send_*() returns: an accepted reading survives a power loss
  kFsyncBatch,   // fsync every fsync_every accepts or fsync_interval_ms, whichever first
  kFsyncNever    // leave it to the kernel: survives a process kill, not a power loss
};

enum OpenMode {
  kOpenOrCreate,  // continue the file's stream (a reboot), or create the file when missing
  kCreateNew      // replace any file with an empty queue and a new stream
};

struct QueueOptions {
  std::string path;
  // The file's size at creation (header 1 KiB, then slots); an existing file keeps its size.
  std::size_t file_bytes;
  // Cells per array a battery-data reading may carry: sizes the slots at creation (80 bytes
  // without cells, data_frame_bytes(n, n) with). An existing file keeps its slots (they must fit
  // the Client's send buffer); a reading is accepted when it fits both the slots and max_cells.
  std::size_t max_cells;
  FsyncPolicy fsync;
  int fsync_every;         // kFsyncBatch: at most this many accepts between fsyncs (>= 1)
  int fsync_interval_ms;   // kFsyncBatch: and no accept waits longer than this (>= 0; 0: every accept)
  OpenMode mode;
  uint64_t stream_id;      // at creation; 0: random (from /dev/urandom, else the clocks)

  QueueOptions() : file_bytes(1024 * 1024), max_cells(0), fsync(kFsyncAlways), fsync_every(64), fsync_interval_ms(200), mode(kOpenOrCreate), stream_id(0) {}
};

// What open() found.
struct QueueReport {
  bool created;          // a new file (no file, kCreateNew, or an unreadable one: see recreated)
  bool recreated;        // the old file had no valid header: its readings could not be read
  bool header_torn;      // one header copy was invalid (the other served)
  bool extended;         // the file was shorter than its geometry (truncated): its missing slots are lost
  uint64_t recovered;    // readings found in the queue, to be sent
  uint64_t lost;         // readings the queue held (by its header) whose slots were unreadable
  uint64_t stream_id;

  QueueReport() : created(false), recreated(false), header_torn(false), extended(false), recovered(0), lost(0), stream_id(0) {}
};

// Bytes of one slot for this many cells per array.
inline std::size_t slot_bytes_for(std::size_t max_cells);

// ---------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------

struct Event {
  EventKind kind;          // as the legacy client: connecting, connected (handshake answered ok),
  Error error;             //   connect failed (kErrRejected: status says why), disconnected
  int sys_errno;
  int status;              // the answer's status (kErrRejected), else 0
  const Address* address;  // kEventConnecting, kEventConnected
};
typedef void (*EventCallback)(void* context, const Event& event);

struct ClientOptions {
  std::string host;        // numeric IPv4/IPv6, or a name resolved once (as the legacy client)
  int port;
  std::string battery_id;  // the handshake's; 1-64 of A-Z a-z 0-9 . _ : -
  QueueOptions queue;
  std::size_t send_buffer_bytes;  // frames read from the queue per batch (at least one slot)
  int connect_timeout_ms;         // TCP connect, and again for the handshake's answer
  int backoff_initial_ms;
  int backoff_max_ms;
  int stable_connection_ms;
  // A connection whose oldest unacknowledged frame (from when its first byte went out, or from
  // the last ack) waits this long for an acknowledgement is abandoned and reopened: a stalled
  // service, a vanished host, a write that never completes.
  int ack_timeout_ms;
  int keepalive_idle_s;
  int keepalive_interval_s;
  int keepalive_count;
  int socket_send_buffer;
  Transport* transport;
  Clock* clock;
  EventCallback on_event;
  void* event_context;

  ClientOptions()
      : host("127.0.0.1"), port(kDefaultPort), send_buffer_bytes(16 * 1024), connect_timeout_ms(2000), backoff_initial_ms(100),
        backoff_max_ms(5000), stable_connection_ms(1000), ack_timeout_ms(10000), keepalive_idle_s(30), keepalive_interval_s(10),
        keepalive_count(3), socket_send_buffer(0), transport(0), clock(0), on_event(0), event_context(0) {}
};

struct Stats {
  uint64_t accepted;          // readings written to the queue by this Client
  uint64_t acknowledged;      // readings removed by an acknowledgement (or by resume_after: already stored)
  uint64_t dropped;           // readings removed because the queue was full (oldest first), this file's life
  uint64_t lost;              // readings the queue held whose slots were unreadable (at open, or later)
  uint64_t recovered;         // readings found in the queue at init()
  uint64_t pending;           // readings in the queue now (not acknowledged, not dropped)
  uint64_t refused;           // not accepted: invalid values (kErrRefused, kErrTooManyCells) or a write error
  uint64_t frames_sent;       // frames written whole to a socket
  uint64_t resent;            // of which sent before, on an earlier connection
  uint64_t reconnects;        // handshakes answered ok after the first
  uint64_t connect_failures;  // attempts refused, timed out, unresolvable, or answered with a bad status
  uint64_t rejected;          // answers with a status other than 0
  uint64_t stalls;            // connections abandoned by ack_timeout_ms
  uint64_t fsyncs;
  uint64_t writes;            // send() calls that wrote bytes
};

namespace detail {
class Engine;
}

template <class Engine>
class BasicClient {
 public:
  BasicClient() {}

  static Error validate(const ClientOptions& options, const char** problem = 0) { return Engine::validate(options, problem); }
  static std::size_t storage_bytes(const ClientOptions& options) { return Engine::storage_bytes(options); }
  // Validates, opens the queue (report() says what it found), takes its buffers from storage or
  // allocates them once. kErrQueue (last_errno()) when the file cannot be opened or created.
  Error init(const ClientOptions& options, void* storage = 0, std::size_t storage_size = 0) { return e_.init(options, storage, storage_size); }
  const QueueReport& report() const { return e_.report(); }

  // Accept: encode with the next sequence and write to the queue file (fsync by the policy).
  // kOk: accepted. kErrRefused / kErrTooManyCells: invalid, not queued. kErrQueue: the write
  // failed (last_errno()), not accepted. Never touches the network.
  Error send_reading(const DataReading& reading) { return e_.send_reading(reading); }
  Error send_performance(const Performance& record) { return e_.send_performance(record); }
  Error send_prediction(const Prediction& prediction) { return e_.send_prediction(prediction); }

  int descriptors(struct pollfd* out, int max) const { return e_.descriptors(out, max); }  // at most 1
  int64_t next_timeout_ms() const { return e_.next_timeout_ms(); }
  void process(const struct pollfd* fds, int count) { e_.process(fds, count); }
  Error poll(int timeout_ms) { return e_.poll(timeout_ms); }

  // Syncs the queue, then polls until every accepted reading is acknowledged (kOk) or timeout_ms
  // passed (kErrTimeout).
  Error flush(int timeout_ms) { return e_.flush(timeout_ms); }
  // flush(), then closes the connection and syncs the queue; what is not acknowledged stays in
  // the file for the next init(). The Client stays usable.
  Error close(int timeout_ms) { return e_.close(timeout_ms); }

  Stats stats() const { return e_.stats(); }
  Error last_error() const { return e_.last_error(); }
  int last_errno() const { return e_.last_errno(); }
  int last_status() const { return e_.last_status(); }  // of the last rejecting answer
  uint64_t stream_id() const { return e_.stream_id(); }
  uint64_t pending() const { return e_.pending(); }
  uint64_t capacity() const { return e_.capacity(); }  // readings the queue holds before dropping the oldest
  bool connected() const { return e_.connected(); }  // handshake answered ok
  int socket() const { return e_.socket(); }

 private:
  BasicClient(const BasicClient&);
  BasicClient& operator=(const BasicClient&);
  Engine e_;
};

typedef BasicClient<detail::Engine> Client;

// =============================================================================================
// Internals
// =============================================================================================

namespace detail {

using battery_monitor::detail::is_finite;

inline void put_u16(uint16_t v, uint8_t* out) {
  out[0] = static_cast<uint8_t>(v);
  out[1] = static_cast<uint8_t>(v >> 8);
}

inline void put_u32(uint32_t v, uint8_t* out) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}

inline void put_u64(uint64_t v, uint8_t* out) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(v >> (8 * i));
}

inline uint16_t get_u16(const uint8_t* in) { return static_cast<uint16_t>(in[0] | (in[1] << 8)); }

inline uint32_t get_u32(const uint8_t* in) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | in[i];
  return v;
}

inline uint64_t get_u64(const uint8_t* in) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | in[i];
  return v;
}

// Bits by memcpy, bytes by shifts: the same little-endian bytes on any host.
inline void put_f64(double value, uint8_t* out) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  put_u64(bits, out);
}

inline double get_f64(const uint8_t* in) {
  const uint64_t bits = get_u64(in);
  double value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

inline const uint32_t* crc32c_table() {
  struct Table {
    uint32_t entries[256];
    Table() {
      for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        entries[i] = c;
      }
    }
  };
  static const Table table;
  return table.entries;
}

// A float64 holding an integer JavaScript represents exactly (Number.isSafeInteger). Compared on
// the integer, not with floor(): nothing here for -ffast-math to fold.
inline bool is_safe_integer(double value) {
  if (!is_finite(value) || value > 9007199254740991.0 || value < -9007199254740991.0) return false;
  const int64_t whole = static_cast<int64_t>(value);
  const double back = static_cast<double>(whole);
  return std::memcmp(&back, &value, sizeof back) == 0 || (whole == 0 && value == 0);
}

// Writes the fixed part; the caller then adds the payload and seal() the CRC.
inline void begin_frame(uint8_t* out, std::size_t length, uint8_t type, uint64_t sequence, double timestamp) {
  put_u16(static_cast<uint16_t>(length), out);
  out[2] = type;
  out[3] = 0;
  put_u64(sequence, out + 4);
  put_f64(timestamp, out + 12);
}

inline void seal(uint8_t* out, std::size_t length) { put_u32(crc32c(out, length - 4), out + length - 4); }

inline bool all_finite(const double* values, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    if (!is_finite(values[i])) return false;
  }
  return true;
}

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Wire encoders and decoders
// ---------------------------------------------------------------------------------------------

inline uint32_t crc32c(const void* data, std::size_t length, uint32_t previous) {
  const uint32_t* table = detail::crc32c_table();
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint32_t crc = ~previous;
  for (std::size_t i = 0; i < length; ++i) crc = table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

inline std::size_t data_frame_bytes(std::size_t cell_voltages, std::size_t cell_temps) {
  const std::size_t payload = cell_voltages == 0 && cell_temps == 0 ? 24 : 28 + 8 * (cell_voltages + cell_temps);
  return kFrameHeaderBytes + payload + 4;
}

inline std::size_t encode_data(uint64_t sequence, const DataReading& r, uint8_t* out, std::size_t capacity) {
  if (sequence == 0 || r.cell_voltage_count > kMaxCells || r.cell_temp_count > kMaxCells) return 0;
  if ((r.cell_voltage_count > 0 && r.cell_voltages == 0) || (r.cell_temp_count > 0 && r.cell_temps == 0)) return 0;
  const double fixed[4] = {r.timestamp, r.pack_voltage, r.pack_current, r.cell_temp};
  if (!detail::all_finite(fixed, 4) || !detail::all_finite(r.cell_voltages, r.cell_voltage_count) ||
      !detail::all_finite(r.cell_temps, r.cell_temp_count)) {
    return 0;
  }
  const std::size_t length = data_frame_bytes(r.cell_voltage_count, r.cell_temp_count);
  if (length > capacity) return 0;
  detail::begin_frame(out, length, kBatteryData, sequence, r.timestamp);
  uint8_t* p = out + kFrameHeaderBytes;
  for (int i = 1; i < 4; ++i, p += 8) detail::put_f64(fixed[i], p);
  if (r.cell_voltage_count > 0 || r.cell_temp_count > 0) {
    detail::put_u16(static_cast<uint16_t>(r.cell_voltage_count), p);
    detail::put_u16(static_cast<uint16_t>(r.cell_temp_count), p + 2);
    p += 4;
    for (std::size_t i = 0; i < r.cell_voltage_count; ++i, p += 8) detail::put_f64(r.cell_voltages[i], p);
    for (std::size_t i = 0; i < r.cell_temp_count; ++i, p += 8) detail::put_f64(r.cell_temps[i], p);
  }
  detail::seal(out, length);
  return length;
}

namespace detail {
// A frame of fixed payload: `count` float64s after the header.
inline std::size_t encode_fixed(uint8_t type, uint64_t sequence, double timestamp, const double* values, std::size_t count, uint8_t* out,
                                std::size_t capacity) {
  const std::size_t length = kFrameHeaderBytes + 8 * count + 4;
  if (sequence == 0 || !is_finite(timestamp) || !all_finite(values, count) || length > capacity) return 0;
  begin_frame(out, length, type, sequence, timestamp);
  for (std::size_t i = 0; i < count; ++i) put_f64(values[i], out + kFrameHeaderBytes + 8 * i);
  seal(out, length);
  return length;
}
}  // namespace detail

inline std::size_t encode_performance(uint64_t sequence, const Performance& r, uint8_t* out, std::size_t capacity) {
  if (!detail::is_safe_integer(r.cycle_count)) return 0;
  const double values[7] = {r.pack_voltage, r.pack_current, r.cell_temp, r.capacity_remaining, r.cycle_count, r.age_months, r.health_score};
  return detail::encode_fixed(kBatteryPerformance, sequence, r.timestamp, values, 7, out, capacity);
}

inline std::size_t encode_prediction(uint64_t sequence, const Prediction& p, uint8_t* out, std::size_t capacity) {
  const double values[3] = {p.remaining_life_hours, p.remaining_cycles, p.degradation_rate};
  return detail::encode_fixed(kBatteryPrediction, sequence, p.timestamp, values, 3, out, capacity);
}

inline void set_frame_flags(uint8_t* frame, uint8_t flags) {
  if (frame[3] == flags) return;
  frame[3] = flags;
  detail::seal(frame, detail::get_u16(frame));
}

inline const char* frame_check_name(FrameCheck check) {
  switch (check) {
    case kFrameOk: return "ok";
    case kFramePartial: return "partial_frame";
    case kFrameBadCrc: return "bad_crc";
    case kFrameMalformed: return "malformed";
    case kFrameUnknownKind: return "unknown_kind";
    case kFrameNonFinite: return "non_finite";
    case kFrameInvalidRecord: return "invalid_record";
  }
  return "unknown";
}

inline double FrameView::value(std::size_t i) const { return detail::get_f64(payload + 8 * i); }
inline double FrameView::cell_voltage(std::size_t i) const { return detail::get_f64(payload + 28 + 8 * i); }
inline double FrameView::cell_temp(std::size_t i) const { return detail::get_f64(payload + 28 + 8 * (cell_voltage_count + i)); }

inline FrameCheck decode_frame(const uint8_t* in, std::size_t available, FrameView& f) {
  f = FrameView();
  if (available < 2) return kFramePartial;
  const std::size_t length = detail::get_u16(in);
  f.length = length;
  if (length < kMinFrameBytes || length > kMaxFrameBytes) {
    f.length = 0;
    return kFrameMalformed;
  }
  if (available < length) return kFramePartial;
  if (crc32c(in, length - 4) != detail::get_u32(in + length - 4)) return kFrameBadCrc;
  f.type = in[2];
  f.flags = in[3];
  f.sequence = detail::get_u64(in + 4);
  f.timestamp = detail::get_f64(in + 12);
  f.payload = in + kFrameHeaderBytes;
  f.payload_length = length - kFrameHeaderBytes - 4;
  std::size_t fixed = 0;
  switch (f.type) {
    case kBatteryData:
      fixed = 3;
      if (f.payload_length != 24) {
        if (f.payload_length < 28) return kFrameMalformed;
        f.cell_voltage_count = detail::get_u16(f.payload + 24);
        f.cell_temp_count = detail::get_u16(f.payload + 26);
        if (f.cell_voltage_count > kMaxCells || f.cell_temp_count > kMaxCells ||
            f.payload_length != 28 + 8 * (f.cell_voltage_count + f.cell_temp_count)) {
          return kFrameMalformed;
        }
      }
      break;
    case kBatteryPerformance:
      fixed = 7;
      if (f.payload_length != 56) return kFrameMalformed;
      break;
    case kBatteryPrediction:
      fixed = 3;
      if (f.payload_length != 24) return kFrameMalformed;
      break;
    default:
      return kFrameUnknownKind;
  }
  if (!detail::is_finite(f.timestamp)) return kFrameNonFinite;
  for (std::size_t i = 0; i < fixed; ++i) {
    if (!detail::is_finite(f.value(i))) return kFrameNonFinite;
  }
  for (std::size_t i = 0; i < f.cell_voltage_count + f.cell_temp_count; ++i) {
    if (!detail::is_finite(detail::get_f64(f.payload + 28 + 8 * i))) return kFrameNonFinite;
  }
  if (f.type == kBatteryPerformance && !detail::is_safe_integer(f.value(4))) return kFrameInvalidRecord;
  return kFrameOk;
}

inline std::size_t encode_handshake(const char* battery_id, uint64_t stream_id, uint8_t* out, std::size_t capacity) {
  if (!is_valid_battery_id(battery_id) || stream_id == 0) return 0;
  const std::size_t id_length = std::strlen(battery_id);
  const std::size_t length = kHandshakeFixedBytes + id_length + 4;
  if (length > capacity) return 0;
  std::memcpy(out, "BMV2", 4);
  out[4] = kVersion;
  out[5] = static_cast<uint8_t>(id_length);
  out[6] = 0;
  out[7] = 0;
  detail::put_u64(stream_id, out + 8);
  std::memcpy(out + kHandshakeFixedBytes, battery_id, id_length);
  detail::seal(out, length);
  return length;
}

inline int check_handshake(const uint8_t* in, std::size_t available, Handshake& out) {
  out = Handshake();
  const std::size_t known = available < 4 ? available : 4;
  if (std::memcmp(in, "BMV2", known) != 0) return kStatusMalformed;
  if (available < 6) return -1;
  if (in[4] != kVersion) return kStatusUnsupportedVersion;
  const std::size_t id_length = in[5];
  if (id_length < 1 || id_length > kMaxBatteryIdLength) return kStatusMalformed;
  const std::size_t length = kHandshakeFixedBytes + id_length + 4;
  if (available < length) return -1;
  out.length = length;
  if (crc32c(in, length - 4) != detail::get_u32(in + length - 4)) return kStatusMalformed;
  out.stream_id = detail::get_u64(in + 8);
  if (out.stream_id == 0) return kStatusMalformed;
  std::memcpy(out.battery_id, in + kHandshakeFixedBytes, id_length);
  out.battery_id[id_length] = 0;
  if (std::strlen(out.battery_id) != id_length || !is_valid_battery_id(out.battery_id)) return kStatusBadBatteryId;
  return kStatusOk;
}

inline void encode_answer(const Answer& a, uint8_t out[24]) {
  std::memcpy(out, "BMV2", 4);
  out[4] = kVersion;
  out[5] = a.status;
  out[6] = 0;
  out[7] = 0;
  detail::put_u64(a.resume_after, out + 8);
  detail::put_u32(a.max_frame_bytes, out + 16);
  detail::seal(out, kAnswerBytes);
}

inline bool decode_answer(const uint8_t in[24], Answer& a) {
  if (std::memcmp(in, "BMV2", 4) != 0 || in[4] != kVersion || in[6] != 0 || in[7] != 0) return false;
  if (crc32c(in, 20) != detail::get_u32(in + 20)) return false;
  a.status = in[5];
  a.resume_after = detail::get_u64(in + 8);
  a.max_frame_bytes = detail::get_u32(in + 16);
  return true;
}

inline void encode_ack(uint64_t sequence, uint8_t out[16]) {
  detail::put_u16(static_cast<uint16_t>(kAckBytes), out);
  out[2] = kAckType;
  out[3] = 0;
  detail::put_u64(sequence, out + 4);
  detail::seal(out, kAckBytes);
}

inline bool decode_ack(const uint8_t in[16], uint64_t& sequence) {
  if (detail::get_u16(in) != kAckBytes || in[2] != kAckType || in[3] != 0) return false;
  if (crc32c(in, 12) != detail::get_u32(in + 12)) return false;
  sequence = detail::get_u64(in + 4);
  return true;
}

inline std::size_t slot_bytes_for(std::size_t max_cells) {
  const std::size_t performance = kFrameHeaderBytes + 56 + 4;
  const std::size_t data = data_frame_bytes(max_cells, max_cells);
  return data > performance ? data : performance;
}

namespace detail {

const std::size_t kQueueHeaderBytes = 64;
const std::size_t kQueueHeaderOffsets[2] = {0, 512};
const std::size_t kQueueDataOffset = 1024;
const uint32_t kQueueFormat = 1;

// A 64-bit stream id, never 0: /dev/urandom where it exists, else a mix of the clocks and the
// process id (splitmix64), which differs between devices and between boots well enough.
inline uint64_t random_stream_id(Clock* clock) {
  uint64_t id = 0;
  const int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    uint8_t bytes[8];
    if (::read(fd, bytes, sizeof bytes) == static_cast<ssize_t>(sizeof bytes)) id = get_u64(bytes);
    ::close(fd);
  }
  if (id == 0) {
    uint64_t x = static_cast<uint64_t>(clock->now_ms()) ^ (static_cast<uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) << 7) ^
                 (static_cast<uint64_t>(::getpid()) << 40);
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    id = x ^ (x >> 31);
  }
  return id == 0 ? 1 : id;
}

inline bool write_all(int fd, const uint8_t* data, std::size_t length, off_t offset) {
  while (length > 0) {
    const ssize_t n = ::pwrite(fd, data, length, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    data += n;
    length -= static_cast<std::size_t>(n);
    offset += n;
  }
  return true;
}

// Reads what is there; past the end of the file the rest is zeros (an invalid slot).
inline bool read_all(int fd, uint8_t* data, std::size_t length, off_t offset) {
  while (length > 0) {
    const ssize_t n = ::pread(fd, data, length, offset);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) {
      std::memset(data, 0, length);
      return true;
    }
    data += n;
    length -= static_cast<std::size_t>(n);
    offset += n;
  }
  return true;
}

inline int sync_fd(int fd) {
  for (;;) {
    const int rc = ::fsync(fd);
    if (rc == 0 || errno != EINTR) return rc;
  }
}

// The file-backed ring. Sequences [head_, next_) are the queue; sequence s lives in slot
// s % slot_count_, so slots need no index and each validates on its own. Not thread-safe.
class Queue {
 public:
  Queue()
      : fd_(-1), clock_(0), scratch_(0), scratch_bytes_(0), slot_bytes_(0), slot_count_(0), stream_id_(0), generation_(0), head_(1), next_(1),
        durable_next_(1), dropped_(0), lost_(0), acknowledged_(0), fsyncs_(0), unsynced_(0), first_unsynced_ms_(0), header_dirty_(false),
        scanned_through_(0), errno_(0) {}
  ~Queue() { close(); }

  static const char* validate(const QueueOptions& o) {
    if (o.path.empty() || o.path.find('\0') != std::string::npos) return "queue.path: required";
    if (o.max_cells > kMaxCells) return "queue.max_cells: 0-1024";
    const std::size_t slot = slot_bytes_for(o.max_cells);
    if (o.file_bytes < kQueueDataOffset + 2 * slot || (o.file_bytes - kQueueDataOffset) / slot > 0xFFFFFFFFu) {
      return "queue.file_bytes: room for at least 2 slots after the 1 KiB header, at most 2^32 - 1 slots";
    }
    if (sizeof(off_t) < 8 && o.file_bytes > 0x7FFFFFFFu) return "queue.file_bytes: at most 2 GiB on this system";
    if (o.fsync_every < 1 || o.fsync_interval_ms < 0) return "queue.fsync_every: at least 1; queue.fsync_interval_ms: not negative";
    return 0;
  }

  // scratch: at least slot_bytes_for(o.max_cells) bytes, used by open() and read().
  Error open(const QueueOptions& o, Clock* clock, uint8_t* scratch, std::size_t scratch_bytes) {
    options_ = o;
    clock_ = clock;
    scratch_ = scratch;
    scratch_bytes_ = scratch_bytes;
    report_ = QueueReport();
    if (o.mode == kCreateNew) return create_();
    fd_ = ::open(o.path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd_ < 0) {
      if (errno == ENOENT) return create_();
      return fail_(errno);
    }
    return load_();
  }

  // Syncs (by the policy) and closes; the file keeps what is not acknowledged.
  void close() {
    if (fd_ < 0) return;
    sync();
    ::close(fd_);
    fd_ = -1;
  }

  bool is_open() const { return fd_ >= 0; }
  uint64_t next_sequence() const { return next_; }
  uint64_t head() const { return head_; }
  uint64_t size() const { return next_ - head_; }
  // Sequences below this may be sent: on disk as the policy promises it (a frame sent before it
  // is durable could be stored by the service, then lost here, and its sequence reused).
  uint64_t sendable_end() const { return durable_next_; }
  std::size_t slot_bytes() const { return slot_bytes_; }
  uint64_t slot_count() const { return slot_count_; }
  uint64_t stream_id() const { return stream_id_; }
  uint64_t dropped() const { return dropped_; }
  uint64_t lost() const { return lost_; }
  uint64_t acknowledged() const { return acknowledged_; }
  uint64_t fsyncs() const { return fsyncs_; }
  int last_errno() const { return errno_; }
  const QueueReport& report() const { return report_; }

  // Writes frame (whose sequence is next_sequence()) to its slot; the oldest is dropped when the
  // queue is full. false (errno in last_errno()) when the write failed: not accepted.
  bool append(const uint8_t* frame, std::size_t length) {
    if (fd_ < 0 || length > slot_bytes_) return fail_bool_(EINVAL);
    if (next_ - head_ >= slot_count_) {
      // The slot about to be written holds the oldest sequence: it is gone either way.
      ++head_;
      ++dropped_;
      header_dirty_ = true;
    }
    if (!write_all(fd_, frame, length, slot_offset_(next_))) return fail_bool_(errno);
    ++next_;
    switch (options_.fsync) {
      case kFsyncAlways:
        return sync_now_();
      case kFsyncBatch:
        if (unsynced_++ == 0) first_unsynced_ms_ = clock_->now_ms();
        if (unsynced_ >= options_.fsync_every || options_.fsync_interval_ms == 0) return sync_now_();
        return true;
      case kFsyncNever:
        durable_next_ = next_;
        return true;
    }
    return true;
  }

  // When the batch policy's timer is due; -1 for none.
  int64_t sync_deadline_ms() const { return options_.fsync == kFsyncBatch && unsynced_ > 0 ? first_unsynced_ms_ + options_.fsync_interval_ms : -1; }

  // Makes everything accepted durable (the header too), as the policy allows.
  bool sync() {
    if (fd_ < 0) return false;
    if (options_.fsync == kFsyncNever) return !header_dirty_ || write_header_();
    if (unsynced_ == 0 && !header_dirty_ && durable_next_ == next_) return true;
    return sync_now_();
  }

  // Every sequence <= `sequence` is durable at the service: remove them. Returns how many went.
  // The header is written (not synced: losing it only means sending some frames again).
  uint64_t acknowledge(uint64_t sequence) {
    if (sequence < head_) return 0;
    const uint64_t new_head = sequence >= next_ ? next_ : sequence + 1;
    const uint64_t count = new_head - head_;
    head_ = new_head;
    acknowledged_ += count;
    write_header_();
    return count;
  }

  // The handshake's resume_after: the service holds every sequence up to it. When it holds more
  // than this queue ever numbered (a file restored from an old copy), numbering continues past
  // it, durably, or new readings would reuse sequences the service holds and be dropped as
  // duplicates.
  uint64_t resume(uint64_t after) {
    if (after < next_) return acknowledge(after);
    acknowledged_ += next_ - head_;
    const uint64_t count = next_ - head_;
    next_ = after + 1;
    head_ = next_;
    durable_next_ = next_;
    unsynced_ = 0;
    write_header_();
    if (options_.fsync != kFsyncNever) sync_fd_();
    return count;
  }

  // Copies the valid frames of sequences [from, sendable_end()) into out, whole, in order, as many
  // as fit (slot_bytes() bytes of room each); *next_from: where the next read continues. Returns
  // the bytes copied, or -1 (last_errno()). A slot that fails validation is skipped and counted
  // lost (once).
  long read(uint64_t from, uint8_t* out, std::size_t capacity, uint64_t& next_from) {
    std::size_t used = 0;
    uint64_t seq = from < head_ ? head_ : from;
    const uint64_t end = durable_next_;
    while (seq < end && capacity - used >= slot_bytes_) {
      const uint64_t index = seq % slot_count_;
      uint64_t k = end - seq;
      if (k > slot_count_ - index) k = slot_count_ - index;
      const uint64_t room = (capacity - used) / slot_bytes_;
      if (k > room) k = room;
      uint8_t* area = out + used;
      if (!read_all(fd_, area, static_cast<std::size_t>(k) * slot_bytes_, slot_offset_(seq))) {
        next_from = seq;
        fail_(errno);
        return -1;
      }
      for (uint64_t j = 0; j < k; ++j, ++seq) {
        const uint8_t* slot = area + j * slot_bytes_;
        FrameView f;
        if (valid_slot_(slot, seq % slot_count_, f) && f.sequence == seq) {
          std::memmove(out + used, slot, f.length);
          used += f.length;
        } else if (seq > scanned_through_) {
          ++lost_;
        }
        if (seq > scanned_through_) scanned_through_ = seq;
      }
    }
    next_from = seq;
    return static_cast<long>(used);
  }

 private:
  off_t slot_offset_(uint64_t sequence) const { return static_cast<off_t>(kQueueDataOffset + (sequence % slot_count_) * slot_bytes_); }

  bool valid_slot_(const uint8_t* slot, uint64_t index, FrameView& f) const {
    return decode_frame(slot, slot_bytes_, f) == kFrameOk && f.sequence != 0 && f.sequence % slot_count_ == index;
  }

  Error fail_(int err) {
    errno_ = err;
    return kErrQueue;
  }

  bool fail_bool_(int err) {
    errno_ = err;
    return false;
  }

  bool sync_fd_() {
    if (sync_fd(fd_) != 0) return fail_bool_(errno);
    ++fsyncs_;
    return true;
  }

  bool sync_now_() {
    if ((header_dirty_ && !write_header_()) || !sync_fd_()) {
      // Retried at the next interval, not in a tight loop on a failing disk.
      first_unsynced_ms_ = clock_->now_ms();
      return false;
    }
    durable_next_ = next_;
    unsynced_ = 0;
    return true;
  }

  void encode_header_(uint8_t* h) const {
    std::memset(h, 0, kQueueHeaderBytes);
    std::memcpy(h, "BMVQ", 4);
    put_u32(kQueueFormat, h + 4);
    put_u32(static_cast<uint32_t>(slot_bytes_), h + 8);
    put_u32(static_cast<uint32_t>(slot_count_), h + 12);
    put_u64(stream_id_, h + 16);
    put_u64(generation_, h + 24);
    put_u64(head_, h + 32);
    put_u64(next_, h + 40);
    put_u64(dropped_, h + 48);
    put_u32(crc32c(h, 60), h + 60);
  }

  // Into the copy not holding the latest header, so a torn write leaves the latest intact.
  bool write_header_() {
    uint8_t h[kQueueHeaderBytes];
    ++generation_;
    encode_header_(h);
    if (!write_all(fd_, h, sizeof h, static_cast<off_t>(kQueueHeaderOffsets[generation_ & 1]))) return fail_bool_(errno);
    header_dirty_ = false;
    return true;
  }

  // A new file under a temporary name, renamed over the path once complete: a crash during
  // creation leaves the old file or the new one, never half of one.
  Error create_() {
    const bool replacing = report_.recreated;
    slot_bytes_ = slot_bytes_for(options_.max_cells);
    slot_count_ = (options_.file_bytes - kQueueDataOffset) / slot_bytes_;
    stream_id_ = options_.stream_id ? options_.stream_id : random_stream_id(clock_);
    generation_ = 0;
    head_ = next_ = durable_next_ = 1;
    dropped_ = lost_ = 0;
    scanned_through_ = 0;
    if (fd_ >= 0) ::close(fd_);
    const std::string temp = options_.path + ".new";
    fd_ = ::open(temp.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) return fail_(errno);
    const off_t size = static_cast<off_t>(kQueueDataOffset + slot_count_ * slot_bytes_);
    if (::ftruncate(fd_, size) != 0 || !fill_zeros_(size) || !write_header_() || !write_header_() || !sync_fd_() ||
        ::rename(temp.c_str(), options_.path.c_str()) != 0) {
      const int err = errno_ ? errno_ : errno;
      ::close(fd_);
      fd_ = -1;
      ::unlink(temp.c_str());
      return fail_(err ? err : EIO);
    }
    sync_directory_();
    report_ = QueueReport();
    report_.created = true;
    report_.recreated = replacing;
    report_.stream_id = stream_id_;
    return kOk;
  }

  // Every block written once at creation, so a full disk shows now, not later as an accept that
  // fails (a sparse file would allocate its blocks as slots are first written).
  bool fill_zeros_(off_t size) {
    std::memset(scratch_, 0, scratch_bytes_);
    for (off_t at = 0; at < size;) {
      const off_t left = size - at;
      const std::size_t n = left < static_cast<off_t>(scratch_bytes_) ? static_cast<std::size_t>(left) : scratch_bytes_;
      if (!write_all(fd_, scratch_, n, at)) return fail_bool_(errno);
      at += static_cast<off_t>(n);
    }
    return true;
  }

  // The rename itself must survive a power loss too.
  void sync_directory_() {
    std::string dir = options_.path;
    const std::size_t slash = dir.rfind('/');
    dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : dir.substr(0, slash));
    const int fd = ::open(dir.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      sync_fd(fd);
      ::close(fd);
    }
  }

  // Reads the newer valid header copy, then every slot: what the header says the queue holds,
  // less the slots that do not validate (torn, corrupt, cut off), plus any written after the
  // header (found by their sequences).
  Error load_() {
    uint8_t h[2][kQueueHeaderBytes];
    bool valid[2] = {false, false};
    for (int i = 0; i < 2; ++i) {
      if (!read_all(fd_, h[i], kQueueHeaderBytes, static_cast<off_t>(kQueueHeaderOffsets[i]))) return fail_(errno);
      valid[i] = std::memcmp(h[i], "BMVQ", 4) == 0 && get_u32(h[i] + 4) == kQueueFormat && crc32c(h[i], 60) == get_u32(h[i] + 60);
    }
    if (!valid[0] && !valid[1]) {
      // Without its stream id the file's readings cannot be sent without risking duplicates
      // under a new one: start over, and say so.
      report_.recreated = true;
      return create_();
    }
    const int use = !valid[0] ? 1 : !valid[1] ? 0 : (get_u64(h[1] + 24) > get_u64(h[0] + 24) ? 1 : 0);
    const uint8_t* hh = h[use];
    slot_bytes_ = get_u32(hh + 8);
    slot_count_ = get_u32(hh + 12);
    stream_id_ = get_u64(hh + 16);
    generation_ = get_u64(hh + 24);
    uint64_t head = get_u64(hh + 32);
    const uint64_t tail = get_u64(hh + 40);
    dropped_ = get_u64(hh + 48);
    if (slot_bytes_ < kMinFrameBytes || slot_bytes_ > slot_bytes_for(kMaxCells) || slot_bytes_ > scratch_bytes_ || slot_count_ < 2 ||
        stream_id_ == 0 || head == 0 || tail < head) {
      // A valid header with impossible values, or slots larger than the buffer they are read into.
      return fail_(EINVAL);
    }
    report_.header_torn = !(valid[0] && valid[1]);
    struct stat st;
    const off_t size = static_cast<off_t>(kQueueDataOffset + slot_count_ * slot_bytes_);
    if (::fstat(fd_, &st) != 0) return fail_(errno);
    if (st.st_size < size) {
      report_.extended = true;
      if (::ftruncate(fd_, size) != 0) return fail_(errno);
    }
    // Pass 1: the newest sequence written. Pass 2: which of the queue's sequences survive.
    uint64_t newest = 0;
    if (!scan_(0, newest, 0)) return fail_(errno);
    next_ = tail;
    if (newest + 1 > next_) next_ = newest + 1;
    if (next_ - head > slot_count_) head = next_ - slot_count_;  // overwritten since the header was written
    head_ = head;
    uint64_t live = 0;
    if (!scan_(head_, newest, &live)) return fail_(errno);
    durable_next_ = next_;
    scanned_through_ = next_ - 1;
    lost_ = (next_ - head_) - live;
    report_.recovered = live;
    report_.lost = lost_;
    report_.stream_id = stream_id_;
    header_dirty_ = true;
    return sync_now_() ? kOk : kErrQueue;
  }

  // Reads every slot in scratch-sized runs; newest: the largest valid sequence; live (when
  // given): valid slots with a sequence >= from.
  bool scan_(uint64_t from, uint64_t& newest, uint64_t* live) {
    const uint64_t per_read = scratch_bytes_ / slot_bytes_;
    for (uint64_t first = 0; first < slot_count_; first += per_read) {
      const uint64_t k = slot_count_ - first < per_read ? slot_count_ - first : per_read;
      if (!read_all(fd_, scratch_, static_cast<std::size_t>(k) * slot_bytes_, static_cast<off_t>(kQueueDataOffset + first * slot_bytes_))) {
        return false;
      }
      for (uint64_t j = 0; j < k; ++j) {
        FrameView f;
        if (!valid_slot_(scratch_ + j * slot_bytes_, first + j, f)) continue;
        if (f.sequence > newest) newest = f.sequence;
        if (live && f.sequence >= from && f.sequence < next_) ++*live;
      }
    }
    return true;
  }

  QueueOptions options_;
  int fd_;
  Clock* clock_;
  uint8_t* scratch_;
  std::size_t scratch_bytes_;
  std::size_t slot_bytes_;
  uint64_t slot_count_;
  uint64_t stream_id_;
  uint64_t generation_;
  uint64_t head_;          // oldest sequence still queued
  uint64_t next_;          // the next accepted reading's sequence
  uint64_t durable_next_;  // sequences below it are on disk as the policy promises
  uint64_t dropped_;
  uint64_t lost_;
  uint64_t acknowledged_;
  uint64_t fsyncs_;
  int unsynced_;
  int64_t first_unsynced_ms_;
  bool header_dirty_;
  uint64_t scanned_through_;  // slots up to here were checked (lost ones counted)
  int errno_;
  QueueReport report_;
};

class Engine {
 public:
  Engine()
      : initialized_(false), owned_(0), transport_(0), clock_(0), buffer_(0), buffer_bytes_(0), frame_(0), frame_bytes_(0), addr_count_(0),
        addr_index_(0), failures_in_row_(0), numeric_host_(false), need_resolve_(true), fd_(-1), phase_(kIdle), blocked_(false),
        ever_connected_(false), next_attempt_ms_(0), deadline_ms_(0), connected_at_ms_(0), awaiting_since_ms_(0), backoff_ms_(0), used_(0),
        written_(0), cursor_(0), rx_len_(0), send_seq_(0), buffered_seq_(0), started_seq_(0), written_seq_(0), highest_sent_(0), accepted_(0), refused_(0),
        frames_sent_(0), resent_(0), reconnects_(0), connect_failures_(0), rejected_(0), stalls_(0), writes_(0), last_error_(kOk),
        last_errno_(0), last_status_(0), rng_(1) {}

  ~Engine() {
    close_fd_();
    queue_.close();
    delete[] owned_;
  }

  static std::size_t buffer_bytes_for(const ClientOptions& o) {
    const std::size_t slot = slot_bytes_for(o.queue.max_cells);
    return o.send_buffer_bytes > slot ? o.send_buffer_bytes : slot;
  }

  static Error validate(const ClientOptions& o, const char** problem) {
    const char* bad = Queue::validate(o.queue);
    if (bad == 0) bad = link_problem_(o);
    if (problem) *problem = bad;
    return bad ? kErrInvalidOptions : kOk;
  }

  static const char* link_problem_(const ClientOptions& o) {
    const char* bad = 0;
    if (o.host.empty() || o.host.size() > kMaxHostLength || o.host.find('\0') != std::string::npos) {
      bad = "host: 1-255 characters";
    } else if (o.port < 1 || o.port > 65535) {
      bad = "port: 1-65535";
    } else if (!is_valid_battery_id(o.battery_id.c_str()) || o.battery_id.size() != std::strlen(o.battery_id.c_str())) {
      bad = "battery_id: 1-64 of A-Z a-z 0-9 . _ : -";
    } else if (o.send_buffer_bytes > (std::size_t(1) << 30)) {
      bad = "send_buffer_bytes: at most 1 GiB";
    } else if (o.connect_timeout_ms < 1 || o.connect_timeout_ms > 3600000 || o.ack_timeout_ms < 1 || o.ack_timeout_ms > 3600000) {
      bad = "connect_timeout_ms, ack_timeout_ms: 1-3600000";
    } else if (o.backoff_initial_ms < 1 || o.backoff_max_ms < o.backoff_initial_ms || o.backoff_max_ms > 3600000) {
      bad = "backoff_initial_ms, backoff_max_ms: 1 <= initial <= max <= 3600000";
    } else if (o.stable_connection_ms < 0) {
      bad = "stable_connection_ms: not negative";
    } else if (o.keepalive_idle_s < 0 || (o.keepalive_idle_s > 0 && (o.keepalive_interval_s < 1 || o.keepalive_count < 1))) {
      bad = "keepalive_idle_s: not negative; keepalive_interval_s, keepalive_count: at least 1";
    } else if (o.socket_send_buffer < 0) {
      bad = "socket_send_buffer: not negative";
    }
    return bad;
  }

  // The send buffer (queue reads land there) and one slot to encode a frame in.
  static std::size_t storage_bytes(const ClientOptions& o) {
    if (validate(o, 0) != kOk) return 0;
    return buffer_bytes_for(o) + slot_bytes_for(o.queue.max_cells);
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
    transport_ = options.transport ? options.transport : &posix_;
    clock_ = options.clock ? options.clock : &steady_;
    buffer_ = bytes;
    buffer_bytes_ = buffer_bytes_for(options);
    frame_ = bytes + buffer_bytes_;
    frame_bytes_ = slot_bytes_for(options.queue.max_cells);
    if (queue_.open(options.queue, clock_, buffer_, buffer_bytes_) != kOk) return fail_(kErrQueue, queue_.last_errno());
    // The transport configures sockets from the legacy options (keepalive, send buffer).
    link_options_.keepalive_idle_s = options.keepalive_idle_s;
    link_options_.keepalive_interval_s = options.keepalive_interval_s;
    link_options_.keepalive_count = options.keepalive_count;
    link_options_.socket_send_buffer = options.socket_send_buffer;
    const uint64_t ticks = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^ queue_.stream_id();
    rng_.seed(static_cast<std::minstd_rand::result_type>((ticks ^ (ticks >> 32)) % 2147483646u + 1u));
    backoff_ms_ = options.backoff_initial_ms;
    next_attempt_ms_ = clock_->now_ms();
    struct in6_addr scratch;
    numeric_host_ = ::inet_pton(AF_INET, options.host.c_str(), &scratch) == 1 || ::inet_pton(AF_INET6, options.host.c_str(), &scratch) == 1;
    if (numeric_host_ && posix_.resolve(options.host.c_str(), addrs_, 1) == 1) {
      addr_count_ = 1;
      need_resolve_ = false;
    }
    initialized_ = true;
    return kOk;
  }

  const QueueReport& report() const { return queue_.report(); }

  Error send_reading(const DataReading& r) {
    if (!initialized_) return kErrNotInitialized;
    const std::size_t length = data_frame_bytes(r.cell_voltage_count, r.cell_temp_count);
    if (length > queue_.slot_bytes() || length > frame_bytes_) return refuse_(kErrTooManyCells);
    return accept_(encode_data(queue_.next_sequence(), r, frame_, frame_bytes_));
  }

  Error send_performance(const Performance& p) {
    if (!initialized_) return kErrNotInitialized;
    return accept_(encode_performance(queue_.next_sequence(), p, frame_, frame_bytes_));
  }

  Error send_prediction(const Prediction& p) {
    if (!initialized_) return kErrNotInitialized;
    return accept_(encode_prediction(queue_.next_sequence(), p, frame_, frame_bytes_));
  }

  int descriptors(struct pollfd* out, int max) const {
    if (!initialized_ || fd_ < 0 || max < 1) return 0;
    out[0].fd = fd_;
    out[0].events = phase_ == kConnecting ? POLLOUT : static_cast<short>(POLLIN | (blocked_ ? POLLOUT : 0));
    out[0].revents = 0;
    return 1;
  }

  int64_t next_timeout_ms() const {
    if (!initialized_) return -1;
    const int64_t now = clock_->now_ms();
    int64_t wait = -1;
    const int64_t sync = queue_.sync_deadline_ms();
    if (sync >= 0) lower_(wait, sync - now);
    switch (phase_) {
      case kConnecting:
      case kHandshake:
        lower_(wait, deadline_ms_ - now);
        break;
      case kIdle:
        if (queue_.size() > 0) lower_(wait, next_attempt_ms_ - now);
        break;
      case kStreaming:
        if (outstanding_()) lower_(wait, awaiting_since_ms_ + options_.ack_timeout_ms - now);
        if (!blocked_ && (written_ < used_ || send_seq_ < queue_.sendable_end())) lower_(wait, 0);
        break;
    }
    return wait;
  }

  void process(const struct pollfd* fds, int count) {
    if (!initialized_) return;
    for (int k = 0; k < count; ++k) {
      if (fds[k].revents != 0 && fd_ >= 0 && fds[k].fd == fd_) handle_io_(fds[k].revents);
    }
    int64_t now = clock_->now_ms();
    const int64_t sync = queue_.sync_deadline_ms();
    if (sync >= 0 && now >= sync && !queue_.sync()) fail_(kErrQueue, queue_.last_errno());
    if ((phase_ == kConnecting || phase_ == kHandshake) && now >= deadline_ms_) {
      fail_attempt_(kErrConnectTimeout, ETIMEDOUT, 0);
    } else if (phase_ == kStreaming && outstanding_() && now - awaiting_since_ms_ >= options_.ack_timeout_ms) {
      ++stalls_;
      lost_(kErrStalled, ETIMEDOUT);
    }
    now = clock_->now_ms();
    if (phase_ == kIdle && queue_.size() > 0 && now >= next_attempt_ms_) start_connect_();
    if ((phase_ == kHandshake || phase_ == kStreaming) && !blocked_) write_();
  }

  Error poll(int timeout_ms) {
    if (!initialized_) return kErrNotInitialized;
    process(0, 0);
    struct pollfd fds[1];
    const int n = descriptors(fds, 1);
    int64_t wait = next_timeout_ms();
    const int64_t limit = timeout_ms < 0 ? 0 : timeout_ms;
    if (wait < 0 || wait > limit) wait = limit;
    if (n == 0 && wait == 0) return kOk;
    const int rc = ::poll(fds, static_cast<nfds_t>(n), static_cast<int>(wait));
    if (rc < 0 && errno != EINTR) return fail_(kErrIo, errno);
    process(fds, rc > 0 ? n : 0);
    return kOk;
  }

  Error flush(int timeout_ms) {
    if (!initialized_) return kErrNotInitialized;
    const int64_t deadline = clock_->now_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    if (!queue_.sync()) fail_(kErrQueue, queue_.last_errno());
    while (queue_.size() > 0) {
      const int64_t left = deadline - clock_->now_ms();
      if (left <= 0) return kErrTimeout;
      poll(static_cast<int>(left));
    }
    return kOk;
  }

  Error close(int timeout_ms) {
    if (!initialized_) return kErrNotInitialized;
    const Error flushed = flush(timeout_ms);
    if (fd_ >= 0) disconnect_(kOk, 0);
    if (!queue_.sync()) return fail_(kErrQueue, queue_.last_errno());
    return flushed;
  }

  Stats stats() const {
    Stats s;
    s.accepted = accepted_;
    s.acknowledged = queue_.acknowledged();
    s.dropped = queue_.dropped();
    s.lost = queue_.lost();
    s.recovered = queue_.report().recovered;
    s.pending = queue_.size();
    s.refused = refused_;
    s.frames_sent = frames_sent_;
    s.resent = resent_;
    s.reconnects = reconnects_;
    s.connect_failures = connect_failures_;
    s.rejected = rejected_;
    s.stalls = stalls_;
    s.fsyncs = queue_.fsyncs();
    s.writes = writes_;
    return s;
  }

  Error last_error() const { return last_error_; }
  int last_errno() const { return last_errno_; }
  int last_status() const { return last_status_; }
  uint64_t stream_id() const { return queue_.stream_id(); }
  uint64_t pending() const { return queue_.size(); }
  uint64_t capacity() const { return queue_.slot_count(); }
  bool connected() const { return phase_ == kStreaming; }
  int socket() const { return fd_; }

 private:
  enum Phase { kIdle, kConnecting, kHandshake, kStreaming };

  static void lower_(int64_t& wait, int64_t candidate) {
    if (candidate < 0) candidate = 0;
    if (wait < 0 || candidate < wait) wait = candidate;
  }

  Error fail_(Error error, int sys_errno) {
    last_error_ = error;
    last_errno_ = sys_errno;
    return error;
  }

  Error refuse_(Error error) {
    ++refused_;
    return error;
  }

  Error accept_(std::size_t length) {
    if (length == 0) return refuse_(kErrRefused);
    if (!queue_.append(frame_, length)) {
      ++refused_;
      return fail_(kErrQueue, queue_.last_errno());
    }
    ++accepted_;
    return kOk;
  }

  void emit_(EventKind kind, Error error, int sys_errno, int status, const Address* address) {
    if (!options_.on_event) return;
    Event e;
    e.kind = kind;
    e.error = error;
    e.sys_errno = sys_errno;
    e.status = status;
    e.address = address;
    options_.on_event(options_.event_context, e);
  }

  // Frames with at least one byte on the wire that no acknowledgement covers yet.
  bool outstanding_() const { return started_seq_ != 0 && started_seq_ >= queue_.head(); }

  Address current_address_() const {
    Address to = addrs_[addr_index_ % addr_count_];
    battery_monitor::detail::set_port(to, options_.port);
    return to;
  }

  void start_connect_() {
    if (need_resolve_) {
      const int count = transport_->resolve(options_.host.c_str(), addrs_, kMaxAddresses);
      if (count <= 0) {
        fail_attempt_(kErrResolve, errno, 0);
        return;
      }
      addr_count_ = count;
      need_resolve_ = false;
    }
    const Address to = current_address_();
    bool in_progress = false;
    emit_(kEventConnecting, kOk, 0, 0, &to);
    const int64_t now = clock_->now_ms();
    const int fd = transport_->connect(to, link_options_, in_progress);
    if (fd < 0) {
      fail_attempt_(kErrConnect, errno, 0);
      return;
    }
    fd_ = fd;
    if (in_progress) {
      phase_ = kConnecting;
      deadline_ms_ = now + options_.connect_timeout_ms;
    } else {
      tcp_connected_(now);
    }
  }

  // TCP is up: the handshake goes first, and no frame before its answer.
  void tcp_connected_(int64_t now) {
    phase_ = kHandshake;
    deadline_ms_ = now + options_.connect_timeout_ms;
    blocked_ = false;
    rx_len_ = 0;
    used_ = encode_handshake(options_.battery_id.c_str(), queue_.stream_id(), buffer_, buffer_bytes_);
    written_ = 0;
    cursor_ = used_;  // the handshake is no frame
    write_();
  }

  void handle_io_(short revents) {
    if (phase_ == kConnecting) {
      if (revents & (POLLOUT | POLLERR | POLLHUP | POLLNVAL)) {
        const int err = transport_->connect_result(fd_);
        if (err == 0) {
          tcp_connected_(clock_->now_ms());
        } else {
          fail_attempt_(kErrConnect, err, 0);
        }
      }
      return;
    }
    if (revents & (POLLIN | POLLERR | POLLHUP | POLLNVAL)) {
      read_();
      if (fd_ < 0) return;
    }
    if (revents & POLLOUT) blocked_ = false;
  }

  // Reads the answer, then acknowledgements, as they come.
  void read_() {
    for (;;) {
      const long n = transport_->recv(fd_, rx_ + rx_len_, sizeof rx_ - rx_len_);
      if (n > 0) {
        rx_len_ += static_cast<std::size_t>(n);
        if (!consume_rx_()) return;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      const Error why = n == 0 ? kErrPeerClosed : kErrIo;
      const int err = n == 0 ? 0 : errno;
      if (phase_ == kHandshake) {
        fail_attempt_(why, err, 0);
      } else {
        lost_(why, err);
      }
      return;
    }
  }

  // false when the connection was closed.
  bool consume_rx_() {
    std::size_t at = 0;
    if (phase_ == kHandshake) {
      if (rx_len_ < kAnswerBytes) return true;
      Answer a;
      if (!decode_answer(rx_, a)) {
        fail_attempt_(kErrProtocol, EPROTO, 0);
        return false;
      }
      if (a.status != kStatusOk) {
        ++rejected_;
        last_status_ = a.status;
        fail_attempt_(kErrRejected, 0, a.status);
        return false;
      }
      at = kAnswerBytes;
      handshake_done_(a);
    }
    while (rx_len_ - at >= kAckBytes) {
      uint64_t seq = 0;
      if (!decode_ack(rx_ + at, seq) || seq > written_seq_) {
        // Corrupt, or acknowledging what was never sent: nothing on this connection is trusted.
        lost_(kErrProtocol, EPROTO);
        return false;
      }
      at += kAckBytes;
      if (queue_.acknowledge(seq) > 0) awaiting_since_ms_ = clock_->now_ms();
    }
    std::memmove(rx_, rx_ + at, rx_len_ - at);
    rx_len_ -= at;
    return true;
  }

  void handshake_done_(const Answer& a) {
    const int64_t now = clock_->now_ms();
    queue_.resume(a.resume_after);
    phase_ = kStreaming;
    connected_at_ms_ = now;
    awaiting_since_ms_ = now;
    failures_in_row_ = 0;
    if (ever_connected_) ++reconnects_;
    ever_connected_ = true;
    send_seq_ = queue_.head();
    buffered_seq_ = a.resume_after;
    started_seq_ = 0;
    written_seq_ = a.resume_after;
    used_ = written_ = cursor_ = 0;
    const Address to = current_address_();
    emit_(kEventConnected, kOk, 0, 0, &to);
  }

  // Fills the buffer from the queue when it is all written, and writes until the socket is full.
  void write_() {
    for (;;) {
      if (written_ == used_) {
        if (phase_ != kStreaming) {
          blocked_ = false;
          return;
        }
        used_ = written_ = cursor_ = 0;
        uint64_t next_from = send_seq_;
        const long n = queue_.read(send_seq_, buffer_, buffer_bytes_, next_from);
        if (n < 0) {
          fail_(kErrQueue, queue_.last_errno());
          return;
        }
        send_seq_ = next_from;
        used_ = static_cast<std::size_t>(n);
        flag_skips_();
        if (used_ == 0) {
          blocked_ = false;
          return;
        }
      }
      const long n = transport_->send(fd_, buffer_ + written_, used_ - written_);
      if (n > 0) {
        const int64_t now = clock_->now_ms();
        written_ += static_cast<std::size_t>(n);
        ++writes_;
        advance_frames_(now);
        if (written_ < used_) {
          blocked_ = true;  // the socket is full: wait for POLLOUT
          return;
        }
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        blocked_ = true;
        return;
      }
      const int err = n < 0 ? errno : EPIPE;
      if (phase_ == kHandshake) {
        fail_attempt_(kErrIo, err, 0);
      } else {
        lost_(kErrIo, err);
      }
      return;
    }
  }

  // Sets kFlagSkipped on each frame just read into the buffer whose sequence does not follow the
  // previous one placed on this connection (or resume_after): the readings between went to a full
  // queue or a corrupt slot, or were acknowledged past a resume_after that lags, and the flag tells
  // the service so. Decided here, per connection (after another resume_after the same frame may
  // follow directly); the queue keeps frames as encoded.
  void flag_skips_() {
    for (std::size_t at = 0; at < used_; at += get_u16(buffer_ + at)) {
      const uint64_t seq = get_u64(buffer_ + at + 4);
      set_frame_flags(buffer_ + at, seq == buffered_seq_ + 1 ? 0 : kFlagSkipped);
      buffered_seq_ = seq;
    }
  }

  // Frames carry their length and sequence: walk the ones the last write reached.
  void advance_frames_(int64_t now) {
    while (cursor_ < written_) {
      const std::size_t length = get_u16(buffer_ + cursor_);
      const uint64_t seq = get_u64(buffer_ + cursor_ + 4);
      if (!outstanding_()) awaiting_since_ms_ = now;
      started_seq_ = seq;
      if (written_ < cursor_ + length) return;
      cursor_ += length;
      written_seq_ = seq;
      ++frames_sent_;
      if (seq <= highest_sent_) {
        ++resent_;
      } else {
        highest_sent_ = seq;
      }
    }
  }

  void close_fd_() {
    if (fd_ >= 0 && transport_) transport_->close(fd_);
    fd_ = -1;
  }

  // Everything in flight is forgotten: the next handshake's resume_after says where to continue.
  void disconnect_(Error why, int sys_errno) {
    const bool was_streaming = phase_ == kStreaming;
    close_fd_();
    phase_ = kIdle;
    blocked_ = false;
    used_ = written_ = cursor_ = rx_len_ = 0;
    started_seq_ = 0;
    if (was_streaming) emit_(kEventDisconnected, why, sys_errno, 0, 0);
  }

  void fail_attempt_(Error why, int sys_errno, int status) {
    const int64_t now = clock_->now_ms();
    close_fd_();
    phase_ = kIdle;
    blocked_ = false;
    used_ = written_ = cursor_ = rx_len_ = 0;
    started_seq_ = 0;
    ++connect_failures_;
    ++addr_index_;
    if (!numeric_host_ && ++failures_in_row_ >= addr_count_) {
      need_resolve_ = true;
      failures_in_row_ = 0;
    }
    fail_(why, sys_errno);
    emit_(kEventConnectFailed, why, sys_errno, status, 0);
    schedule_retry_(now);
  }

  void lost_(Error why, int sys_errno) {
    const int64_t now = clock_->now_ms();
    disconnect_(why, sys_errno);
    fail_(why, sys_errno);
    if (now - connected_at_ms_ >= options_.stable_connection_ms) backoff_ms_ = options_.backoff_initial_ms;
    schedule_retry_(now);
  }

  void schedule_retry_(int64_t now) {
    const int64_t half = backoff_ms_ / 2;
    const int64_t jitter = static_cast<int64_t>(rng_() % static_cast<std::minstd_rand::result_type>(half + 1));
    next_attempt_ms_ = now + backoff_ms_ - half + jitter;
    backoff_ms_ = backoff_ms_ > options_.backoff_max_ms / 2 ? options_.backoff_max_ms : backoff_ms_ * 2;
  }

  bool initialized_;
  ClientOptions options_;
  battery_monitor::ClientOptions link_options_;
  uint8_t* owned_;
  Transport* transport_;
  Clock* clock_;
  battery_monitor::detail::PosixTransport posix_;
  battery_monitor::detail::SteadyClock steady_;
  Queue queue_;
  uint8_t* buffer_;  // the handshake, then frames read from the queue
  std::size_t buffer_bytes_;
  uint8_t* frame_;   // one frame being encoded
  std::size_t frame_bytes_;
  Address addrs_[kMaxAddresses];
  int addr_count_;
  int addr_index_;
  int failures_in_row_;
  bool numeric_host_;
  bool need_resolve_;
  int fd_;
  Phase phase_;
  bool blocked_;
  bool ever_connected_;
  int64_t next_attempt_ms_;
  int64_t deadline_ms_;
  int64_t connected_at_ms_;
  int64_t awaiting_since_ms_;  // the oldest unacknowledged frame's first byte, or the last ack
  int backoff_ms_;
  std::size_t used_;     // bytes in buffer_
  std::size_t written_;  // of which written
  std::size_t cursor_;   // start of the first frame not written whole
  uint8_t rx_[64];
  std::size_t rx_len_;
  uint64_t send_seq_;     // the next sequence to read from the queue
  uint64_t buffered_seq_;  // the last frame read into buffer_ on this connection (or resume_after)
  uint64_t started_seq_;  // the last frame with a byte written on this connection (0: none)
  uint64_t written_seq_;  // the last frame written whole on this connection (or resume_after)
  uint64_t highest_sent_;
  uint64_t accepted_;
  uint64_t refused_;
  uint64_t frames_sent_;
  uint64_t resent_;
  uint64_t reconnects_;
  uint64_t connect_failures_;
  uint64_t rejected_;
  uint64_t stalls_;
  uint64_t writes_;
  Error last_error_;
  int last_errno_;
  int last_status_;
  std::minstd_rand rng_;
};

}  // namespace detail
}  // namespace v2
}  // namespace battery_monitor

#endif  // BATTERY_MONITOR_V2_HPP
