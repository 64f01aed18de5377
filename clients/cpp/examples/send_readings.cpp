// send_readings: sends simulated battery readings to a collector, as an edge device would.
//
//   send_readings --host 127.0.0.1 --binary-port 23456 --json-port 23457 --battery-id pack-1
//                 --count 100 --rate 10 [--timeout 10] [--every 10] [--buffer 10000] [--cells N]
//   send_readings --protocol v2 --host 127.0.0.1 --port 23458 --battery-id pack-1 --queue FILE
//                 [--queue-bytes N] [--fsync always|batch|never] [--resume] [--ack-timeout MS]
//                 [--count --rate --timeout --every --cells]
//
// Sends --count readings at --rate per second (0: as fast as the collector takes them), and a
// performance record plus a prediction (tagged with --battery-id) with the first reading and
// every --every readings after it.
//
// Legacy protocol (the default): readings go as binary frames, or with --cells N as JSON
// messages carrying N cell voltages and N cell temperatures (a frame has no room for cells); the
// records as JSON. Then it flushes and closes. Prints one line, "sent N frames, M messages,
// dropped D", and exits 0 only if every frame and message was written to the collector's sockets
// within --timeout seconds after the last reading was produced; 1 if not; 2 on a usage error.
// Frames carry no pack id: the collector maps the connection to a battery_id by its own
// configuration.
//
// --protocol v2: every reading and record is a v2 frame (cells included), accepted once written
// to the queue file --queue (created anew, a new stream, unless --resume continues the file's
// stream and sends what it still holds). After the last reading (or SIGTERM/SIGINT, which stop
// the readings) it waits up to --timeout seconds for the acknowledgements (a second signal stops
// the wait), syncs the queue and prints one line:
//   v2 accepted A, acknowledged K, dropped D, lost L, recovered R, pending P, stream S
// (A: accepted by this run; K: acknowledged in this run, recovered ones included; D: dropped by a
// full queue and L: unreadable after a crash, over the file's life; R: found in the file at start;
// P: still in the file; S: the stream id in hex). Exits 0 only if nothing accepted is left
// unacknowledged (P, D and L all 0); 1 if not, or when the queue cannot be opened; 2 on a usage
// error. What is pending stays in the file for the next --resume.

#include "battery_monitor/client.hpp"
#include "battery_monitor/v2.hpp"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <signal.h>
#include <string>
#include <vector>

namespace {

struct Args {
  std::string host;
  int binary_port;
  int json_port;
  std::string battery_id;
  long count;
  double rate;
  double timeout_s;
  long every;
  long buffer;
  long cells;
  bool v2;
  int v2_port;
  std::string queue;
  long queue_bytes;
  battery_monitor::v2::FsyncPolicy fsync;
  bool resume;
  long ack_timeout_ms;

