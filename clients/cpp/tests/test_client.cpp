// test_client: the Client over real TCP sockets on 127.0.0.1, against listeners in this process.
//
// Everything runs on one thread: the client is non-blocking and the test listeners are too, so
// the test interleaves client.poll() and listener.pump() (a thread only while close() waits).
// The scenarios: exact bytes on both ports; a collector outage with the ring overflowing; a
// stalled collector drained in odd-sized reads; a connection reset, and a close(), with a frame
// half written; a dead port and a collector that never completes the handshake, neither of which
// may block. Short writes are injected by a stand-in for send() (below), since Linux loopback
// rarely produces them.
//
// Frames are checked whole: each reading carries its sequence number in device_time and values
// derived from it, so a torn or misaligned frame decodes to a reading that does not match.

#include "battery_monitor/client.hpp"
#include "check.hpp"

#include <arpa/inet.h>
#include <atomic>
#include <functional>
#include <thread>
#include <string>
#include <vector>

using battery_monitor::Client;
using battery_monitor::ClientOptions;
using battery_monitor::Reading;
using battery_monitor::Stats;
namespace detail = battery_monitor::detail;

namespace {

typedef std::chrono::steady_clock Clock;

// Fault injection for short writes. Linux over loopback accepts frame-aligned writes whole or
// cuts them at frame-aligned points, and reports the socket writable only with room to spare, so
// the client would never be left mid-frame and the torn-frame logic would go untested; other
// stacks and real networks cut anywhere. While this is on, each send() the client makes writes a
// random number of bytes (at least one), or, one time in four, nothing (EAGAIN): the worst a
// kernel may do.
bool g_short_writes = false;
std::minstd_rand g_short_rng(99);
// When >= 0, the bytes send() still accepts before it reports EAGAIN on every call: a kernel
// whose buffer has filled at an exact point, here in the middle of a frame.
long g_write_budget = -1;

}  // namespace

// This definition takes the place of the C library's send() in this test program (a symbol in
// the executable wins), so the real Client code runs over real sockets. It forwards to sendto(),
// which with no address is the same call.
extern "C" ssize_t send(int fd, const void* buf, size_t len, int flags) {
  if (g_write_budget >= 0) {
    if (g_write_budget == 0) {
      errno = EAGAIN;
      return -1;
    }
    if (len > static_cast<size_t>(g_write_budget)) len = static_cast<size_t>(g_write_budget);
    g_write_budget -= static_cast<long>(len);
  }
  if (g_short_writes) {
    if (g_short_rng() % 4 == 0) {
      errno = EAGAIN;
      return -1;
    }
    if (len > 1) len = 1 + g_short_rng() % len;
  }
  return ::sendto(fd, buf, len, flags, 0, 0);
}

