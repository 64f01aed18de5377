// test_client: the Client over real TCP sockets on 127.0.0.1 and ::1, against listeners in this
// process.
//
// Everything runs on one thread: the client is non-blocking and the test listeners are too, so
// the test interleaves the client's calls and listener.pump(). Faults the kernel will not produce
// on demand over loopback (short writes at any byte, EINTR, a connect that fails at once, a slow
// name lookup, chosen addresses) come from TestTransport, which wraps the real PosixTransport
// through the library's Transport seam; timers that must fire at an exact point (backoff, stall,
// write delay, connect deadline) run on a ManualClock through the Clock seam. Neither replaces
// the sockets: bytes always travel through the kernel.
//
// Frames are checked whole: each reading carries its sequence number in device_time and values
// derived from it, so a torn or misaligned frame decodes to a reading that does not match.

#include "battery_monitor/client.hpp"
#include "check.hpp"

#include <arpa/inet.h>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <signal.h>
#include <string>
#include <sys/time.h>
#include <thread>
#include <vector>

using battery_monitor::Client;
using battery_monitor::ClientOptions;
using battery_monitor::Error;
using battery_monitor::Reading;
using battery_monitor::Stats;
namespace bm = battery_monitor;
namespace detail = battery_monitor::detail;

// Counts allocations while g_count_allocations is set, for the no-heap-after-init test. Replacing
// the global operator new is standard C++ and leaves malloc (and the sanitizers' view of it) alone.
static bool g_count_allocations = false;
static long g_allocations = 0;

// Every replacement is kept out of line: g++ 12 (at -O2 -fno-exceptions, -Ofast) otherwise inlines one
// side of a pair into a caller, sees malloc() matched with operator delete (or operator new with
// free()) and warns -Wmismatched-new-delete, which is no mismatch for a replaced pair.
__attribute__((noinline)) void* operator new(std::size_t n) {
  if (g_count_allocations) ++g_allocations;
  void* p = std::malloc(n ? n : 1);
  if (!p) std::abort();
  return p;
}
__attribute__((noinline)) void* operator new[](std::size_t n) { return operator new(n); }
// The nothrow forms too (init() uses one), so every new is paired with this file's delete.
__attribute__((noinline)) void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  if (g_count_allocations) ++g_allocations;
  return std::malloc(n ? n : 1);
}
__attribute__((noinline)) void* operator new[](std::size_t n, const std::nothrow_t& tag) noexcept { return operator new(n, tag); }
__attribute__((noinline)) void operator delete(void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete[](void* p) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
__attribute__((noinline)) void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

typedef std::chrono::steady_clock SteadyClock;

int64_t ms_since(SteadyClock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - start).count();
}

class ManualClock : public bm::Clock {
 public:
  explicit ManualClock(int64_t start) : now_(start) {}
  int64_t now_ms() { return now_; }
  void advance(int64_t ms) { now_ += ms; }

 private:
  int64_t now_;
};