  Args()
      : host("127.0.0.1"), binary_port(battery_monitor::kDefaultBinaryPort),
        json_port(battery_monitor::kDefaultJsonPort), battery_id("pack-1"), count(100), rate(10),
        timeout_s(10), every(10), buffer(10000), cells(0), v2(false), v2_port(battery_monitor::v2::kDefaultPort),
        queue("send_readings.queue"), queue_bytes(1024 * 1024), fsync(battery_monitor::v2::kFsyncAlways), resume(false),
        ack_timeout_ms(10000) {}
};

void usage(std::FILE* out) {
  std::fprintf(out,
               "usage: send_readings [--host H] [--binary-port P] [--json-port P] [--battery-id ID]\n"
               "                     [--count N] [--rate HZ] [--timeout S] [--every K] [--buffer N] [--cells N]\n"
               "  --host         collector address (127.0.0.1)\n"
               "  --binary-port  frame port (23456)\n"
               "  --json-port    JSON message port (23457)\n"
               "  --battery-id   battery_id for the JSON messages (pack-1)\n"
               "  --count        readings to send (100)\n"
               "  --rate         readings per second; 0 sends as fast as the collector reads (10)\n"
               "  --timeout      seconds allowed for delivery after the last reading (10)\n"
               "  --every        a performance record and a prediction every K readings (10)\n"
               "  --buffer       readings kept while the collector is unreachable (10000)\n"
               "  --cells        send each reading with this many cells (1-1024); legacy: as JSON, not as a frame (0)\n"
               "  --protocol     legacy (binary frames and JSON) or v2 (sequenced, acknowledged; legacy)\n"
               "v2 only:\n"
               "  --port         v2 port (23458)\n"
               "  --queue        the queue file (send_readings.queue); a new stream unless --resume\n"
               "  --queue-bytes  its size when created (1048576)\n"
               "  --fsync        always, batch (every 64 readings or 200 ms) or never (always)\n"
               "  --resume       continue the queue file's stream and send what it holds\n"
               "  --ack-timeout  ms to wait for an acknowledgement before reconnecting (10000)\n");
}

bool parse_long(const char* s, long min, long max, long& out) {
  char* end = 0;
  errno = 0;
  const long v = std::strtol(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < min || v > max) return false;
  out = v;
  return true;
}

bool parse_double(const char* s, double min, double& out) {
  char* end = 0;
  const double v = std::strtod(s, &end);
  if (end == s || *end != '\0' || !std::isfinite(v) || v < min) return false;
  out = v;
  return true;
}

// Returns 0 when the arguments are good, else the exit status to use.
int parse_args(int argc, char** argv, Args& a) {
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      usage(stdout);
      std::exit(0);
    }
    if (flag == "--resume") {
      a.resume = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "send_readings: %s needs a value\n", flag.c_str());
      return 2;
    }
    const char* value = argv[++i];
    long port = 0;
    bool ok = true;
    if (flag == "--host") {
      a.host = value;
    } else if (flag == "--binary-port") {
      ok = parse_long(value, 1, 65535, port);
      a.binary_port = static_cast<int>(port);
    } else if (flag == "--json-port") {
      ok = parse_long(value, 1, 65535, port);
      a.json_port = static_cast<int>(port);
    } else if (flag == "--battery-id") {
      a.battery_id = value;
      ok = battery_monitor::is_valid_battery_id(a.battery_id.c_str());
    } else if (flag == "--count") {
      ok = parse_long(value, 0, 100000000L, a.count);
    } else if (flag == "--rate") {
      ok = parse_double(value, 0, a.rate);
    } else if (flag == "--timeout") {
      ok = parse_double(value, 0, a.timeout_s);
    } else if (flag == "--every") {
      ok = parse_long(value, 1, 100000000L, a.every);
    } else if (flag == "--buffer") {
      ok = parse_long(value, 1, 100000000L, a.buffer);
    } else if (flag == "--cells") {
      ok = parse_long(value, 0, static_cast<long>(battery_monitor::kMaxCells), a.cells);
    } else if (flag == "--protocol") {
      ok = std::strcmp(value, "legacy") == 0 || std::strcmp(value, "v2") == 0;
      a.v2 = std::strcmp(value, "v2") == 0;
    } else if (flag == "--port") {
      ok = parse_long(value, 1, 65535, port);
      a.v2_port = static_cast<int>(port);
    } else if (flag == "--queue") {
      a.queue = value;
      ok = !a.queue.empty();
    } else if (flag == "--queue-bytes") {
      ok = parse_long(value, 4096, 1L << 30, a.queue_bytes);
    } else if (flag == "--ack-timeout") {
      ok = parse_long(value, 1, 3600000, a.ack_timeout_ms);
    } else if (flag == "--fsync") {
      ok = true;
      if (std::strcmp(value, "always") == 0) {
        a.fsync = battery_monitor::v2::kFsyncAlways;
      } else if (std::strcmp(value, "batch") == 0) {
        a.fsync = battery_monitor::v2::kFsyncBatch;
      } else if (std::strcmp(value, "never") == 0) {
        a.fsync = battery_monitor::v2::kFsyncNever;
      } else {
        ok = false;
      }
    } else {
      std::fprintf(stderr, "send_readings: unknown option %s\n", flag.c_str());
      usage(stderr);
      return 2;
    }
    if (!ok) {
      std::fprintf(stderr, "send_readings: bad value for %s: %s\n", flag.c_str(), value);
      return 2;
    }
  }
  return 0;
}