namespace {

int64_t ms_since(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

// Every value is exact in float32, so encode(make_reading(n)) is a single known byte pattern.
Reading make_reading(uint32_t seq) {
  return Reading(static_cast<float>(seq), 350.0f + static_cast<float>(seq % 1000) * 0.125f,
                 -100.0f + static_cast<float>(seq % 777) * 0.25f, 20.0f + static_cast<float>(seq % 97) * 0.0625f);
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

// A TCP listener on 127.0.0.1 that accepts one connection at a time and records what each
// connection sent. Non-blocking, driven by pump().
class Listener {
 public:
  Listener() : lfd_(-1), cfd_(-1), port_(0), reading_(true), max_chunk_(65536), rng_(12345) {}
  ~Listener() { stop(); }

  // port 0 picks a free port. rcvbuf > 0 shrinks the receive buffer (inherited by accepted
  // sockets) so a client fills it quickly. backlog 0 with nothing accepted lets one connection
  // queue; further SYNs are dropped.
  bool start(uint16_t port, int rcvbuf = 0, int backlog = 16) {
    lfd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (lfd_ < 0) return false;
    int one = 1;
    // The port is reused while the previous connection is in TIME_WAIT.
    ::setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (rcvbuf > 0) ::setsockopt(lfd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in addr;
    std::memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(lfd_, reinterpret_cast<struct sockaddr*>(&addr), sizeof addr) != 0) return false;
    if (::listen(lfd_, backlog) != 0) return false;
    socklen_t len = sizeof addr;
    ::getsockname(lfd_, reinterpret_cast<struct sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
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
          ::close(cfd_);
        }
        set_nonblocking_(fd);
        cfd_ = fd;
        streams_.push_back(std::string());
      }
    }
    if (cfd_ >= 0 && reading_) read_(false);
  }

  // Orderly close: the client sees end-of-stream.
  void stop() {
    if (cfd_ >= 0) ::close(cfd_);
    if (lfd_ >= 0) ::close(lfd_);
    cfd_ = lfd_ = -1;
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

// Drives the client and the listeners until `done` or the timeout; false on timeout.
bool pump_until(Client& client, Listener* a, Listener* b, const std::function<bool()>& done, int timeout_ms) {
  const Clock::time_point start = Clock::now();
  for (;;) {
    if (a) a->pump();
    if (b) b->pump();
    if (done()) return true;
    if (ms_since(start) > timeout_ms) return false;
    client.poll(2);
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

// --- The queues on their own ------------------------------------------------------------------

// Random pushes, partial writes and disconnects against FrameRing. What a receiver sees on each
// connection, after dropping a trailing partial frame as the collector does, must be whole
// frames of ours in increasing order; a frame cut by a disconnect must open the next connection.
void test_ring_model() {
  std::minstd_rand rng(7);
  uint64_t pushed = 0;
  int cut_frames = 0;
  for (int round = 0; round < 200; ++round) {
    const std::size_t capacity = 1 + rng() % 9;
    detail::FrameRing ring(capacity);
    std::vector<std::string> connections(1);
    uint32_t next = 0;
    bool ok = true;
    for (int step = 0; step < 400; ++step) {
      const unsigned action = rng() % 10;
      if (action < 5) {
        const std::string f = frame_of(next++);
        ring.push(reinterpret_cast<const uint8_t*>(f.data()));
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
        const std::size_t partial = last.size() % 16;
        std::string cut;
        if (partial) {
          cut = last.substr(last.size() - partial);
          last.resize(last.size() - partial);  // the collector drops it
        }
        ring.restart();
        connections.push_back(std::string());
        if (partial) {
          // The cut frame must be sent again whole, first thing on the new connection.
          std::size_t len = 0;
          const uint8_t* p = ring.peek(len);
          ok = ok && len >= 16 && std::memcmp(p, cut.data(), partial) == 0;
          ++cut_frames;
        }
      }
    }
    // Drain.
    for (;;) {
      std::size_t len = 0;
      const uint8_t* p = ring.peek(len);
      if (len == 0) break;
      connections.back().append(reinterpret_cast<const char*>(p), len);
      ring.consume(len);
    }
    uint64_t received = 0;
    for (std::size_t c = 0; c < connections.size(); ++c) {
      std::vector<uint32_t> seqs;
      ok = ok && frames_to_seqs(connections[c], seqs) && strictly_increasing(seqs);
      received += seqs.size();
    }
    // Every frame is either sent, dropped, or (resent ones) counted once per delivery.
    ok = ok && ring.sent() + ring.dropped() == next && received == ring.sent();
    CHECK(ok, "ring model round %d (capacity %lu) broke an invariant", round, static_cast<unsigned long>(capacity));
    if (!ok) break;
  }
  std::printf("ring model: %llu frames through 200 random rounds, %d frames cut by a disconnect and resent\n",
              static_cast<unsigned long long>(pushed), cut_frames);
}

void test_ring_overflow_rules() {
  detail::FrameRing ring(3);
  for (uint32_t i = 0; i < 3; ++i) CHECK(ring.push(reinterpret_cast<const uint8_t*>(frame_of(i).data())), "push %u", i);
  CHECK(!ring.push(reinterpret_cast<const uint8_t*>(frame_of(3).data())), "overflow not reported");
  std::size_t len = 0;
  const uint8_t* p = ring.peek(len);
  CHECK(ring.dropped() == 1 && std::memcmp(p, frame_of(1).data(), 16) == 0, "oldest (0) not dropped");
  // Pin the head (frame 1) with a partial write: overflow must now drop frame 2, not frame 1.
  ring.consume(5);
  ring.push(reinterpret_cast<const uint8_t*>(frame_of(4).data()));
  std::string wire;
  while ((p = ring.peek(len)) && len) {
    wire.append(reinterpret_cast<const char*>(p), len);
    ring.consume(len);
  }
  CHECK(wire == frame_of(1).substr(5) + frame_of(3) + frame_of(4), "pinned head was not kept");
  CHECK(ring.dropped() == 2 && ring.sent() == 3, "dropped %llu sent %llu",
        static_cast<unsigned long long>(ring.dropped()), static_cast<unsigned long long>(ring.sent()));

  // Capacity 1 with the only frame mid-write: the new frame is the one dropped.
  detail::FrameRing one(1);
  one.push(reinterpret_cast<const uint8_t*>(frame_of(10).data()));
  one.consume(3);
  CHECK(!one.push(reinterpret_cast<const uint8_t*>(frame_of(11).data())), "capacity-1 overflow not reported");
  p = one.peek(len);
  CHECK(len == 13 && std::memcmp(p, frame_of(10).data() + 3, 13) == 0, "capacity-1 pinned frame lost");

  // Messages follow the same rules.
  detail::MessageQueue q(2);
  q.push("first\n");
  q.consume(2);
  q.push("second\n");
  q.push("third\n");
  std::string out;
  while ((p = q.peek(len)) && len) {
    out.append(reinterpret_cast<const char*>(p), len);
    q.consume(len);
  }
  CHECK(out == "rst\nthird\n" && q.dropped() == 1 && q.sent() == 2, "message queue: %s", out.c_str());
  std::printf("ring overflow rules: oldest dropped, a partly written head never\n");
}

// --- Over real sockets --------------------------------------------------------------------------

void test_exact_bytes_then_outage() {
  Listener bin, json;
  CHECK(bin.start(0) && json.start(0), "cannot listen");
  ClientOptions o = fast_options(bin.port(), json.port());
  o.frame_capacity = 8;
  o.message_capacity = 4;
  Client client(o);

  // 1. Connected: the exact bytes arrive.
  std::string want_bin, want_json;
  for (uint32_t i = 0; i < 100; ++i) {
    CHECK(client.send_reading(make_reading(i)), "send_reading %u refused", i);
    want_bin += frame_of(i);
    if (i % 25 == 0) {
      client.send_performance(make_performance(static_cast<int>(i)));
      client.send_prediction(make_prediction(static_cast<int>(i)));
      want_json += perf_line(static_cast<int>(i)) + pred_line(static_cast<int>(i));
    }
  }
  CHECK(pump_until(client, &bin, &json, [&] { return bin.all().size() >= want_bin.size() && json.all().size() >= want_json.size(); }, 5000),
        "data did not arrive: %lu of %lu bytes", static_cast<unsigned long>(bin.all().size()),
        static_cast<unsigned long>(want_bin.size()));
  CHECK(bin.all() == want_bin, "binary bytes differ");
  CHECK(json.all() == want_json, "JSON bytes differ:\n%s", json.all().c_str());
  Stats s = client.stats();
  CHECK(s.frames_sent == 100 && s.frames_dropped == 0 && s.messages_sent == 8 && s.messages_dropped == 0,
        "stats after phase 1: sent %llu dropped %llu messages %llu", static_cast<unsigned long long>(s.frames_sent),
        static_cast<unsigned long long>(s.frames_dropped), static_cast<unsigned long long>(s.messages_sent));
  std::printf("exact bytes: 100 frames and 8 messages arrived byte for byte\n");

  // 2. The collector goes away. Once the client has seen the close, readings stay in the ring
  //    (capacity 8): 20 more means the oldest 12 are dropped and counted.
  const uint16_t bin_port = bin.port(), json_port = json.port();
  bin.stop();
  json.stop();
  CHECK(pump_until(client, 0, 0, [&] { return !client.binary_connected() && !client.json_connected(); }, 2000),
        "client did not notice the collector closing");
  for (uint32_t i = 100; i < 120; ++i) client.send_reading(make_reading(i));
  for (int m = 0; m < 3; ++m) {
    client.send_performance(make_performance(100 + m));
    client.send_prediction(make_prediction(100 + m));
  }
  // Reconnect attempts fail meanwhile; none of this may block.
  const Clock::time_point t0 = Clock::now();
  for (int k = 0; k < 20; ++k) client.poll(5);
  CHECK(ms_since(t0) < 2000, "polling a dead collector took %lld ms", static_cast<long long>(ms_since(t0)));
  s = client.stats();
  CHECK(client.pending_frames() == 8 && s.frames_dropped == 12, "pending %lu dropped %llu",
        static_cast<unsigned long>(client.pending_frames()), static_cast<unsigned long long>(s.frames_dropped));
  CHECK(client.pending_messages() == 4 && s.messages_dropped == 2, "pending messages %lu dropped %llu",
        static_cast<unsigned long>(client.pending_messages()), static_cast<unsigned long long>(s.messages_dropped));
  CHECK(s.connect_failures > 0, "no failed reconnect attempts recorded");

  // 3. The collector comes back on the same ports: the 8 newest readings arrive, in order,
  //    whole, and so do the 4 newest messages, even when every write is cut short.
  g_short_writes = true;
  Listener bin2, json2;
  CHECK(bin2.start(bin_port) && json2.start(json_port), "cannot listen again on the same ports");
  bin2.set_max_chunk(7);
  std::string want_bin2, want_json2;
  for (uint32_t i = 112; i < 120; ++i) want_bin2 += frame_of(i);
  want_json2 = perf_line(101) + pred_line(101) + perf_line(102) + pred_line(102);  // 4 newest of 6
  CHECK(pump_until(client, &bin2, &json2, [&] { return bin2.all().size() >= want_bin2.size() && json2.all().size() >= want_json2.size(); }, 5000),
        "buffered data did not arrive after the restart");
  std::vector<uint32_t> seqs;
  CHECK(frames_to_seqs(bin2.all(), seqs), "torn or foreign frame after reconnect");
  CHECK(bin2.all() == want_bin2, "after reconnect got %lu frames, first %u", static_cast<unsigned long>(seqs.size()),
        seqs.empty() ? 0u : seqs[0]);
  CHECK(json2.all() == want_json2, "JSON after reconnect:\n%s", json2.all().c_str());
  s = client.stats();
  CHECK(s.reconnects >= 2 && s.frames_sent == 108 && s.messages_sent == 12, "reconnects %llu sent %llu messages %llu",
        static_cast<unsigned long long>(s.reconnects), static_cast<unsigned long long>(s.frames_sent),
        static_cast<unsigned long long>(s.messages_sent));
  // close() waits for the collector to close its side, so the listeners run on a thread here.
  std::atomic<bool> closing(true);
  std::thread collector([&] {
    while (closing) {
      bin2.pump();
      json2.pump();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  const bool confirmed = client.close(2000);
  closing = false;
  collector.join();
  g_short_writes = false;
  CHECK(confirmed, "graceful close was not confirmed");
  CHECK(!bin2.has_connection() && !json2.has_connection(), "listeners did not see end-of-stream");
  std::printf("outage: 20 readings while down, 12 oldest dropped, 8 newest delivered in order after restart "
              "(%llu failed attempts, %llu reconnects)\n",
              static_cast<unsigned long long>(s.connect_failures), static_cast<unsigned long long>(s.reconnects));
}

// A collector that stops reading: the kernel buffers fill, send() writes part of a frame, the ring
// overflows. Then it reads again in odd-sized pieces: every frame must arrive whole and in order.
void test_stalled_collector() {
  g_short_writes = true;
  Listener bin;
  CHECK(bin.start(0, 4096), "cannot listen");
  bin.set_reading(false);
  ClientOptions o = fast_options(bin.port(), 0);
  o.frame_capacity = 256;
  o.socket_send_buffer = 4096;  // so the stall reaches the ring quickly
  Client client(o);
  const uint32_t total = 50000;
  for (uint32_t i = 0; i < total; ++i) {
    client.send_reading(make_reading(i));
    bin.pump();
  }
  Stats s = client.stats();
  CHECK(s.frames_dropped > 0 && client.pending_frames() == 256, "the stall did not fill the ring (dropped %llu)",
        static_cast<unsigned long long>(s.frames_dropped));
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
  g_short_writes = false;
  std::printf("stalled collector: %u readings, %llu delivered whole and in order, %llu dropped while stalled\n", total,
              static_cast<unsigned long long>(s.frames_sent), static_cast<unsigned long long>(s.frames_dropped));
}

// The collector resets the connection while a frame is half written. The next connection must
// start on a frame boundary, with that frame sent again whole. With short writes on, most resets
// catch a frame half written; rounds repeat until three have.
void test_reset_mid_frame() {
  g_short_writes = true;
  int cut_rounds = 0;
  for (int round = 0; round < 20 && cut_rounds < 3; ++round) {
    Listener bin;
    CHECK(bin.start(0, 4096), "cannot listen");
    bin.set_reading(false);
    ClientOptions o = fast_options(bin.port(), 0);
    o.frame_capacity = 333;
    o.socket_send_buffer = 4096;
    Client client(o);
    uint32_t next = 0;
    // Fill until the client has to keep readings in its ring.
    while (next < 100000 && client.pending_frames() < o.frame_capacity / 2) {
      client.send_reading(make_reading(next++));
      bin.pump();
    }
    const Stats before = client.stats();
    bin.reset_connection();
    CHECK(pump_until(client, 0, 0, [&] { return !client.binary_connected(); }, 2000), "reset not noticed");
    const Stats at_loss = client.stats();
    for (int i = 0; i < 10; ++i) client.send_reading(make_reading(next++));
    bin.set_reading(true);
    bin.set_max_chunk(13);
    CHECK(pump_until(client, &bin, 0, [&] { return client.pending_frames() == 0 && bin.streams().size() >= 2 && bin.streams()[1].size() == (client.stats().frames_sent - at_loss.frames_sent) * 16; }, 5000),
          "did not deliver after the reset");
    const Stats after = client.stats();
    std::vector<uint32_t> seqs;
    const std::string second = bin.streams().size() >= 2 ? bin.streams()[1] : std::string();
    CHECK(frames_to_seqs(second, seqs), "new connection does not start on a frame boundary");
    CHECK(strictly_increasing(seqs) && !seqs.empty() && seqs.back() == next - 1, "frames after the reset out of order");
    CHECK(after.reconnects == 1, "reconnects %llu", static_cast<unsigned long long>(after.reconnects));
    if (after.resent > before.resent) ++cut_rounds;
  }
  g_short_writes = false;
  CHECK(cut_rounds > 0, "no reset ever hit a half-written frame, so the resend path was not exercised");
  std::printf("reset mid-frame: %d resets hit a half-written frame; each was resent whole on the new connection\n",
              cut_rounds);
}

// close() gives up while a frame is half written (the fake kernel below takes 5 frames and 7
// bytes, then nothing). The same Client, used again, must open its next connection with that
// frame whole.
void test_close_mid_frame_then_reuse() {
  Listener bin;
  CHECK(bin.start(0), "cannot listen");
  Client client(fast_options(bin.port(), 0));
  g_write_budget = 5 * 16 + 7;
  for (uint32_t i = 0; i < 10; ++i) client.send_reading(make_reading(i));
  CHECK(!client.close(50), "close() claimed success with writes blocked");
  g_write_budget = -1;
  const Stats at_close = client.stats();
  CHECK(at_close.frames_sent == 5 && at_close.resent == 1 && client.pending_frames() == 5,
        "after close: sent %llu resent %llu pending %lu", static_cast<unsigned long long>(at_close.frames_sent),
        static_cast<unsigned long long>(at_close.resent), static_cast<unsigned long>(client.pending_frames()));
  client.send_reading(make_reading(10));
  CHECK(pump_until(client, &bin, 0, [&] { return client.pending_frames() == 0 && bin.streams().size() == 2 && bin.streams()[1].size() == 6 * 16; }, 5000),
        "did not deliver after reuse");
  std::string want_first, want_second;
  for (uint32_t i = 0; i < 5; ++i) want_first += frame_of(i);
  want_first += frame_of(5).substr(0, 7);  // what the collector saw, and drops, on the first connection
  for (uint32_t i = 5; i <= 10; ++i) want_second += frame_of(i);
  CHECK(bin.streams().size() == 2 && bin.streams()[0] == want_first && bin.streams()[1] == want_second,
        "streams after close and reuse are not as expected");
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
  Client client(o);
  const Clock::time_point t0 = Clock::now();
  for (uint32_t i = 0; i < 100; ++i) client.send_reading(make_reading(i));
  CHECK(!client.flush(200), "flush to a dead port reported success");
  const int64_t took = ms_since(t0);
  const Stats s = client.stats();
  CHECK(took < 2000, "100 sends and a 200 ms flush took %lld ms", static_cast<long long>(took));
  CHECK(s.frames_dropped == 90 && client.pending_frames() == 10 && s.connect_failures > 0,
        "dropped %llu pending %lu failures %llu", static_cast<unsigned long long>(s.frames_dropped),
        static_cast<unsigned long>(client.pending_frames()), static_cast<unsigned long long>(s.connect_failures));
  std::printf("dead port: returned in %lld ms, 90 oldest of 100 dropped, %llu connect attempts refused\n",
              static_cast<long long>(took), static_cast<unsigned long long>(s.connect_failures));
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
    struct sockaddr_in addr;
    std::memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(full.port());
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::connect(raw[i], reinterpret_cast<struct sockaddr*>(&addr), sizeof addr);
  }
  ClientOptions o = fast_options(full.port(), 0);
  o.connect_timeout_ms = 100;
  Client client(o);
  client.send_reading(make_reading(1));
  const Clock::time_point t0 = Clock::now();
  int64_t longest = 0;
  while (ms_since(t0) < 1000) {
    const Clock::time_point p0 = Clock::now();
    client.poll(50);
    if (ms_since(p0) > longest) longest = ms_since(p0);
  }
  const Stats s = client.stats();
  CHECK(!client.binary_connected() && s.frames_sent == 0, "connected to a full accept queue");
  CHECK(s.connect_failures >= 2, "connect timeout did not fire (failures %llu)", static_cast<unsigned long long>(s.connect_failures));
  CHECK(longest < 500, "a poll(50) took %lld ms", static_cast<long long>(longest));
  for (int i = 0; i < 3; ++i) ::close(raw[i]);
  std::printf("connect timeout: %llu attempts timed out in 1 s, longest poll(50) %lld ms\n",
              static_cast<unsigned long long>(s.connect_failures), static_cast<long long>(longest));
}

}  // namespace

int main() {
  test_ring_overflow_rules();
  test_ring_model();
  test_exact_bytes_then_outage();
  test_stalled_collector();
  test_reset_mid_frame();
  test_close_mid_frame_then_reuse();
  test_dead_port();
  test_connect_timeout();
  std::printf("test_client: %d checks passed, %d failed\n", check::passes(), check::failures());
  return check::failures() == 0 ? 0 : 1;
}