bm::Address make_address(const char* numeric) {
  bm::Address a;
  std::memset(&a, 0, sizeof a);
  struct sockaddr_in* v4 = reinterpret_cast<struct sockaddr_in*>(&a.storage);
  struct sockaddr_in6* v6 = reinterpret_cast<struct sockaddr_in6*>(&a.storage);
  if (::inet_pton(AF_INET, numeric, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    a.length = sizeof *v4;
  } else if (::inet_pton(AF_INET6, numeric, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    a.length = sizeof *v6;
  }
  return a;
}

std::string address_text(const bm::Address& a) {
  char buf[64] = "";
  if (a.storage.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<const struct sockaddr_in6*>(&a.storage)->sin6_addr, buf, sizeof buf);
  } else {
    ::inet_ntop(AF_INET, &reinterpret_cast<const struct sockaddr_in*>(&a.storage)->sin_addr, buf, sizeof buf);
  }
  return buf;
}

// The real PosixTransport with faults switched on by the test, each the worst a kernel or a
// resolver may legally do.
class TestTransport : public bm::Transport {
 public:
  TestTransport()
      : short_writes(false), write_budget(-1), eintr(false), connect_errno(0), force_in_progress(false), lookup_clock(0), lookup_ms(0),
        resolves(0), connects(0), rng_(99), tick_(0) {}

  // Each send() writes a random number of bytes (at least one) or, one time in four, nothing.
  bool short_writes;
  // When >= 0: the bytes send() still accepts before it says EAGAIN on every call.
  long write_budget;
  // Every other send(), recv() and connect() is "interrupted by a signal" first.
  bool eintr;
  // connect() fails at once with this errno (ENETUNREACH, EMFILE...).
  int connect_errno;
  // connect() reports "in progress" even when the kernel finished at once (always legal).
  bool force_in_progress;
  // resolve() returns these addresses instead of asking the resolver...
  std::vector<bm::Address> addresses;
  // ...and takes this long on this clock.
  ManualClock* lookup_clock;
  int64_t lookup_ms;
  int resolves;
  int connects;

  int resolve(const char* host, bm::Address* out, int max) {
    ++resolves;
    if (lookup_clock) lookup_clock->advance(lookup_ms);
    if (addresses.empty()) return real_.resolve(host, out, max);
    int n = 0;
    for (; n < max && n < static_cast<int>(addresses.size()); ++n) out[n] = addresses[static_cast<std::size_t>(n)];
    return n;
  }

  int connect(const bm::Address& to, const ClientOptions& options, bool& in_progress) {
    ++connects;
    if (connect_errno) {
      errno = connect_errno;
      return -1;
    }
    const int fd = real_.connect(to, options, in_progress);
    if (fd >= 0 && force_in_progress) in_progress = true;
    if (fd >= 0 && eintr && interrupt_()) in_progress = true;  // POSIX: EINTR from connect() means it carries on
    return fd;
  }

  int connect_result(int fd) { return real_.connect_result(fd); }

  long send(int fd, const uint8_t* data, std::size_t len) {
    if (eintr && interrupt_()) {
      errno = EINTR;
      return -1;
    }
    if (write_budget >= 0) {
      if (write_budget == 0) {
        errno = EAGAIN;
        return -1;
      }
      if (len > static_cast<std::size_t>(write_budget)) len = static_cast<std::size_t>(write_budget);
    }
    if (short_writes) {
      if (rng_() % 4 == 0) {
        errno = EAGAIN;
        return -1;
      }
      if (len > 1) len = 1 + rng_() % len;
    }
    const long n = real_.send(fd, data, len);
    if (n > 0 && write_budget >= 0) write_budget -= n;
    return n;
  }

  long recv(int fd, uint8_t* buffer, std::size_t len) {
    if (eintr && interrupt_()) {
      errno = EINTR;
      return -1;
    }
    return real_.recv(fd, buffer, len);
  }

  void shutdown_write(int fd) { real_.shutdown_write(fd); }
  void close(int fd) { real_.close(fd); }

 private:
  bool interrupt_() { return (++tick_ & 1) != 0; }

  detail::PosixTransport real_;
  std::minstd_rand rng_;
  unsigned tick_;
};

// Every value is exact in float32, so encode(make_reading(n)) is a single known byte pattern.
Reading make_reading(uint32_t seq) {
  return Reading(static_cast<float>(seq), 350.0f + static_cast<float>(seq % 1000) * 0.125f, -100.0f + static_cast<float>(seq % 777) * 0.25f,
                 20.0f + static_cast<float>(seq % 97) * 0.0625f);
}

std::string frame_of(uint32_t seq) {
  uint8_t f[16];
  battery_monitor::encode_frame(make_reading(seq), f);
  return std::string(reinterpret_cast<const char*>(f), 16);
}

// Splits a received stream into sequence numbers. False if the length is not whole frames or
// any frame is not exactly one of ours (which is what a torn or shifted frame would look like).
bool frames_to_seqs(const std::string& stream, std::vector<uint32_t>& seqs) {
  seqs.clear();
  if (stream.size() % 16 != 0) return false;
  for (std::size_t off = 0; off < stream.size(); off += 16) {
    Reading r;
    if (!battery_monitor::decode_frame(reinterpret_cast<const uint8_t*>(stream.data() + off), r)) return false;
    if (!(r.device_time >= 0 && r.device_time < 16777216.0f)) return false;
    const uint32_t seq = static_cast<uint32_t>(r.device_time);
    if (stream.compare(off, 16, frame_of(seq)) != 0) return false;
    seqs.push_back(seq);
  }
  return true;
}

bool strictly_increasing(const std::vector<uint32_t>& seqs) {
  for (std::size_t i = 1; i < seqs.size(); ++i) {
    if (seqs[i] <= seqs[i - 1]) return false;
  }
  return true;
}

// A TCP listener on 127.0.0.1 (or ::1) that accepts one connection at a time and records what each
// connection sent. Non-blocking, driven by pump().
class Listener {
 public:
  Listener() : lfd_(-1), cfd_(-1), port_(0), reading_(true), max_chunk_(65536), rng_(12345) {}
  ~Listener() { stop(); }

  // port 0 picks a free port. rcvbuf > 0 shrinks the receive buffer (inherited by accepted
  // sockets) so a client fills it quickly. backlog 0 with nothing accepted lets one connection
  // queue; further SYNs are dropped.
  bool start(uint16_t port, int rcvbuf = 0, int backlog = 16, int family = AF_INET) {
    lfd_ = ::socket(family, SOCK_STREAM, 0);
    if (lfd_ < 0) return false;
    int one = 1;
    // The port is reused while the previous connection is in TIME_WAIT.
    ::setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (rcvbuf > 0) ::setsockopt(lfd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    bm::Address a = make_address(family == AF_INET6 ? "::1" : "127.0.0.1");
    detail::set_port(a, port);
    if (family == AF_INET6) ::setsockopt(lfd_, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (::bind(lfd_, reinterpret_cast<struct sockaddr*>(&a.storage), a.length) != 0) return stop_failed_();
    if (::listen(lfd_, backlog) != 0) return stop_failed_();
    socklen_t len = a.length;
    ::getsockname(lfd_, reinterpret_cast<struct sockaddr*>(&a.storage), &len);
    port_ = ntohs(family == AF_INET6 ? reinterpret_cast<struct sockaddr_in6*>(&a.storage)->sin6_port
                                     : reinterpret_cast<struct sockaddr_in*>(&a.storage)->sin_port);
    set_nonblocking_(lfd_);
    return true;
  }

  uint16_t port() const { return port_; }
  void set_reading(bool on) { reading_ = on; }
  void set_max_chunk(std::size_t n) { max_chunk_ = n; }
  bool has_connection() const { return cfd_ >= 0; }
  // One string per accepted connection, in order.
  const std::vector<std::string>& streams() const { return streams_; }
  std::string all() const {
    std::string s;
    for (std::size_t i = 0; i < streams_.size(); ++i) s += streams_[i];
    return s;
  }

  void pump() {
    if (lfd_ >= 0) {
      const int fd = ::accept(lfd_, 0, 0);
      if (fd >= 0) {
        if (cfd_ >= 0) {
          read_(true);
          if (cfd_ >= 0) ::close(cfd_);
        }
        set_nonblocking_(fd);
        cfd_ = fd;
        streams_.push_back(std::string());
      }
    }
    if (cfd_ >= 0 && reading_) read_(false);
  }

  // Orderly close of everything: the client sees end-of-stream.
  void stop() {
    if (cfd_ >= 0) ::close(cfd_);
    if (lfd_ >= 0) ::close(lfd_);
    cfd_ = lfd_ = -1;
  }

  // Orderly close of the current connection only; still listening.
  void close_connection() {
    if (cfd_ >= 0) ::close(cfd_);
    cfd_ = -1;
  }

  // Abortive close of the current connection (RST), discarding whatever was not read.
  void reset_connection() {
    if (cfd_ < 0) return;
    struct linger lg;
    lg.l_onoff = 1;
    lg.l_linger = 0;
    ::setsockopt(cfd_, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    ::close(cfd_);
    cfd_ = -1;
  }

 private:
  static void set_nonblocking_(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

  bool stop_failed_() {
    stop();
    return false;
  }

  void read_(bool everything) {
    char buf[65536];
    for (;;) {
      // Odd-sized reads when asked, so frames arrive split at every kind of offset.
      const std::size_t want = everything ? sizeof buf : 1 + rng_() % max_chunk_;
      const ssize_t n = ::recv(cfd_, buf, want < sizeof buf ? want : sizeof buf, 0);
      if (n > 0) {
        streams_.back().append(buf, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        // The peer's end of stream: close, as the collector does once it has read everything.
        ::close(cfd_);
        cfd_ = -1;
      }
      return;
    }
  }

  int lfd_;
  int cfd_;
  uint16_t port_;
  bool reading_;
  std::size_t max_chunk_;
  std::minstd_rand rng_;
  std::vector<std::string> streams_;
};

// Drives the client (its own poll) and the listeners until `done` or the timeout; false on timeout.
bool pump_until(Client& client, Listener* a, Listener* b, const std::function<bool()>& done, int timeout_ms) {
  const SteadyClock::time_point start = SteadyClock::now();
  for (;;) {
    if (a) a->pump();
    if (b) b->pump();
    if (done()) return true;
    if (ms_since(start) > timeout_ms) return false;
    client.poll(2);
  }
}

// The same through the event-loop API, as an application's own loop would: the client's
// descriptors, a short real wait, process(). On a ManualClock no timer moves meanwhile.
bool drive_until(Client& client, Listener* a, Listener* b, const std::function<bool()>& done, int timeout_ms) {
  const SteadyClock::time_point start = SteadyClock::now();
  for (;;) {
    if (a) a->pump();
    if (b) b->pump();
    if (done()) return true;
    if (ms_since(start) > timeout_ms) return false;
    struct pollfd fds[2];
    const int n = client.descriptors(fds, 2);
    ::poll(fds, static_cast<nfds_t>(n), 2);
    client.process(fds, n);
  }
}

ClientOptions fast_options(uint16_t binary_port, uint16_t json_port) {
  ClientOptions o;
  o.host = "127.0.0.1";
  o.binary_port = binary_port;
  o.json_port = json_port;
  o.connect_timeout_ms = 300;
  // Short backoff keeps the test quick; the logic is the same as with production values.
  o.backoff_initial_ms = 5;
  o.backoff_max_ms = 40;
  o.max_write_delay_ms = 0;
  return o;
}

battery_monitor::PerformanceRecord make_performance(int n) {
  battery_monitor::PerformanceRecord r;
  r.pack_voltage = 396.0 + n;
  r.pack_current = -10.25;
  r.cell_temp = 30.5;
  r.capacity_remaining = 87.5;
  r.cycle_count = 412u + static_cast<uint32_t>(n);
  r.age_months = 18;
  r.health_score = 92.3;
  r.has_timestamp = true;
  r.timestamp = 1732700000.5 + n;
  r.battery_id = "pack-7";
  return r;
}

battery_monitor::Prediction make_prediction(int n) {
  battery_monitor::Prediction p;
  p.remaining_life_hours = 15000.5 - n;
  p.remaining_cycles = 1200;
  p.degradation_rate = 0.021;
  p.battery_id = "pack-7";
  p.source = "test \"client\"";
  return p;
}

std::string perf_line(int n) {
  std::string s;
  battery_monitor::encode_performance(make_performance(n), s);
  return s;
}

std::string pred_line(int n) {
  std::string s;
  battery_monitor::encode_prediction(make_prediction(n), s);
  return s;
}

// A reading with `cells` cell voltages and temperatures, numbered n, and the arrays it borrows. With
// `longest`, every number is as long as the encoder makes one: the largest message there is.
class CellSample {
 public:
  CellSample(int n, std::size_t cells, bool longest = false) : volts_(cells), temps_(cells) {
    for (std::size_t i = 0; i < cells; ++i) {
      volts_[i] = longest ? -2.2250738585072014e-308 : 3.0 + static_cast<double>((n * 31 + static_cast<int>(i) * 7) % 1200) / 1000;
      temps_[i] = longest ? -2.2250738585072014e-308 : 20.0 + static_cast<double>((n + static_cast<int>(i)) % 200) / 8;
    }
    reading.pack_voltage = 3.7 * static_cast<double>(cells);
    reading.pack_current = -10.25 - n;
    reading.cell_temp = 30.5;
    reading.cell_voltages = cells ? &volts_[0] : 0;
    reading.cell_voltage_count = cells;
    reading.cell_temps = cells ? &temps_[0] : 0;
    reading.cell_temp_count = cells;
    reading.has_timestamp = true;
    reading.timestamp = 1732700000.5 + n;
    reading.battery_id = "pack-7";
  }

  std::string line() const {
    std::string s;
    battery_monitor::encode_cell_reading(reading, s);
    return s;
  }

  battery_monitor::CellReading reading;

 private:
  CellSample(const CellSample&);  // the reading points into this sample's arrays
  CellSample& operator=(const CellSample&);
  std::vector<double> volts_;
  std::vector<double> temps_;
};

// A ring over its own storage, for the tests of the queues alone.
struct Ring {
  explicit Ring(std::size_t bytes, std::size_t item_bytes) : storage(bytes) { ring.attach(storage.data(), bytes, item_bytes); }
  std::vector<uint8_t> storage;
  detail::ByteRing ring;
};

bool push_frame(detail::ByteRing& ring, uint32_t seq) {
  return ring.push(reinterpret_cast<const uint8_t*>(frame_of(seq).data()), 16);
}

bool push_line(detail::ByteRing& ring, const std::string& line) {
  return ring.push(reinterpret_cast<const uint8_t*>(line.data()), line.size());
}

std::string drain(detail::ByteRing& ring) {
  std::string out;
  std::size_t len = 0;
  const uint8_t* p;
  while ((p = ring.peek(len)) && len) {
    out.append(reinterpret_cast<const char*>(p), len);
    ring.consume(len);
  }
  return out;
}

struct EventLog {
  std::vector<bm::Event> events;
  std::vector<std::string> addresses;  // of each event, "" when it names none
  static void record(void* context, const bm::Event& e) {
    EventLog* log = static_cast<EventLog*>(context);
    log->events.push_back(e);
    log->addresses.push_back(e.address ? address_text(*e.address) : std::string());
  }
  int count(bm::EventKind kind, Error error) const {
    int n = 0;
    for (std::size_t i = 0; i < events.size(); ++i) n += events[i].kind == kind && events[i].error == error;
    return n;
  }
};

// --- The queues on their own ------------------------------------------------------------------

// Random pushes, partial writes and disconnects against the ring, with frames and with JSON
// lines. What a receiver sees on each connection, after dropping a trailing partial item as the
// collector does, must be whole items of ours in increasing order; an item cut by a disconnect
// must open the next connection.
void test_ring_model() {
  std::minstd_rand rng(7);
  uint64_t pushed = 0;
  int cut_items = 0;
  for (int round = 0; round < 400; ++round) {
    const bool lines = round % 2 == 1;
    const std::size_t capacity = lines ? 40 + rng() % 100 : 16 * (1 + rng() % 9);
    Ring r(capacity, lines ? 0 : 16);
    detail::ByteRing& ring = r.ring;
    std::vector<std::string> connections(1);
    uint32_t next = 0;
    bool ok = true;
    for (int step = 0; step < 400; ++step) {
      const unsigned action = rng() % 10;
      if (action < 5) {
        if (lines) {
          char line[48];
          const int n = std::snprintf(line, sizeof line, "{\"n\":%u,\"pad\":\"%.*s\"}\n", next++, static_cast<int>(rng() % 12), "xxxxxxxxxxxx");
          push_line(ring, std::string(line, static_cast<std::size_t>(n)));
        } else {
          push_frame(ring, next++);
        }
        ++pushed;
      } else if (action < 9) {
        std::size_t len = 0;
        const uint8_t* p = ring.peek(len);
        if (len == 0) continue;
        const std::size_t n = 1 + rng() % len;  // a write of any size, as send() may do
        connections.back().append(reinterpret_cast<const char*>(p), n);
        ring.consume(n);
      } else {
        std::string& last = connections.back();
        const std::size_t partial = lines ? last.size() - (last.rfind('\n') == std::string::npos ? 0 : last.rfind('\n') + 1) : last.size() % 16;
        std::string cut;
        if (partial) {
          cut = last.substr(last.size() - partial);
          last.resize(last.size() - partial);  // the collector drops it
        }
        ring.restart();
        connections.push_back(std::string());
        if (partial) {
          // The cut item must be sent again whole, first thing on the new connection.
          std::size_t len = 0;
          const uint8_t* p = ring.peek(len);
          ok = ok && len >= 1 && std::memcmp(p, cut.data(), partial < len ? partial : len) == 0;
          ++cut_items;
        }
      }
    }
    const std::string tail = drain(ring);
    connections.back() += tail;
    uint64_t received = 0;
    for (std::size_t c = 0; c < connections.size(); ++c) {
      std::vector<uint32_t> seqs;
      if (lines) {
        const std::string& s = connections[c];
        std::size_t start = 0, end;
        while ((end = s.find('\n', start)) != std::string::npos) {
          unsigned n = 0;
          ok = ok && std::sscanf(s.c_str() + start, "{\"n\":%u,", &n) == 1 && s[start] == '{' && s[end - 1] == '}';
          seqs.push_back(n);
          start = end + 1;
        }
        ok = ok && start == s.size();
      } else {
        ok = ok && frames_to_seqs(connections[c], seqs);
      }
      ok = ok && strictly_increasing(seqs);
      received += seqs.size();
    }
    // Every item is either sent or dropped; resent ones are counted once per delivery.
    ok = ok && ring.sent() + ring.dropped() == next && received == ring.sent();
    CHECK(ok, "ring model round %d (%s, capacity %lu) broke an invariant", round, lines ? "lines" : "frames", static_cast<unsigned long>(capacity));
    if (!ok) break;
  }
  std::printf("ring model: %llu frames and lines through 400 random rounds, %d items cut by a disconnect and resent\n",
              static_cast<unsigned long long>(pushed), cut_items);
}

void test_ring_overflow_rules() {
  Ring r(3 * 16, 16);
  detail::ByteRing& ring = r.ring;
  for (uint32_t i = 0; i < 3; ++i) CHECK(push_frame(ring, i), "push %u", i);
  CHECK(!push_frame(ring, 3), "overflow not reported");
  std::size_t len = 0;
  const uint8_t* p = ring.peek(len);
  CHECK(ring.dropped() == 1 && std::memcmp(p, frame_of(1).data(), 16) == 0, "oldest (0) not dropped");
  // Pin the head (frame 1) with a partial write: overflow must now drop frame 2, not frame 1.
  ring.consume(5);
  push_frame(ring, 4);
  CHECK(drain(ring) == frame_of(1).substr(5) + frame_of(3) + frame_of(4), "pinned head was not kept");
  CHECK(ring.dropped() == 2 && ring.sent() == 3, "dropped %llu sent %llu", static_cast<unsigned long long>(ring.dropped()),
        static_cast<unsigned long long>(ring.sent()));

  // Capacity 1 with the only frame mid-write: the new frame is the one dropped.
  Ring one(16, 16);
  push_frame(one.ring, 10);
  one.ring.consume(3);
  CHECK(!push_frame(one.ring, 11), "capacity-1 overflow not reported");
  p = one.ring.peek(len);
  CHECK(len == 13 && std::memcmp(p, frame_of(10).data() + 3, 13) == 0, "capacity-1 pinned frame lost");

  // Lines follow the same rules, by bytes: "first" is pinned, so "second" makes room for "third".
  Ring q(20, 0);
  push_line(q.ring, "first\n");
  q.ring.consume(2);
  push_line(q.ring, "second\n");
  push_line(q.ring, "third\n");
  push_line(q.ring, "4th\n");
  const std::string out = drain(q.ring);
  CHECK(out == "rst\nthird\n4th\n" && q.ring.dropped() == 1 && q.ring.sent() == 3, "message ring: %s", out.c_str());
  std::printf("ring overflow rules: oldest dropped, a partly written head never\n");
}

// --- Options --------------------------------------------------------------------------------

// Every option is checked by init(), which returns an error code; nothing aborts, and a client
// that failed init() refuses work instead of touching memory it does not have.
void test_options_validation() {
  struct Case {
    const char* name;
    std::function<void(ClientOptions&)> set;
  };
  const Case cases[] = {
      {"frame_capacity * 16 wraps", [](ClientOptions& o) { o.frame_capacity = std::numeric_limits<std::size_t>::max() / 8; }},
      {"frame_capacity 0", [](ClientOptions& o) { o.frame_capacity = 0; }},
      {"message_buffer_bytes below one message", [](ClientOptions& o) { o.message_buffer_bytes = 100; }},
      {"empty host", [](ClientOptions& o) { o.host = ""; }},
      {"host too long", [](ClientOptions& o) { o.host = std::string(300, 'h'); }},
      {"port 70000", [](ClientOptions& o) { o.binary_port = 70000; }},
      {"port -1", [](ClientOptions& o) { o.json_port = -1; }},
      {"both ports 0", [](ClientOptions& o) { o.binary_port = o.json_port = 0; }},
      {"connect_timeout_ms 0", [](ClientOptions& o) { o.connect_timeout_ms = 0; }},
      {"backoff_initial_ms 0", [](ClientOptions& o) { o.backoff_initial_ms = 0; }},
      {"backoff_max_ms below initial", [](ClientOptions& o) { o.backoff_max_ms = o.backoff_initial_ms - 1; }},
      {"stall_timeout_ms negative", [](ClientOptions& o) { o.stall_timeout_ms = -1; }},
      {"keepalive_interval_s 0", [](ClientOptions& o) { o.keepalive_interval_s = 0; }},
      {"socket_send_buffer negative", [](ClientOptions& o) { o.socket_send_buffer = -5; }},
      {"max_cells over kMaxCells", [](ClientOptions& o) { o.max_cells = bm::kMaxCells + 1; }},
      {"max_cells 1024 with the default 32 KiB message buffer", [](ClientOptions& o) { o.max_cells = bm::kMaxCells; }},
      {"max_cells 96, message buffer one byte short", [](ClientOptions& o) {
         o.max_cells = 96;
         o.message_buffer_bytes = bm::max_cell_message_bytes(96) - 1;
       }},
  };
  for (std::size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
    ClientOptions o;
    cases[i].set(o);
    const char* problem = 0;
    CHECK(Client::validate(o, &problem) == bm::kErrInvalidOptions && problem != 0, "%s: accepted", cases[i].name);
    CHECK(Client::storage_bytes(o) == 0, "%s: storage_bytes not 0", cases[i].name);
    Client c;
    CHECK(c.init(o) == bm::kErrInvalidOptions, "%s: init did not refuse", cases[i].name);
    CHECK(c.send_reading(make_reading(1)) == bm::kErrNotInitialized && c.poll(0) == bm::kErrNotInitialized && c.pending_frames() == 0,
          "%s: a client that failed init() took work", cases[i].name);
  }
  // A disabled link needs no storage, and its capacity is not checked.
  ClientOptions o;
  o.json_port = 0;
  o.message_buffer_bytes = 0;
  CHECK(Client::validate(o) == bm::kOk && Client::storage_bytes(o) == o.frame_capacity * 16, "json link off: storage %lu",
        static_cast<unsigned long>(Client::storage_bytes(o)));
  // Caller storage: one byte short is refused.
  ClientOptions d;
  std::vector<uint8_t> storage(Client::storage_bytes(d));
  Client short_storage;
  CHECK(short_storage.init(d, storage.data(), storage.size() - 1) == bm::kErrNoMemory, "short storage accepted");
  Client fine;
  CHECK(fine.init(d, storage.data(), storage.size()) == bm::kOk, "default options with their storage refused");
  CHECK(fine.send_reading(Reading(0, std::numeric_limits<float>::quiet_NaN(), 0, 0)) == bm::kErrRefused && fine.stats().refused == 1,
        "NaN reading not refused");
  std::printf("options: %lu invalid settings refused by init() with an error code\n", static_cast<unsigned long>(sizeof cases / sizeof cases[0]));
}

// max_cells sizes the storage (the ring must hold the longest such message, and the encoding
// buffer comes on top), and send_cell_reading() refuses what it cannot or must not send, queueing
// nothing.
void test_cell_options_and_refusals() {
  ClientOptions o;
  o.max_cells = bm::kMaxCells;
  o.message_buffer_bytes = bm::max_cell_message_bytes(bm::kMaxCells);
  CHECK(Client::validate(o) == bm::kOk, "a message buffer of exactly one longest cell message refused");
  CHECK(Client::storage_bytes(o) == o.frame_capacity * 16 + 2 * bm::max_cell_message_bytes(bm::kMaxCells), "storage with 1024 cells: %lu",
        static_cast<unsigned long>(Client::storage_bytes(o)));
  ClientOptions off;
  off.json_port = 0;
  off.max_cells = bm::kMaxCells;
  off.message_buffer_bytes = 0;
  CHECK(Client::validate(off) == bm::kOk && Client::storage_bytes(off) == off.frame_capacity * 16, "json link off: cells cost storage");

  ClientOptions c96;
  c96.max_cells = 96;
  std::vector<uint8_t> storage(Client::storage_bytes(c96));
  CHECK(storage.size() == c96.frame_capacity * 16 + c96.message_buffer_bytes + bm::max_cell_message_bytes(96), "storage with 96 cells: %lu",
        static_cast<unsigned long>(storage.size()));
  Client client;
  CHECK(client.init(c96, storage.data(), storage.size() - 1) == bm::kErrNoMemory, "storage one byte short of the cell buffer accepted");
  CHECK(client.init(c96, storage.data(), storage.size()) == bm::kOk, "init with cells");
  CellSample too_many(1, 97), fine(2, 96), none(3, 0);
  CHECK(client.send_cell_reading(too_many.reading) == bm::kErrTooManyCells, "97 cells queued with max_cells 96");
  too_many.reading.cell_temp_count = 0;
  CHECK(client.send_cell_reading(too_many.reading) == bm::kErrTooManyCells, "97 cell voltages queued with max_cells 96");
  CellSample nan(4, 96);
  std::vector<double> temps(96, 25.0);
  temps[95] = std::numeric_limits<double>::quiet_NaN();
  nan.reading.cell_temps = &temps[0];
  CHECK(client.send_cell_reading(nan.reading) == bm::kErrRefused, "a NaN cell temperature queued");
  CHECK(client.pending_messages() == 0 && client.stats().refused == 3, "refused readings were queued or not counted: pending %lu refused %llu",
        static_cast<unsigned long>(client.pending_messages()), static_cast<unsigned long long>(client.stats().refused));
  CHECK(client.send_cell_reading(fine.reading) == bm::kOk && client.send_cell_reading(none.reading) == bm::kOk && client.pending_messages() == 2,
        "96 cells, or none, not queued");

  // Without max_cells a reading may still go without cells (a plain battery-data message).
  Client plain;
  CHECK(plain.init(ClientOptions()) == bm::kOk, "init");
  CHECK(plain.send_cell_reading(none.reading) == bm::kOk && plain.send_cell_reading(fine.reading) == bm::kErrTooManyCells,
        "max_cells 0: a reading without cells refused, or one with cells queued");
  Client frames_only;
  ClientOptions no_json;
  no_json.json_port = 0;
  CHECK(frames_only.init(no_json) == bm::kOk && frames_only.send_cell_reading(none.reading) == bm::kErrLinkDisabled, "JSON link off: not refused");
  std::printf("cell options: storage grows by the encoding buffer; too many cells, NaN and a disabled link refused, nothing queued\n");
}

// --- Over real sockets --------------------------------------------------------------------------

void test_exact_bytes_then_outage() {
  Listener bin, json;
  CHECK(bin.start(0) && json.start(0), "cannot listen");
  TestTransport transport;
  ClientOptions o = fast_options(bin.port(), json.port());
  o.frame_capacity = 8;
  o.message_buffer_bytes = 2048;
  o.transport = &transport;
  EventLog log;
  o.on_event = &EventLog::record;
  o.event_context = &log;
  Client client;
  CHECK(client.init(o) == bm::kOk, "init");

  // 1. Connected: the exact bytes arrive.
  std::string want_bin, want_json;
  client.send_reading(make_reading(0));
  want_bin += frame_of(0);
  CHECK(pump_until(client, &bin, &json, [&] { return client.connected(bm::kBinaryLink); }, 5000), "did not connect");
  for (uint32_t i = 1; i < 100; ++i) {
    CHECK(client.send_reading(make_reading(i)) == bm::kOk, "send_reading %u refused", i);
    want_bin += frame_of(i);
    if (i % 25 == 0) {
      client.send_performance(make_performance(static_cast<int>(i)));
      client.send_prediction(make_prediction(static_cast<int>(i)));
      want_json += perf_line(static_cast<int>(i)) + pred_line(static_cast<int>(i));
    }
    client.poll(0);
    bin.pump();
  }
  CHECK(pump_until(client, &bin, &json, [&] { return bin.all().size() >= want_bin.size() && json.all().size() >= want_json.size(); }, 5000),
        "data did not arrive: %lu of %lu bytes", static_cast<unsigned long>(bin.all().size()), static_cast<unsigned long>(want_bin.size()));
  CHECK(bin.all() == want_bin, "binary bytes differ");
  CHECK(json.all() == want_json, "JSON bytes differ:\n%s", json.all().c_str());
  Stats s = client.stats();
  CHECK(s.frames_sent == 100 && s.frames_dropped == 0 && s.messages_sent == 6 && s.messages_dropped == 0,
        "stats after phase 1: sent %llu dropped %llu messages %llu", static_cast<unsigned long long>(s.frames_sent),
        static_cast<unsigned long long>(s.frames_dropped), static_cast<unsigned long long>(s.messages_sent));
  CHECK(log.count(bm::kEventConnected, bm::kOk) == 2, "connected events: %d", log.count(bm::kEventConnected, bm::kOk));
  std::printf("exact bytes: 100 frames and 6 messages arrived byte for byte\n");

  // 2. The collector goes away. Once the client has seen the close, readings stay in the ring
  //    (capacity 8): 20 more means the oldest 12 are dropped and counted. Messages by bytes: the
  //    newest that fit in 2048.
  const uint16_t bin_port = bin.port(), json_port = json.port();
  bin.stop();
  json.stop();
  CHECK(pump_until(client, 0, 0, [&] { return !client.connected(bm::kBinaryLink) && !client.connected(bm::kJsonLink); }, 2000),
        "client did not notice the collector closing");
  CHECK(log.count(bm::kEventDisconnected, bm::kErrPeerClosed) == 2, "peer-closed events: %d", log.count(bm::kEventDisconnected, bm::kErrPeerClosed));
  for (uint32_t i = 100; i < 120; ++i) client.send_reading(make_reading(i));
  std::vector<std::string> lines;
  for (int m = 0; m < 10; ++m) {
    client.send_performance(make_performance(100 + m));
    client.send_prediction(make_prediction(100 + m));
    lines.push_back(perf_line(100 + m));
    lines.push_back(pred_line(100 + m));
  }
  std::string want_json2;
  std::size_t kept = 0;
  for (std::size_t i = lines.size(); i-- > 0 && want_json2.size() + lines[i].size() <= 2048;) {
    want_json2 = lines[i] + want_json2;
    ++kept;
  }
  // Reconnect attempts fail meanwhile; none of this may block.
  const SteadyClock::time_point t0 = SteadyClock::now();
  for (int k = 0; k < 20; ++k) client.poll(5);
  CHECK(ms_since(t0) < 2000, "polling a dead collector took %lld ms", static_cast<long long>(ms_since(t0)));
  s = client.stats();
  CHECK(client.pending_frames() == 8 && s.frames_dropped == 12, "pending %lu dropped %llu", static_cast<unsigned long>(client.pending_frames()),
        static_cast<unsigned long long>(s.frames_dropped));
  CHECK(client.pending_messages() == kept && s.messages_dropped == lines.size() - kept, "pending messages %lu dropped %llu",
        static_cast<unsigned long>(client.pending_messages()), static_cast<unsigned long long>(s.messages_dropped));
  CHECK(s.connect_failures > 0 && client.last_error() == bm::kErrConnect && client.last_errno() == ECONNREFUSED,
        "failed reconnects: %llu, last error %s errno %d", static_cast<unsigned long long>(s.connect_failures), bm::error_name(client.last_error()),
        client.last_errno());

  // 3. The collector comes back on the same ports: the 8 newest readings arrive, in order,
  //    whole, and so do the newest messages, even when every write is cut short.
  transport.short_writes = true;
  Listener bin2, json2;
  CHECK(bin2.start(bin_port) && json2.start(json_port), "cannot listen again on the same ports");
  bin2.set_max_chunk(7);
  std::string want_bin2;
  for (uint32_t i = 112; i < 120; ++i) want_bin2 += frame_of(i);
  CHECK(pump_until(client, &bin2, &json2, [&] { return bin2.all().size() >= want_bin2.size() && json2.all().size() >= want_json2.size(); }, 5000),
        "buffered data did not arrive after the restart");
  std::vector<uint32_t> seqs;
  CHECK(frames_to_seqs(bin2.all(), seqs), "torn or foreign frame after reconnect");
  CHECK(bin2.all() == want_bin2, "after reconnect got %lu frames, first %u", static_cast<unsigned long>(seqs.size()), seqs.empty() ? 0u : seqs[0]);
  CHECK(json2.all() == want_json2, "JSON after reconnect:\n%s", json2.all().c_str());
  s = client.stats();
  CHECK(s.reconnects >= 2 && s.frames_sent == 108 && s.messages_sent == 6 + kept, "reconnects %llu sent %llu messages %llu",
        static_cast<unsigned long long>(s.reconnects), static_cast<unsigned long long>(s.frames_sent), static_cast<unsigned long long>(s.messages_sent));
  // close() waits for the collector to close its side, so the listeners run on a thread here.
  std::atomic<bool> closing(true);
  std::thread collector([&] {
    while (closing) {
      bin2.pump();
      json2.pump();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  const Error closed = client.close(2000);
  closing = false;
  collector.join();
  CHECK(closed == bm::kOk, "graceful close was not confirmed: %s", bm::error_name(closed));
  CHECK(!bin2.has_connection() && !json2.has_connection(), "listeners did not see end-of-stream");
  std::printf("outage: 20 readings while down, 12 oldest dropped, 8 newest delivered in order after restart "
              "(%llu failed attempts, %llu reconnects)\n",
              static_cast<unsigned long long>(s.connect_failures), static_cast<unsigned long long>(s.reconnects));
}

// Readings with cells over a real socket, in a ring just big enough for the longest message (52 KiB),
// with every write cut short at a random byte: the exact bytes arrive. Then the outage: the newest
// readings that fit are kept, the oldest dropped and counted, and they arrive whole once the
// collector is back.
void test_cells_exact_bytes_then_outage() {
  Listener json;
  CHECK(json.start(0), "cannot listen");
  json.set_max_chunk(1000);
  TestTransport transport;
  transport.short_writes = true;
  ClientOptions o = fast_options(0, json.port());
  o.max_cells = bm::kMaxCells;
  o.message_buffer_bytes = bm::max_cell_message_bytes(bm::kMaxCells);
  o.transport = &transport;
  Client client;
  CHECK(client.init(o) == bm::kOk, "init");

  // 1. Connected: a 96-cell reading, a performance record, then the longest message there is.
  const CellSample small(0, 96), longest(1, bm::kMaxCells, true);
  std::string want = small.line() + perf_line(0);
  CHECK(client.send_cell_reading(small.reading) == bm::kOk && client.send_performance(make_performance(0)) == bm::kOk, "queueing refused");
  CHECK(pump_until(client, &json, 0, [&] { return json.all().size() >= want.size(); }, 5000), "the cell reading did not arrive");
  CHECK(client.send_cell_reading(longest.reading) == bm::kOk, "the longest reading refused");
  want += longest.line();
  CHECK(longest.line().size() > 50000, "the longest reading is only %lu bytes", static_cast<unsigned long>(longest.line().size()));
  CHECK(pump_until(client, &json, 0, [&] { return json.all().size() >= want.size(); }, 5000), "the longest reading did not arrive");
  CHECK(json.all() == want, "cell message bytes differ");
  Stats s = client.stats();
  CHECK(s.messages_sent == 3 && s.messages_dropped == 0, "sent %llu dropped %llu", static_cast<unsigned long long>(s.messages_sent),
        static_cast<unsigned long long>(s.messages_dropped));
  std::printf("cells: a 96-cell and a %lu-byte 1024-cell reading arrived byte for byte through %llu short writes\n",
              static_cast<unsigned long>(longest.line().size()), static_cast<unsigned long long>(s.writes));

  // 2. The collector goes away: ten 1024-cell readings (about 12 KB each) into a 52 KiB ring.
  const uint16_t port = json.port();
  json.stop();
  CHECK(pump_until(client, 0, 0, [&] { return !client.connected(bm::kJsonLink); }, 2000), "client did not notice the collector closing");
  std::vector<std::string> lines;
  for (int n = 10; n < 20; ++n) {
    const CellSample sample(n, bm::kMaxCells);
    CHECK(client.send_cell_reading(sample.reading) == bm::kOk, "reading %d refused", n);
    lines.push_back(sample.line());
  }
  std::string want_after;
  std::size_t kept = 0;
  for (std::size_t i = lines.size(); i-- > 0 && want_after.size() + lines[i].size() <= o.message_buffer_bytes;) {
    want_after = lines[i] + want_after;
    ++kept;
  }
  for (int k = 0; k < 10; ++k) client.poll(5);
  s = client.stats();
  CHECK(kept >= 2 && kept < lines.size() && client.pending_messages() == kept && s.messages_dropped == lines.size() - kept,
        "pending %lu (expected %lu), dropped %llu", static_cast<unsigned long>(client.pending_messages()), static_cast<unsigned long>(kept),
        static_cast<unsigned long long>(s.messages_dropped));
  CHECK(s.connect_failures > 0 && client.last_error() == bm::kErrConnect, "reconnects did not fail while the collector was down");

  // 3. Back on the same port: the newest readings arrive whole, in order, and close() is confirmed.
  Listener json2;
  CHECK(json2.start(port), "cannot listen again on the same port");
  json2.set_max_chunk(777);
  CHECK(pump_until(client, &json2, 0, [&] { return json2.all().size() >= want_after.size(); }, 5000), "kept readings did not arrive after the restart");
  CHECK(json2.all() == want_after, "cell messages after the restart differ (%lu bytes, expected %lu)", static_cast<unsigned long>(json2.all().size()),
        static_cast<unsigned long>(want_after.size()));
  std::atomic<bool> closing(true);
  std::thread collector([&] {
    while (closing) {
      json2.pump();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  const Error closed = client.close(2000);
  closing = false;
  collector.join();
  CHECK(closed == bm::kOk, "close after the outage was not confirmed: %s", bm::error_name(closed));
  std::printf("cells outage: 10 readings while down, %lu newest kept in the ring and delivered whole after the restart\n",
              static_cast<unsigned long>(kept));
}

// The longest cell message is cut mid-way (the transport takes the first message and half of the
// second, then nothing) and close() gives up. The next connection opens with it whole.
void test_cell_message_cut_then_resent() {
  Listener json;
  CHECK(json.start(0), "cannot listen");
  TestTransport transport;
  ClientOptions o = fast_options(0, json.port());
  o.max_cells = bm::kMaxCells;
  o.message_buffer_bytes = 2 * bm::max_cell_message_bytes(bm::kMaxCells);
  o.transport = &transport;
  Client client;
  CHECK(client.init(o) == bm::kOk, "init");
  const CellSample first(0, 8), longest(1, bm::kMaxCells, true), after(2, 8);
  const std::size_t cut = longest.line().size() / 2;
  transport.write_budget = static_cast<long>(first.line().size() + cut);
  client.send_cell_reading(first.reading);
  client.send_cell_reading(longest.reading);
  CHECK(client.close(50) == bm::kErrTimeout, "close() claimed success with writes blocked");
  transport.write_budget = -1;
  const Stats at_close = client.stats();
  CHECK(at_close.messages_sent == 1 && at_close.resent == 1 && client.pending_messages() == 1, "after close: sent %llu resent %llu pending %lu",
        static_cast<unsigned long long>(at_close.messages_sent), static_cast<unsigned long long>(at_close.resent),
        static_cast<unsigned long>(client.pending_messages()));
  client.send_cell_reading(after.reading);
  const std::string want_second = longest.line() + after.line();
  CHECK(pump_until(client, &json, 0, [&] { return json.streams().size() == 2 && json.streams()[1].size() >= want_second.size(); }, 5000),
        "did not deliver after reuse");
  const std::string want_first = first.line() + longest.line().substr(0, cut);  // what the collector saw, and drops
  CHECK(json.streams().size() == 2 && json.streams()[0] == want_first && json.streams()[1] == want_second,
        "streams after the cut are not as expected");
  std::printf("cell message cut: %lu of %lu bytes written, then sent again whole on the next connection\n", static_cast<unsigned long>(cut),
              static_cast<unsigned long>(longest.line().size()));
}

// close() confirms only an orderly end of stream. A collector that resets the connection without
// reading has not confirmed anything, although every byte was handed to the kernel.
void test_close_confirmation() {
  Listener bin;
  CHECK(bin.start(0), "cannot listen");
  bin.set_reading(false);
  Client client;
  CHECK(client.init(fast_options(bin.port(), 0)) == bm::kOk, "init");
  for (uint32_t i = 0; i < 100; ++i) client.send_reading(make_reading(i));
  CHECK(pump_until(client, &bin, 0, [&] { return client.pending_frames() == 0 && bin.has_connection(); }, 5000), "frames not written");
  bin.reset_connection();  // read 0 of 100 frames, then RST
  const Error reset = client.close(2000);
  CHECK(reset == bm::kErrNotConfirmed, "close() after a reset returned %s", bm::error_name(reset));
  CHECK(client.last_error() == bm::kErrIo && client.last_errno() == ECONNRESET, "last error %s errno %d", bm::error_name(client.last_error()),
        client.last_errno());

  // The same client again: the collector reads everything and ends its side in order.
  bin.set_reading(true);
  for (uint32_t i = 100; i < 200; ++i) client.send_reading(make_reading(i));
  CHECK(pump_until(client, &bin, 0, [&] { return client.pending_frames() == 0 && bin.streams().size() == 2 && bin.streams()[1].size() == 1600; }, 5000),
        "second connection did not deliver");
  bin.close_connection();
  const Error orderly = client.close(2000);
  CHECK(orderly == bm::kOk, "close() after an orderly end returned %s", bm::error_name(orderly));
  std::printf("close confirmation: a reset is not confirmed (%s), an orderly end is\n", bm::error_name(reset));
}

// A collector that stops reading: the kernel buffers fill, send() writes part of a frame, the ring
// overflows. Then it reads again in odd-sized pieces: every frame must arrive whole and in order.
void test_stalled_collector() {
  TestTransport transport;
  transport.short_writes = true;
  Listener bin;
  CHECK(bin.start(0, 4096), "cannot listen");
  bin.set_reading(false);
  ClientOptions o = fast_options(bin.port(), 0);
  o.frame_capacity = 256;
  o.socket_send_buffer = 4096;  // so the stall reaches the ring quickly
  o.stall_timeout_ms = 0;       // here the collector comes back on the same connection
  o.transport = &transport;
  Client client;
  CHECK(client.init(o) == bm::kOk, "init");
  const uint32_t total = 50000;
  // The ring's fullest, seen right after each send: the last poll may still hand the kernel a few
  // frames (its window opens late on a busy machine), so the ring need not be full at the end.
  std::size_t fullest = 0;
  for (uint32_t i = 0; i < total; ++i) {
    client.send_reading(make_reading(i));
    if (client.pending_frames() > fullest) fullest = client.pending_frames();
    client.poll(0);
    bin.pump();
  }
  Stats s = client.stats();
  CHECK(s.frames_dropped > 0 && fullest == 256, "the stall did not fill the ring (dropped %llu, fullest %lu)",
        static_cast<unsigned long long>(s.frames_dropped), static_cast<unsigned long>(fullest));
  bin.set_reading(true);
  bin.set_max_chunk(37);
  CHECK(pump_until(client, &bin, 0, [&] { return client.pending_frames() == 0 && bin.all().size() == client.stats().frames_sent * 16; }, 10000),
        "did not drain: pending %lu", static_cast<unsigned long>(client.pending_frames()));
  s = client.stats();
  std::vector<uint32_t> seqs;
  CHECK(frames_to_seqs(bin.all(), seqs), "torn or misaligned frame in the stream");
  CHECK(strictly_increasing(seqs) && !seqs.empty() && seqs.back() == total - 1, "frames out of order or missing the last");
  CHECK(s.frames_sent + s.frames_dropped == total && seqs.size() == s.frames_sent, "sent %llu + dropped %llu != %u",
        static_cast<unsigned long long>(s.frames_sent), static_cast<unsigned long long>(s.frames_dropped), total);
  std::printf("stalled collector: %u readings, %llu delivered whole and in order, %llu dropped while stalled\n", total,
              static_cast<unsigned long long>(s.frames_sent), static_cast<unsigned long long>(s.frames_dropped));
}

// A collector (or the path to it) that accepts the connection and then nothing more: once no byte
// has been accepted for stall_timeout_ms the client abandons the connection and opens another,
// where the frame it was cut off in goes again whole. The stall timer runs on a ManualClock, so it
// fires at exactly the stated point. The sockets also carry TCP keepalive.
void test_stall_timeout() {
  Listener bin;
  CHECK(bin.start(0, 4096), "cannot listen");
  bin.set_reading(false);
  ManualClock clock(1000000);
  TestTransport transport;
  transport.short_writes = true;  // so the stall cuts a frame
  EventLog log;
  ClientOptions o = fast_options(bin.port(), 0);
  o.frame_capacity = 2000;
  o.socket_send_buffer = 4096;
  o.stall_timeout_ms = 5000;
  o.keepalive_idle_s = 7;
  o.clock = &clock;
  o.transport = &transport;
  o.on_event = &EventLog::record;
  o.event_context = &log;
  Client client;
  CHECK(client.init(o) == bm::kOk, "init");
  for (uint32_t i = 0; i < 2000; ++i) client.send_reading(make_reading(i));
  // Write until the kernel buffers are full: the pending count stops moving.
  std::size_t last = 0;
  int still = 0;
  drive_until(client, &bin, 0, [&] {
    still = client.pending_frames() == last ? still + 1 : 0;
    last = client.pending_frames();
    return client.connected(bm::kBinaryLink) && still > 50;
  }, 5000);
  CHECK(client.connected(bm::kBinaryLink) && client.pending_frames() > 0, "the collector did not stall the client (pending %lu)",
        static_cast<unsigned long>(client.pending_frames()));

  int keepalive = 0, idle = 0;
  socklen_t len = sizeof keepalive;
  ::getsockopt(client.socket(bm::kBinaryLink), SOL_SOCKET, SO_KEEPALIVE, &keepalive, &len);
#ifdef TCP_KEEPIDLE
  len = sizeof idle;
  ::getsockopt(client.socket(bm::kBinaryLink), IPPROTO_TCP, TCP_KEEPIDLE, &idle, &len);
#else
  idle = 7;
#endif
  CHECK(keepalive == 1 && idle == 7, "keepalive %d idle %d", keepalive, idle);

  CHECK(client.next_timeout_ms() == 5000, "stall timer: %lld ms", static_cast<long long>(client.next_timeout_ms()));
  clock.advance(4999);
  client.process(0, 0);
  CHECK(client.connected(bm::kBinaryLink) && client.stats().stalls == 0, "abandoned before the stall timeout");
  clock.advance(1);
  client.process(0, 0);
  CHECK(!client.connected(bm::kBinaryLink) && client.stats().stalls == 1, "not abandoned at the stall timeout");
  CHECK(log.count(bm::kEventDisconnected, bm::kErrStalled) == 1 && client.last_error() == bm::kErrStalled, "no stall event");

  // The collector reads again; the next connection carries on, frames whole and in order.
  bin.set_reading(true);
  clock.advance(o.backoff_max_ms);
  CHECK(drive_until(client, &bin, 0, [&] { return client.pending_frames() == 0 && bin.streams().size() == 2 && !bin.streams()[1].empty() &&
                                                  bin.streams()[1].size() % 16 == 0 && bin.all().size() >= 16; }, 5000),
        "did not carry on after the stall");
  drive_until(client, &bin, 0, [&] { return false; }, 50);  // let the last bytes land
  std::vector<uint32_t> seqs;
  CHECK(frames_to_seqs(bin.streams()[1], seqs) && strictly_increasing(seqs) && !seqs.empty() && seqs.back() == 1999,
        "second connection: %lu bytes, not whole frames in order", static_cast<unsigned long>(bin.streams()[1].size()));
  std::printf("stall timeout: abandoned at exactly 5000 ms without progress, reconnected, %lu frames whole on the new connection\n",
              static_cast<unsigned long>(seqs.size()));
}

// The collector resets the connection while a frame is half written. The next connection must
// start on a frame boundary, with that frame sent again whole. With short writes on, most resets
// catch a frame half written; rounds repeat until three have.
void test_reset_mid_frame() {
  TestTransport transport;
  transport.short_writes = true;
  int cut_rounds = 0;
  for (int round = 0; round < 20 && cut_rounds < 3; ++round) {
    Listener bin;
    CHECK(bin.start(0, 4096), "cannot listen");
    bin.set_reading(false);
    ClientOptions o = fast_options(bin.port(), 0);
    o.frame_capacity = 333;
    o.socket_send_buffer = 4096;
    o.transport = &transport;
    Client client;
    CHECK(client.init(o) == bm::kOk, "init");
    uint32_t next = 0;
    // Fill until the client has to keep readings in its ring.
    while (next < 100000 && client.pending_frames() < o.frame_capacity / 2) {
      client.send_reading(make_reading(next++));
      client.poll(0);
      bin.pump();
    }
    const Stats before = client.stats();
    bin.reset_connection();
    CHECK(pump_until(client, 0, 0, [&] { return !client.connected(bm::kBinaryLink); }, 2000), "reset not noticed");
    const Stats at_loss = client.stats();
    for (int i = 0; i < 10; ++i) client.send_reading(make_reading(next++));
    bin.set_reading(true);
    bin.set_max_chunk(13);
    CHECK(pump_until(client, &bin, 0, [&] { return client.pending_frames() == 0 && bin.streams().size() >= 2 &&
                                                  bin.streams()[1].size() == (client.stats().frames_sent - at_loss.frames_sent) * 16; }, 5000),
          "did not deliver after the reset");
    const Stats after = client.stats();
    std::vector<uint32_t> seqs;
    const std::string second = bin.streams().size() >= 2 ? bin.streams()[1] : std::string();
    CHECK(frames_to_seqs(second, seqs), "new connection does not start on a frame boundary");
    CHECK(strictly_increasing(seqs) && !seqs.empty() && seqs.back() == next - 1, "frames after the reset out of order");
    CHECK(after.reconnects == 1, "reconnects %llu", static_cast<unsigned long long>(after.reconnects));
    if (after.resent > before.resent) ++cut_rounds;
  }
  CHECK(cut_rounds > 0, "no reset ever hit a half-written frame, so the resend path was not exercised");
  std::printf("reset mid-frame: %d resets hit a half-written frame; each was resent whole on the new connection\n", cut_rounds);
}

// close() gives up while a frame is half written (the transport takes 5 frames and 7 bytes, then
// nothing). The same Client, used again, must open its next connection with that frame whole.
void test_close_mid_frame_then_reuse() {
  Listener bin;
  CHECK(bin.start(0), "cannot listen");
  TestTransport transport;
  ClientOptions o = fast_options(bin.port(), 0);
  o.transport = &transport;
  Client client;
  CHECK(client.init(o) == bm::kOk, "init");
  transport.write_budget = 5 * 16 + 7;
  for (uint32_t i = 0; i < 10; ++i) client.send_reading(make_reading(i));
  CHECK(client.close(50) == bm::kErrTimeout, "close() claimed success with writes blocked");
  transport.write_budget = -1;
  const Stats at_close = client.stats();
  CHECK(at_close.frames_sent == 5 && at_close.resent == 1 && client.pending_frames() == 5, "after close: sent %llu resent %llu pending %lu",
        static_cast<unsigned long long>(at_close.frames_sent), static_cast<unsigned long long>(at_close.resent),
        static_cast<unsigned long>(client.pending_frames()));
  client.send_reading(make_reading(10));
  CHECK(pump_until(client, &bin, 0, [&] { return client.pending_frames() == 0 && bin.streams().size() == 2 && bin.streams()[1].size() == 6 * 16; }, 5000),
        "did not deliver after reuse");
  std::string want_first, want_second;
  for (uint32_t i = 0; i < 5; ++i) want_first += frame_of(i);
  want_first += frame_of(5).substr(0, 7);  // what the collector saw, and drops, on the first connection
  for (uint32_t i = 5; i <= 10; ++i) want_second += frame_of(i);
  CHECK(bin.streams().size() == 2 && bin.streams()[0] == want_first && bin.streams()[1] == want_second, "streams after close and reuse are not as expected");
  std::printf("close mid-frame: the cut frame opened the next connection whole\n");
}

// Nothing listening: every call returns at once, readings pile up in the ring and overflow.
void test_dead_port() {
  Listener probe;
  CHECK(probe.start(0), "cannot listen");
  const uint16_t port = probe.port();
  probe.stop();  // now nothing listens there
  ClientOptions o = fast_options(port, port);
  o.frame_capacity = 10;
  Client client;
  CHECK(client.init(o) == bm::kOk, "init");
  const SteadyClock::time_point t0 = SteadyClock::now();
  for (uint32_t i = 0; i < 100; ++i) client.send_reading(make_reading(i));
  CHECK(client.flush(200) == bm::kErrTimeout, "flush to a dead port reported success");
  const int64_t took = ms_since(t0);
  const Stats s = client.stats();
  CHECK(took < 2000, "100 sends and a 200 ms flush took %lld ms", static_cast<long long>(took));
  CHECK(s.frames_dropped == 90 && client.pending_frames() == 10 && s.connect_failures > 0, "dropped %llu pending %lu failures %llu",
        static_cast<unsigned long long>(s.frames_dropped), static_cast<unsigned long>(client.pending_frames()),
        static_cast<unsigned long long>(s.connect_failures));
  std::printf("dead port: returned in %lld ms, 90 oldest of 100 dropped, %llu connect attempts refused\n", static_cast<long long>(took),
              static_cast<unsigned long long>(s.connect_failures));
}

// connect() failing at once (ENETUNREACH, EMFILE, an unresolvable name) must leave the next
// attempt as the next timer, so poll()/flush() wake for it instead of sleeping their whole time.
void test_synchronous_connect_failure() {
  ManualClock clock(5000);
  TestTransport transport;
  transport.connect_errno = ENETUNREACH;
  ClientOptions o = fast_options(9, 0);
  o.clock = &clock;
  o.transport = &transport;
  o.backoff_initial_ms = 8;
  o.backoff_max_ms = 8;
  Client client;
  CHECK(client.init(o) == bm::kOk, "init");
  client.send_reading(make_reading(1));
  client.process(0, 0);
  const int64_t wait = client.next_timeout_ms();
  CHECK(transport.connects == 1 && wait >= 4 && wait <= 8, "after a synchronous failure the next timer is %lld ms (attempts %d)",
        static_cast<long long>(wait), transport.connects);
  CHECK(client.last_error() == bm::kErrConnect && client.last_errno() == ENETUNREACH, "last error %s errno %d", bm::error_name(client.last_error()),
        client.last_errno());

  // On the real clock: flush(300) with an 8 ms backoff makes attempt after attempt (the old
  // poll slept the whole timeout after each failure: 2 attempts).
  TestTransport real_transport;
  real_transport.connect_errno = ENETUNREACH;
  ClientOptions r = fast_options(9, 0);
  r.transport = &real_transport;
  r.backoff_initial_ms = 8;
  r.backoff_max_ms = 8;
  Client real_client;
  CHECK(real_client.init(r) == bm::kOk, "init");
  real_client.send_reading(make_reading(1));
  real_client.flush(300);
  CHECK(real_transport.connects >= 6, "flush(300) made %d attempts with an 8 ms backoff", real_transport.connects);
  std::printf("synchronous connect failure: next timer %lld ms; flush(300) made %d attempts\n", static_cast<long long>(wait), real_transport.connects);
}

// A collector whose accept queue is full drops SYNs, so connect() never completes: the connect
// timeout must end each attempt, and poll() must still return on time.
void test_connect_timeout() {
  Listener full;
  CHECK(full.start(0, 0, 0), "cannot listen");
  // Fill the accept queue (never accepted) with raw connections.
  int raw[3];
  for (int i = 0; i < 3; ++i) {
    raw[i] = ::socket(AF_INET, SOCK_STREAM, 0);
    ::fcntl(raw[i], F_SETFL, O_NONBLOCK);
    bm::Address a = make_address("127.0.0.1");
    detail::set_port(a, full.port());
    ::connect(raw[i], reinterpret_cast<struct sockaddr*>(&a.storage), a.length);
  }
  ClientOptions o = fast_options(full.port(), 0);
  o.connect_timeout_ms = 100;
  Client client;
  CHECK(client.init(o) == bm::kOk, "init");
  client.send_reading(make_reading(1));
  const SteadyClock::time_point t0 = SteadyClock::now();
  int64_t longest = 0;
  while (ms_since(t0) < 1000) {
    const SteadyClock::time_point p0 = SteadyClock::now();
    client.poll(50);
    if (ms_since(p0) > longest) longest = ms_since(p0);
  }
  const Stats s = client.stats();
  CHECK(!client.connected(bm::kBinaryLink) && s.frames_sent == 0, "connected to a full accept queue");
  CHECK(s.connect_failures >= 2, "connect timeout did not fire (failures %llu)", static_cast<unsigned long long>(s.connect_failures));
  CHECK(longest < 500, "a poll(50) took %lld ms", static_cast<long long>(longest));
  for (int i = 0; i < 3; ++i) ::close(raw[i]);
  std::printf("connect timeout: %llu attempts timed out in 1 s, longest poll(50) %lld ms\n", static_cast<unsigned long long>(s.connect_failures),
              static_cast<long long>(longest));
}

// The backoff curve on a ManualClock: each delay in [b/2, b] with b doubling to the maximum; a
// connection that stays up for stable_connection_ms resets it, one that does not leaves it grown.
void test_backoff_curve() {
  Listener bin;
  CHECK(bin.start(0), "cannot listen");
  ManualClock clock(0);
  TestTransport transport;
  transport.connect_errno = ECONNREFUSED;
  ClientOptions o = fast_options(bin.port(), 0);
  o.clock = &clock;
  o.transport = &transport;
  o.backoff_initial_ms = 100;
  o.backoff_max_ms = 1600;
  o.stable_connection_ms = 1000;
  Client client;
  CHECK(client.init(o) == bm::kOk, "init");
  client.send_reading(make_reading(0));
  int b = 100;
  bool curve_ok = true;
  std::string curve;
  for (int k = 0; k < 8; ++k) {
    client.process(0, 0);
    const int64_t delay = client.next_timeout_ms();
    curve_ok = curve_ok && transport.connects == k + 1 && delay >= b - b / 2 && delay <= b;
    char step[32];
    std::snprintf(step, sizeof step, "%s%lld", k ? " " : "", static_cast<long long>(delay));
    curve += step;
    clock.advance(delay);
    b = b * 2 > 1600 ? 1600 : b * 2;
  }
  CHECK(curve_ok, "backoff delays %s do not follow [b/2, b] for b = 100, 200, ..., 1600", curve.c_str());

  // Now the collector accepts: connect, stay up 1000 ms, lose it: the next delay is the initial one.
  transport.connect_errno = 0;
  CHECK(drive_until(client, &bin, 0, [&] { return client.connected(bm::kBinaryLink) && client.pending_frames() == 0; }, 5000), "did not connect");
  clock.advance(1000);
  bin.close_connection();
  CHECK(drive_until(client, &bin, 0, [&] { return !client.connected(bm::kBinaryLink); }, 5000), "close not noticed");
  client.send_reading(make_reading(1));
  const int64_t after_stable = client.next_timeout_ms();
  CHECK(after_stable >= 50 && after_stable <= 100, "after a stable connection the delay is %lld ms", static_cast<long long>(after_stable));
  // Reconnect, and lose it at once: the backoff was not reset, so the next delay is in [100, 200].
  clock.advance(after_stable);
  CHECK(drive_until(client, &bin, 0, [&] { return client.connected(bm::kBinaryLink) && client.pending_frames() == 0; }, 5000), "did not reconnect");
  bin.close_connection();
  CHECK(drive_until(client, &bin, 0, [&] { return !client.connected(bm::kBinaryLink); }, 5000), "second close not noticed");
  client.send_reading(make_reading(2));
  const int64_t after_short = client.next_timeout_ms();
  CHECK(after_short >= 100 && after_short <= 200, "after a short-lived connection the delay is %lld ms", static_cast<long long>(after_short));
  std::printf("backoff: %s ms; %lld after a stable connection, %lld after a short one\n", curve.c_str(), static_cast<long long>(after_stable),
              static_cast<long long>(after_short));
}

// A host name is resolved once for both links and every attempt, and the handshake's deadline
// counts from after the lookup: a lookup that takes 5 s leaves the whole connect_timeout_ms.
void test_resolve_once() {
  Listener bin, json;
  CHECK(bin.start(0) && json.start(0), "cannot listen");
  ManualClock clock(0);
  TestTransport transport;
  transport.addresses.push_back(make_address("127.0.0.1"));
  transport.lookup_clock = &clock;
  transport.lookup_ms = 5000;
  transport.force_in_progress = true;
  ClientOptions o = fast_options(bin.port(), json.port());
  o.host = "collector.test";
  o.connect_timeout_ms = 300;
  o.clock = &clock;
  o.transport = &transport;
  Client client;
  CHECK(client.init(o) == bm::kOk, "init");
  client.send_reading(make_reading(0));
  client.process(0, 0);
  CHECK(transport.resolves == 1, "resolves: %d", transport.resolves);
  CHECK(client.next_timeout_ms() == 300, "connect deadline %lld ms after a 5 s lookup", static_cast<long long>(client.next_timeout_ms()));
  client.send_performance(make_performance(0));
  CHECK(drive_until(client, &bin, &json, [&] { return client.pending_frames() == 0 && client.pending_messages() == 0; }, 5000), "not delivered");
  // Lose both connections, reconnect: still the one lookup.
  bin.close_connection();
  json.close_connection();
  CHECK(drive_until(client, &bin, &json, [&] { return !client.connected(bm::kBinaryLink) && !client.connected(bm::kJsonLink); }, 5000), "close not noticed");
  client.send_reading(make_reading(1));
  client.send_prediction(make_prediction(1));
  clock.advance(1000);
  CHECK(drive_until(client, &bin, &json, [&] { return client.pending_frames() == 0 && client.pending_messages() == 0; }, 5000), "not delivered again");
  CHECK(transport.resolves == 1 && client.stats().reconnects == 2, "resolves %d reconnects %llu", transport.resolves,
        static_cast<unsigned long long>(client.stats().reconnects));
  std::printf("name lookup: once for 2 links and 4 connections; the connect deadline counts from after it\n");
}

// Host names through the real resolver, IPv6, and rotation through a name's addresses: each
// failure moves to the next address, and only when all have failed is the name looked up again.
void test_names_ipv6_rotation() {
  // "localhost" via getaddrinfo; it may resolve to 127.0.0.1, ::1 or both, so listen on both.
  Listener v4, v6;
  CHECK(v4.start(0), "cannot listen");
  const bool have_v6 = v6.start(v4.port(), 0, 16, AF_INET6);
  {
    ClientOptions o = fast_options(v4.port(), 0);
    o.host = "localhost";
    Client client;
    CHECK(client.init(o) == bm::kOk, "init");
    for (uint32_t i = 0; i < 10; ++i) client.send_reading(make_reading(i));
    CHECK(pump_until(client, &v4, have_v6 ? &v6 : 0, [&] { return v4.all().size() + v6.all().size() == 160; }, 5000), "localhost: not delivered");
    CHECK(v4.all().size() == 160 || v6.all().size() == 160, "localhost: bytes split across listeners");
  }
  // IPv6 by number.
  Listener only6;
  if (only6.start(0, 0, 16, AF_INET6)) {
    ClientOptions o = fast_options(only6.port(), 0);
    o.host = "::1";
    Client client;
    CHECK(client.init(o) == bm::kOk, "init");
    std::string want;
    for (uint32_t i = 0; i < 10; ++i) {
      client.send_reading(make_reading(i));
      want += frame_of(i);
    }
    CHECK(client.flush(2000) == bm::kOk, "::1: flush");
    CHECK(pump_until(client, &only6, 0, [&] { return only6.all() == want; }, 2000), "::1: bytes differ");
  } else {
    std::printf("IPv6: no ::1 here, skipped\n");
  }
  // Rotation: three addresses, only the last listens.
  Listener live;
  CHECK(live.start(0), "cannot listen");
  TestTransport transport;
  transport.addresses.push_back(make_address("127.0.0.2"));
  transport.addresses.push_back(make_address("::1"));
  transport.addresses.push_back(make_address("127.0.0.1"));
  EventLog log;
  ClientOptions o = fast_options(live.port(), 0);
  o.host = "collector.test";
  o.transport = &transport;
  o.on_event = &EventLog::record;
  o.event_context = &log;
  Client client;
  CHECK(client.init(o) == bm::kOk, "init");
  client.send_reading(make_reading(0));
  CHECK(pump_until(client, &live, 0, [&] { return live.all().size() == 16; }, 5000), "rotation: not delivered");
  std::string tried;
  for (std::size_t i = 0; i < log.events.size(); ++i) {
    if (log.events[i].kind == bm::kEventConnecting) tried += (tried.empty() ? "" : " ") + log.addresses[i];
  }
  CHECK(tried == "127.0.0.2 ::1 127.0.0.1", "addresses tried: %s", tried.c_str());
  CHECK(transport.resolves == 1, "resolves before all failed: %d", transport.resolves);
  // Every address fails now: after a full round the name is looked up again.
  live.stop();
  CHECK(pump_until(client, 0, 0, [&] { return !client.connected(bm::kBinaryLink); }, 2000), "close not noticed");
  client.send_reading(make_reading(1));
  CHECK(pump_until(client, 0, 0, [&] { return transport.resolves >= 2; }, 3000), "not looked up again after every address failed (%d)",
        transport.resolves);
  std::printf("names: localhost delivered%s; rotation tried %s; looked up again after a full failed round\n", have_v6 ? " (listening on both families)" : "",
              tried.c_str());
}

void on_alarm(int) {}

// Signals interrupt the library's waits and calls: real SIGALRMs every millisecond (no
// SA_RESTART) hit ::poll, and the transport adds EINTR to every other send, recv and connect.
// Nothing may be lost, torn or reordered, and no call may report an error for it.
void test_eintr() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;
  struct sigaction old;
  ::sigaction(SIGALRM, &sa, &old);
  struct itimerval every_ms;
  every_ms.it_interval.tv_sec = 0;
  every_ms.it_interval.tv_usec = 1000;
  every_ms.it_value = every_ms.it_interval;
  ::setitimer(ITIMER_REAL, &every_ms, 0);

  Listener bin;
  CHECK(bin.start(0, 4096), "cannot listen");
  bin.set_max_chunk(100);
  TestTransport transport;
  transport.eintr = true;
  ClientOptions o = fast_options(bin.port(), 0);
  o.frame_capacity = 5000;
  o.transport = &transport;
  Client client;
  CHECK(client.init(o) == bm::kOk, "init");
  for (uint32_t i = 0; i < 5000; ++i) client.send_reading(make_reading(i));
  bool errors = false;
  const SteadyClock::time_point start = SteadyClock::now();
  while (!(client.pending_frames() == 0 && bin.all().size() == 5000 * 16) && ms_since(start) < 10000) {
    bin.pump();
    errors = errors || client.poll(5) != bm::kOk;
  }
  struct itimerval off;
  std::memset(&off, 0, sizeof off);
  ::setitimer(ITIMER_REAL, &off, 0);
  ::sigaction(SIGALRM, &old, 0);
  std::vector<uint32_t> seqs;
  CHECK(!errors, "poll() reported an error for EINTR");
  CHECK(frames_to_seqs(bin.all(), seqs) && seqs.size() == 5000 && strictly_increasing(seqs), "under signals: %lu bytes, not all frames in order",
        static_cast<unsigned long>(bin.all().size()));
  CHECK(client.stats().reconnects == 0 && client.stats().connect_failures == 0, "EINTR was taken for a failure");
  std::printf("EINTR: 5000 frames in order under a SIGALRM every ms and injected EINTR on every other call\n");
}

// send_*() only queue; writes coalesce until write_batch_bytes wait or the oldest has waited
// max_write_delay_ms. Driven through the event-loop API on a ManualClock.
void test_coalescing_event_loop() {
  Listener bin;
  CHECK(bin.start(0), "cannot listen");
  ManualClock clock(0);
  ClientOptions o = fast_options(bin.port(), 0);
  o.clock = &clock;
  o.write_batch_bytes = 1024;
  o.max_write_delay_ms = 50;
  Client client;
  CHECK(client.init(o) == bm::kOk, "init");
  struct pollfd fds[2];
  CHECK(client.descriptors(fds, 2) == 0 && client.next_timeout_ms() == -1, "an idle client waits on something");
  client.send_reading(make_reading(0));
  CHECK(client.stats().writes == 0 && client.descriptors(fds, 2) == 0 && client.next_timeout_ms() == 0,
        "send_reading did more than queue (or no attempt is due)");
  CHECK(drive_until(client, &bin, 0, [&] { return client.connected(bm::kBinaryLink); }, 5000), "did not connect");
  CHECK(client.descriptors(fds, 2) == 1 && fds[0].fd == client.socket(bm::kBinaryLink) && fds[0].events == POLLIN,
        "connected, nothing due: should wait for input only");
  for (uint32_t i = 1; i < 10; ++i) client.send_reading(make_reading(i));
  client.process(0, 0);
  CHECK(client.stats().writes == 0 && client.next_timeout_ms() == 50, "160 bytes written before the delay: writes %llu, timer %lld",
        static_cast<unsigned long long>(client.stats().writes), static_cast<long long>(client.next_timeout_ms()));
  clock.advance(50);
  client.process(0, 0);
  CHECK(client.stats().writes == 1 && client.pending_frames() == 0, "after the delay: writes %llu", static_cast<unsigned long long>(client.stats().writes));
  for (uint32_t i = 10; i < 73; ++i) client.send_reading(make_reading(i));  // 63 frames: 1008 bytes
  client.process(0, 0);
  CHECK(client.stats().writes == 1, "written before the batch was full");
  client.send_reading(make_reading(73));  // 1024 bytes
  client.process(0, 0);
  CHECK(client.stats().writes == 2 && client.pending_frames() == 0, "a full batch was not written at once: writes %llu",
        static_cast<unsigned long long>(client.stats().writes));
  std::string want;
  for (uint32_t i = 0; i < 74; ++i) want += frame_of(i);
  CHECK(drive_until(client, &bin, 0, [&] { return bin.all().size() >= want.size(); }, 5000) && bin.all() == want, "bytes differ");
  std::printf("coalescing: 74 readings in 2 send() calls (one by delay, one by size)\n");
}

// With caller storage and a numeric host, sending, polling and flushing allocate nothing: the
// device can run with no heap after init().
void test_no_heap_after_init() {
  Listener bin, json;
  CHECK(bin.start(0) && json.start(0), "cannot listen");
  ClientOptions o = fast_options(bin.port(), json.port());
  o.frame_capacity = 64;
  o.max_cells = bm::kMaxCells;
  o.message_buffer_bytes = 2 * bm::max_cell_message_bytes(bm::kMaxCells);
  std::vector<uint8_t> storage(Client::storage_bytes(o));
  const CellSample cells96(0, 96), cells1024(1, bm::kMaxCells);
  Client client;
  CHECK(client.init(o, storage.data(), storage.size()) == bm::kOk, "init");
  long allocations = 0;
  const SteadyClock::time_point start = SteadyClock::now();
  uint32_t sent = 0;
  while (sent < 2000 && ms_since(start) < 10000) {
    const bm::PerformanceRecord perf = make_performance(static_cast<int>(sent));
    const bm::Prediction pred = make_prediction(static_cast<int>(sent));
    g_allocations = 0;
    g_count_allocations = true;
    client.send_reading(make_reading(sent));
    if (sent % 10 == 0) {
      client.send_performance(perf);
      client.send_prediction(pred);
      client.send_cell_reading(sent % 100 == 0 ? cells1024.reading : cells96.reading);
    }
    client.poll(1);
    g_count_allocations = false;
    allocations += g_allocations;
    ++sent;
    bin.pump();
    json.pump();
  }
  g_allocations = 0;
  g_count_allocations = true;
  const Error flushed = client.flush(2000);
  g_count_allocations = false;
  allocations += g_allocations;
  CHECK(flushed == bm::kOk && client.stats().frames_sent + client.stats().frames_dropped == 2000, "flush %s", bm::error_name(flushed));
  CHECK(allocations == 0, "%ld allocations after init()", allocations);
  CHECK(client.stats().messages_sent + client.stats().messages_dropped == 600, "messages: sent %llu dropped %llu",
        static_cast<unsigned long long>(client.stats().messages_sent), static_cast<unsigned long long>(client.stats().messages_dropped));
  std::printf("no heap: 2000 readings and 600 messages (200 with 96 or 1024 cells) sent, polled and flushed with %ld allocations\n", allocations);
}

}  // namespace

int main() {
  test_ring_overflow_rules();
  test_ring_model();
  test_options_validation();
  test_cell_options_and_refusals();
  test_exact_bytes_then_outage();
  test_cells_exact_bytes_then_outage();
  test_cell_message_cut_then_resent();
  test_close_confirmation();
  test_stalled_collector();
  test_stall_timeout();
  test_reset_mid_frame();
  test_close_mid_frame_then_reuse();
  test_dead_port();
  test_synchronous_connect_failure();
  test_connect_timeout();
  test_backoff_curve();
  test_resolve_once();
  test_names_ipv6_rotation();
  test_eintr();
  test_coalescing_event_loop();
  test_no_heap_after_init();
  std::printf("test_client: %d checks passed, %d failed\n", check::passes(), check::failures());
  return check::failures() == 0 ? 0 : 1;
}