typedef std::chrono::steady_clock Clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Rounded up, so waiting for a time never turns into a busy loop in its last millisecond.
int ms_until(Clock::time_point t) {
  const int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(t - Clock::now()).count();
  return us <= 0 ? 0 : static_cast<int>((us + 999) / 1000);
}

// To a BMS's resolution: 1/steps of the unit.
double round_to(double value, double steps) { return std::floor(value * steps + 0.5) / steps; }

// A pack discharging under a varying load: voltage sags with the load and with the charge used,
// the cells warm up, and every value carries a little sensor noise. Its cells (when asked for)
// share the pack voltage, each off by a fixed imbalance, and sit warmer towards the pack's middle.
class PackSimulator {
 public:
  explicit PackSimulator(std::size_t cells)
      : rng_(42), noise_(-1.0, 1.0), soc_(0.9), temp_(25.0), last_voltage_(0), last_current_(0), offsets_(cells), volts_(cells), temps_(cells) {
    for (std::size_t i = 0; i < cells; ++i) offsets_[i] = 0.02 * noise_(rng_);
  }

  battery_monitor::Reading next(float device_time, double dt) {
    const double load = -60.0 - 30.0 * std::sin(device_time / 15.0) + 5.0 * noise_(rng_);
    soc_ -= (-load) * dt / (3600.0 * 100.0);  // 100 Ah pack
    if (soc_ < 0.05) soc_ = 0.9;              // "recharged": keeps long runs in range
    temp_ += (0.0004 * load * load - 0.1 * (temp_ - 25.0)) * dt / 10.0;  // settles near 40 C
    const double voltage = 330.0 + 80.0 * soc_ + load * 0.05 + 0.2 * noise_(rng_);
    last_voltage_ = voltage;
    last_current_ = load;
    return battery_monitor::Reading(device_time, static_cast<float>(voltage), static_cast<float>(load),
                                    static_cast<float>(temp_ + 0.1 * noise_(rng_)));
  }

  // The reading with its cells, as a BMS reports them: volts to the millivolt, temperatures to
  // 0.1 C. The reading borrows this simulator's arrays (and battery_id) until the next call.
  battery_monitor::CellReading with_cells(const battery_monitor::Reading& r, const char* battery_id) {
    const std::size_t n = volts_.size();
    double sum = 0;
    for (std::size_t i = 0; i < n; ++i) {
      volts_[i] = round_to(r.pack_voltage / static_cast<double>(n) + offsets_[i], 1000);
      const double middle = 1.0 - std::fabs(2.0 * static_cast<double>(i) / static_cast<double>(n) - 1.0);
      temps_[i] = round_to(r.cell_temp + 3.0 * middle + 0.2 * noise_(rng_), 10);
      sum += volts_[i];
    }
    battery_monitor::CellReading c;
    c.pack_voltage = round_to(sum, 1000);  // the pack is its cells in series
    c.pack_current = round_to(r.pack_current, 1000);
    c.cell_temp = round_to(r.cell_temp, 10);
    c.cell_voltages = &volts_[0];
    c.cell_voltage_count = n;
    c.cell_temps = &temps_[0];
    c.cell_temp_count = n;
    c.has_timestamp = true;
    c.timestamp = unix_now();
    c.has_device_time = true;
    c.device_time = r.device_time;
    c.battery_id = battery_id;
    return c;
  }

  // battery_id is borrowed by the record: it must outlive the send_performance() call.
  battery_monitor::PerformanceRecord performance(const char* battery_id) const {
    battery_monitor::PerformanceRecord r;
    r.pack_voltage = last_voltage_;
    r.pack_current = last_current_;
    r.cell_temp = temp_;
    r.capacity_remaining = 100.0 * soc_;
    r.cycle_count = 412;
    r.age_months = 18;
    r.health_score = 92.3;
    r.has_timestamp = true;
    r.timestamp = unix_now();
    r.battery_id = battery_id;
    return r;
  }

  battery_monitor::Prediction prediction(const char* battery_id) const {
    battery_monitor::Prediction p;
    p.remaining_life_hours = 15000.5 - 2.0 * (temp_ - 25.0);
    p.remaining_cycles = 1200;
    p.degradation_rate = 0.021;
    p.has_timestamp = true;
    p.timestamp = unix_now();
    p.battery_id = battery_id;
    return p;
  }

 private:
  std::minstd_rand rng_;
  std::uniform_real_distribution<double> noise_;
  double soc_;
  double temp_;
  double last_voltage_;
  double last_current_;
  std::vector<double> offsets_;
  std::vector<double> volts_;
  std::vector<double> temps_;
};


// SIGTERM/SIGINT: the first stops the readings, a second stops the wait for acknowledgements.
volatile sig_atomic_t g_signals = 0;

void on_signal(int) { g_signals = g_signals + 1; }

void install_signal_handlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;  // no SA_RESTART: a signal ends the current poll() at once
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, 0);
  sigaction(SIGINT, &sa, 0);
}

int run_v2(const Args& args) {
  namespace v2 = battery_monitor::v2;
  install_signal_handlers();
  v2::ClientOptions options;
  options.host = args.host;
  options.port = args.v2_port;
  options.battery_id = args.battery_id;
  options.queue.path = args.queue;
  options.queue.file_bytes = static_cast<std::size_t>(args.queue_bytes);
  options.queue.max_cells = static_cast<std::size_t>(args.cells);
  options.queue.fsync = args.fsync;
  options.queue.mode = args.resume ? v2::kOpenOrCreate : v2::kCreateNew;
  options.ack_timeout_ms = static_cast<int>(args.ack_timeout_ms);
  const char* problem = 0;
  if (v2::Client::validate(options, &problem) != battery_monitor::kOk) {
    std::fprintf(stderr, "send_readings: invalid options: %s\n", problem);
    return 2;
  }
  v2::Client client;
  if (client.init(options) != battery_monitor::kOk) {
    std::fprintf(stderr, "send_readings: %s: %s (%s)\n", args.queue.c_str(), battery_monitor::error_name(client.last_error()),
                 std::strerror(client.last_errno()));
    return 1;
  }
  const v2::QueueReport& report = client.report();
  if (report.recreated) std::fprintf(stderr, "send_readings: %s had no readable header: started a new stream\n", args.queue.c_str());
  if (report.lost > 0) {
    std::fprintf(stderr, "send_readings: %s: %llu readings unreadable (torn or corrupt)\n", args.queue.c_str(),
                 static_cast<unsigned long long>(report.lost));
  }
  PackSimulator pack(static_cast<std::size_t>(args.cells));
  const int timeout_ms = static_cast<int>(args.timeout_s * 1000.0);
  const Clock::time_point start = Clock::now();
  battery_monitor::Error failure = battery_monitor::kOk;
  for (long i = 0; i < args.count && g_signals == 0; ++i) {
    if (args.rate > 0) {
      const Clock::time_point due = start + std::chrono::microseconds(static_cast<int64_t>(i * 1e6 / args.rate));
      while (Clock::now() < due && g_signals == 0) client.poll(ms_until(due));
    } else {
      // As fast as the service acknowledges: keep room for this round's three frames rather than
      // drop the oldest, but not for ever.
      const Clock::time_point give_up = Clock::now() + std::chrono::milliseconds(timeout_ms);
      while (client.pending() + 3 > client.capacity() && Clock::now() < give_up && g_signals == 0) client.poll(ms_until(give_up));
    }
    if (g_signals != 0) break;
    const double dt = args.rate > 0 ? 1.0 / args.rate : 0.01;
    const battery_monitor::Reading r = pack.next(static_cast<float>(seconds_since(start)), dt);
    v2::DataReading reading;
    reading.timestamp = unix_now();
    reading.pack_voltage = r.pack_voltage;
    reading.pack_current = r.pack_current;
    reading.cell_temp = r.cell_temp;
    if (args.cells > 0) {
      const battery_monitor::CellReading c = pack.with_cells(r, args.battery_id.c_str());
      reading.pack_voltage = c.pack_voltage;  // the sum of its cells
      reading.cell_voltages = c.cell_voltages;
      reading.cell_voltage_count = c.cell_voltage_count;
      reading.cell_temps = c.cell_temps;
      reading.cell_temp_count = c.cell_temp_count;
    }
    battery_monitor::Error e = client.send_reading(reading);
    if (i % args.every == 0 && e == battery_monitor::kOk) {
      const battery_monitor::PerformanceRecord p = pack.performance(0);
      v2::Performance performance;
      performance.timestamp = p.timestamp;
      performance.pack_voltage = p.pack_voltage;
      performance.pack_current = p.pack_current;
      performance.cell_temp = p.cell_temp;
      performance.capacity_remaining = p.capacity_remaining;
      performance.cycle_count = p.cycle_count;
      performance.age_months = p.age_months;
      performance.health_score = p.health_score;
      e = client.send_performance(performance);
      const battery_monitor::Prediction q = pack.prediction(0);
      v2::Prediction prediction;
      prediction.timestamp = q.timestamp;
      prediction.remaining_life_hours = q.remaining_life_hours;
      prediction.remaining_cycles = q.remaining_cycles;
      prediction.degradation_rate = q.degradation_rate;
      if (e == battery_monitor::kOk) e = client.send_prediction(prediction);
    }
    if (e != battery_monitor::kOk) {
      // The queue file cannot take readings (disk full, I/O error): nothing more can be accepted.
      failure = e;
      std::fprintf(stderr, "send_readings: reading %ld not accepted: %s (%s)\n", i, battery_monitor::error_name(e), std::strerror(client.last_errno()));
      break;
    }
  }

  // Wait for the acknowledgements; a second signal ends the wait.
  client.flush(0);  // syncs the queue, so a batch policy's last readings can go
  const Clock::time_point give_up = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (client.pending() > 0 && Clock::now() < give_up && g_signals < 2) client.poll(ms_until(give_up));
  client.close(0);

  const v2::Stats s = client.stats();
  std::printf("v2 accepted %llu, acknowledged %llu, dropped %llu, lost %llu, recovered %llu, pending %llu, stream %016llx\n",
              static_cast<unsigned long long>(s.accepted), static_cast<unsigned long long>(s.acknowledged), static_cast<unsigned long long>(s.dropped),
              static_cast<unsigned long long>(s.lost), static_cast<unsigned long long>(s.recovered), static_cast<unsigned long long>(s.pending),
              static_cast<unsigned long long>(client.stream_id()));
  std::fflush(stdout);
  if (s.pending > 0 || s.dropped > 0 || s.lost > 0 || failure != battery_monitor::kOk) {
    std::fprintf(stderr, "send_readings: not every accepted reading was acknowledged (%llu failed connection attempts; last error: %s, errno %d, status %d)\n",
                 static_cast<unsigned long long>(s.connect_failures), battery_monitor::error_name(client.last_error()), client.last_errno(),
                 client.last_status());
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  const int bad = parse_args(argc, argv, args);
  if (bad) return bad;
  if (args.v2) return run_v2(args);

  battery_monitor::ClientOptions options;
  options.host = args.host;
  options.binary_port = args.binary_port;
  options.json_port = args.json_port;
  options.frame_capacity = static_cast<std::size_t>(args.buffer);
  // Room for a performance record and a prediction per buffered reading, at about 300 bytes a pair.
  options.message_buffer_bytes = static_cast<std::size_t>(args.buffer) * 300;
  if (options.message_buffer_bytes < battery_monitor::kMaxMessageBytes) options.message_buffer_bytes = battery_monitor::kMaxMessageBytes;
  options.max_cells = static_cast<std::size_t>(args.cells);
  // With cells, a ring of k times the longest message holds any k messages: that is how the fast
  // path below knows there is room without dropping any. One round queues at most three.
  const std::size_t longest_message = battery_monitor::max_cell_message_bytes(options.max_cells);
  if (args.cells > 0 && options.message_buffer_bytes < 3 * longest_message) options.message_buffer_bytes = 3 * longest_message;
  const std::size_t message_slots = options.message_buffer_bytes / longest_message;
  battery_monitor::Client client;
  const char* problem = 0;
  if (battery_monitor::Client::validate(options, &problem) != battery_monitor::kOk) {
    std::fprintf(stderr, "send_readings: invalid options: %s\n", problem);
    return 2;
  }
  const battery_monitor::Error started = client.init(options);
  if (started != battery_monitor::kOk) {
    std::fprintf(stderr, "send_readings: %s\n", battery_monitor::error_name(started));
    return 1;
  }
  PackSimulator pack(static_cast<std::size_t>(args.cells));

  const int timeout_ms = static_cast<int>(args.timeout_s * 1000.0);
  const Clock::time_point start = Clock::now();
  long messages_queued = 0;
  for (long i = 0; i < args.count; ++i) {
    if (args.rate > 0) {
      // Keep the client working (connecting, writing) while waiting for the next reading's time.
      const Clock::time_point due = start + std::chrono::microseconds(static_cast<int64_t>(i * 1e6 / args.rate));
      while (Clock::now() < due) client.poll(ms_until(due));
    } else {
      // As fast as possible: wait for room rather than overwrite readings, but not for ever. A
      // reading and the two records take at most three message slots.
      const Clock::time_point give_up = Clock::now() + std::chrono::milliseconds(timeout_ms);
      while ((args.cells > 0 ? client.pending_messages() + 3 > message_slots : client.pending_frames() >= options.frame_capacity) &&
             Clock::now() < give_up) {
        client.poll(ms_until(give_up));
      }
    }
    const double device_time = seconds_since(start);
    const double dt = args.rate > 0 ? 1.0 / args.rate : 0.01;
    const battery_monitor::Reading reading = pack.next(static_cast<float>(device_time), dt);
    if (args.cells == 0) {
      client.send_reading(reading);
    } else if (client.send_cell_reading(pack.with_cells(reading, args.battery_id.c_str())) == battery_monitor::kOk) {
      ++messages_queued;
    }
    if (i % args.every == 0) {
      if (client.send_performance(pack.performance(args.battery_id.c_str())) == battery_monitor::kOk) ++messages_queued;
      if (client.send_prediction(pack.prediction(args.battery_id.c_str())) == battery_monitor::kOk) ++messages_queued;
    }
  }

  const bool flushed = client.flush(timeout_ms) == battery_monitor::kOk;
  // Half-close and give the collector a moment to confirm by ending its side in order, which it
  // does after reading everything.
  if (flushed && client.close(2000) != battery_monitor::kOk) {
    std::fprintf(stderr, "send_readings: written but not confirmed by the collector (%s, errno %d)\n",
                 battery_monitor::error_name(client.last_error()), client.last_errno());
  }

  const battery_monitor::Stats s = client.stats();
  const uint64_t dropped = s.frames_dropped + s.messages_dropped;
  std::printf("sent %llu frames, %llu messages, dropped %llu\n", static_cast<unsigned long long>(s.frames_sent),
              static_cast<unsigned long long>(s.messages_sent), static_cast<unsigned long long>(dropped));
  const uint64_t frames_expected = args.cells > 0 ? 0 : static_cast<uint64_t>(args.count);
  const bool delivered = flushed && dropped == 0 && s.frames_sent == frames_expected &&
                         s.messages_sent == static_cast<uint64_t>(messages_queued);
  if (!delivered) {
    std::fprintf(stderr, "send_readings: not everything was delivered within %g s (pending %lu frames, %lu messages, "
                 "%llu failed connection attempts; last error: %s, errno %d)\n", args.timeout_s,
                 static_cast<unsigned long>(client.pending_frames()), static_cast<unsigned long>(client.pending_messages()),
                 static_cast<unsigned long long>(s.connect_failures), battery_monitor::error_name(client.last_error()), client.last_errno());
    return 1;
  }
  return 0;
}
