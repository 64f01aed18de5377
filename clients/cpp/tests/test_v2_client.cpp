// test_v2_client: the v2 Client over real loopback sockets against a small v2 peer in this
// process (Peer: the service's side of docs/protocol.md, storing frames by sequence the way the
// service keys them, so a frame sent twice is stored once), and across a process killed with
// SIGKILL between accepting readings and their acknowledgement.
//
// One thread: the client and the peer are both non-blocking, and the test interleaves
// client.poll() with peer.pump(). Every wait is bounded.

#include "battery_monitor/v2.hpp"
#include "check.hpp"

#include <cstdlib>
#include <functional>
#include <map>
#include <signal.h>
#include <string>
#include <sys/wait.h>
#include <vector>

namespace bm = battery_monitor;
namespace v2 = battery_monitor::v2;

// Counts allocations while g_count_allocations is set (the no-heap test), as test_client does.
static bool g_count_allocations = false;
static long g_allocations = 0;

__attribute__((noinline)) void* operator new(std::size_t n) {
  if (g_count_allocations) ++g_allocations;
  void* p = std::malloc(n ? n : 1);
  if (!p) std::abort();
  return p;
}
__attribute__((noinline)) void* operator new[](std::size_t n) { return operator new(n); }
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

std::string g_dir;
int g_files = 0;

std::string fresh_path() {
  char buf[32];
  std::snprintf(buf, sizeof buf, "/q%d", ++g_files);
  return g_dir + buf;
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

// The service's side, reduced to what the protocol promises: one connection at a time; the
// handshake answered with `status`, or with resume_after = the highest sequence acknowledged
// for the stream; frames checked, stored by sequence (a second copy counted as a duplicate, not
// stored), acknowledged cumulatively after each batch read (when `acking`). A gap in the sequence
// without kFlagSkipped closes the connection, as the service does.
class Peer {
 public:
  Peer()
      : status(v2::kStatusOk), acking(true), cut_after_bytes(-1), corrupt_next_ack(false), connections(0), handshakes(0), duplicates(0), bad_frames(0),
        gaps(0), lfd_(-1), cfd_(-1), port_(0), conn_bytes_(0), handshaken_(false), last_seq_(0), resume_after_(0) {
    lfd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    std::memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    const bool ok = ::bind(lfd_, reinterpret_cast<struct sockaddr*>(&a), len) == 0 && ::listen(lfd_, 8) == 0 &&
                    ::getsockname(lfd_, reinterpret_cast<struct sockaddr*>(&a), &len) == 0;
    CHECK(ok, "peer listener: errno %d", errno);
    port_ = ntohs(a.sin_port);
    set_nonblocking(lfd_);
  }
  ~Peer() {
    drop();
    if (lfd_ >= 0) ::close(lfd_);
  }

  int port() const { return port_; }

  int status;
  bool acking;
  long cut_after_bytes;   // >= 0: close the connection after reading this many of its bytes
  bool corrupt_next_ack;  // flip a bit in the next acknowledgement
  std::map<uint64_t, uint64_t> acked_through;  // stream -> highest sequence acknowledged
  std::map<uint64_t, double> stored;           // sequence -> pack_current (readings carry -n)
  int connections;
  int handshakes;
  int duplicates;
  int bad_frames;
  int gaps;                        // frames refused for an unflagged gap
  std::map<uint64_t, int> flagged;  // sequence -> how many times it came with kFlagSkipped
  std::string battery_id;

  bool has_connection() const { return cfd_ >= 0; }

  // Closes the current connection (orderly).
  void drop() {
    if (cfd_ >= 0) ::close(cfd_);
    cfd_ = -1;
  }

  void pump() {
    const int fd = ::accept(lfd_, 0, 0);
    if (fd >= 0) {
      drop();
      set_nonblocking(fd);
      cfd_ = fd;
      ++connections;
      in_.clear();
      conn_bytes_ = 0;
      handshaken_ = false;
      last_seq_ = 0;
    }
    if (cfd_ < 0) return;
    uint8_t buf[4096];
    bool cut = false;
    for (;;) {
      std::size_t want = sizeof buf;
      if (cut_after_bytes >= 0) {
        const long left = cut_after_bytes - conn_bytes_;
        if (left <= 0) {
          cut = true;
          break;
        }
        if (static_cast<std::size_t>(left) < want) want = static_cast<std::size_t>(left);
      }
      const ssize_t n = ::recv(cfd_, buf, want, 0);
      if (n > 0) {
        in_.append(reinterpret_cast<char*>(buf), static_cast<std::size_t>(n));
        conn_bytes_ += n;
        continue;
      }
      if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        drop();
        return;
      }
      break;
    }
    if (!parse_()) return;
    if (cut) {
      // Mid-frame, before acknowledging what this batch stored: the client must send it again.
      drop();
    }
  }

 private:
  bool parse_() {
    std::size_t at = 0;
    const uint8_t* p = reinterpret_cast<const uint8_t*>(in_.data());
    if (!handshaken_) {
      v2::Handshake h;
      const int st = v2::check_handshake(p, in_.size(), h);
      if (st < 0) return true;
      v2::Answer a;
      a.status = static_cast<uint8_t>(st != v2::kStatusOk ? st : status);
      stream_ = h.stream_id;
      battery_id = h.battery_id;
      a.resume_after = acked_through[stream_];
      resume_after_ = a.resume_after;
      uint8_t out[v2::kAnswerBytes];
      v2::encode_answer(a, out);
      send_(out, sizeof out);
      ++handshakes;
      if (a.status != v2::kStatusOk) {
        drop();
        return false;
      }
      handshaken_ = true;
      at = h.length;
    }
    uint64_t newest = 0;
    for (;;) {
      v2::FrameView f;
      const v2::FrameCheck c = v2::decode_frame(p + at, in_.size() - at, f);
      if (c == v2::kFramePartial) break;
      if (c != v2::kFrameOk || f.sequence <= last_seq_) {
        ++bad_frames;
        drop();
        return false;
      }
      const uint64_t due = (last_seq_ > resume_after_ ? last_seq_ : resume_after_) + 1;
      if (f.sequence > due && !(f.flags & v2::kFlagSkipped)) {
        ++gaps;
        drop();
        return false;
      }
      if (f.flags & v2::kFlagSkipped) ++flagged[f.sequence];
      last_seq_ = f.sequence;
      if (stored.count(f.sequence)) {
        ++duplicates;
      } else {
        stored[f.sequence] = f.value(1);
      }
      newest = f.sequence;
      at += f.length;
    }
    in_.erase(0, at);
    if (newest > 0 && acking && cut_after_bytes < 0) ack_(newest);
    return true;
  }

  void ack_(uint64_t seq) {
    uint8_t out[v2::kAckBytes];
    v2::encode_ack(seq, out);
    if (corrupt_next_ack) {
      out[6] ^= 0x10;
      corrupt_next_ack = false;
    } else if (seq > acked_through[stream_]) {
      acked_through[stream_] = seq;
    }
    send_(out, sizeof out);
  }

  void send_(const uint8_t* data, std::size_t n) {
    // Tiny messages on an idle socket: the kernel takes them whole.
    if (cfd_ >= 0 && ::send(cfd_, data, n, MSG_NOSIGNAL) != static_cast<ssize_t>(n)) drop();
  }

  int lfd_;
  int cfd_;
  int port_;
  std::string in_;
  long conn_bytes_;
  bool handshaken_;
  uint64_t last_seq_;
  uint64_t resume_after_;
  uint64_t stream_;
};

bool pump_until(v2::Client& client, Peer* peer, const std::function<bool()>& done, int timeout_ms) {
  const SteadyClock::time_point start = SteadyClock::now();
  for (;;) {
    if (peer) peer->pump();
    if (done()) return true;
    if (ms_since(start) > timeout_ms) return false;
    client.poll(2);
  }
}

// The same through the event-loop API, as an application's own loop would use it.
bool drive_until(v2::Client& client, Peer& peer, const std::function<bool()>& done, int timeout_ms) {
  const SteadyClock::time_point start = SteadyClock::now();
  for (;;) {
    peer.pump();
    if (done()) return true;
    if (ms_since(start) > timeout_ms) return false;
    struct pollfd fds[1];
    const int n = client.descriptors(fds, 1);
    const int64_t t = client.next_timeout_ms();
    const int rc = ::poll(fds, static_cast<nfds_t>(n), t < 0 || t > 2 ? 2 : static_cast<int>(t));
    client.process(fds, rc > 0 ? n : 0);
  }
}

// flush() for a single thread: pumps the peer while the client works.
bool deliver(v2::Client& client, Peer& peer, int timeout_ms) {
  return pump_until(client, &peer, [&] { return client.pending() == 0; }, timeout_ms);
}

v2::ClientOptions options_for(int port, const std::string& path) {
  v2::ClientOptions o;
  o.host = "127.0.0.1";
  o.port = port;
  o.battery_id = "pack-7";
  o.queue.path = path;
  o.queue.file_bytes = 1024 + 200 * 80;
  o.queue.fsync = v2::kFsyncNever;  // page cache: enough for everything but a power loss, and fast
  o.connect_timeout_ms = 500;
  o.backoff_initial_ms = 5;
  o.backoff_max_ms = 40;
  o.ack_timeout_ms = 2000;
  return o;
}

v2::DataReading reading(uint64_t n) {
  v2::DataReading r;
  r.timestamp = 1764288000.0 + static_cast<double>(n);
  r.pack_voltage = 350.0 + static_cast<double>(n % 100);
  r.pack_current = -static_cast<double>(n);
  r.cell_temp = 25.0;
  return r;
}

// The peer stored exactly sequences first..last, each the reading of that number.
bool stored_exactly(const Peer& peer, uint64_t first, uint64_t last) {
  if (peer.stored.size() != last - first + 1) return false;
  for (uint64_t s = first; s <= last; ++s) {
    std::map<uint64_t, double>::const_iterator it = peer.stored.find(s);
    if (it == peer.stored.end() || it->second != -static_cast<double>(s)) return false;
  }
  return true;
}


void test_options() {
  v2::ClientOptions o = options_for(1, fresh_path());
  const char* problem = 0;
  CHECK(v2::Client::validate(o, &problem) == bm::kOk, "good options refused: %s", problem ? problem : "");
  v2::ClientOptions bad = o;
  bad.battery_id = "";
  CHECK(v2::Client::validate(bad, &problem) == bm::kErrInvalidOptions && std::strstr(problem, "battery_id"), "no battery_id");
  bad = o;
  bad.battery_id = "pack 7";
  CHECK(v2::Client::validate(bad, &problem) == bm::kErrInvalidOptions, "a battery_id with a space");
  bad = o;
  bad.queue.path = "";
  CHECK(v2::Client::validate(bad, &problem) == bm::kErrInvalidOptions && std::strstr(problem, "queue.path"), "no queue path");
  bad = o;
  bad.queue.file_bytes = 1024 + 80;
  CHECK(v2::Client::validate(bad, &problem) == bm::kErrInvalidOptions && std::strstr(problem, "file_bytes"), "a one-slot queue");
  bad = o;
  bad.port = 0;
  CHECK(v2::Client::validate(bad, &problem) == bm::kErrInvalidOptions, "port 0");
  bad = o;
  bad.ack_timeout_ms = 0;
  CHECK(v2::Client::validate(bad, &problem) == bm::kErrInvalidOptions, "ack_timeout_ms 0");
  v2::Client c;
  CHECK(c.init(bad) == bm::kErrInvalidOptions && c.send_reading(reading(1)) == bm::kErrNotInitialized, "init accepted invalid options");
  bad = o;
  bad.queue.path = g_dir + "/missing/dir/q";
  v2::Client d;
  CHECK(d.init(bad) == bm::kErrQueue && d.last_errno() == ENOENT, "a queue in a missing directory: %s, errno %d", bm::error_name(d.last_error()),
        d.last_errno());
  std::printf("v2 client: invalid options refused by validate() and init(); an unopenable queue is kErrQueue with its errno\n");
}

void test_handshake_and_resume() {
  Peer peer;
  v2::ClientOptions o = options_for(peer.port(), fresh_path());
  o.queue.stream_id = 0x0123456789abcdefull;
  peer.acked_through[o.queue.stream_id] = 4;  // the service already holds 1-4 (a lost ack before a reboot)
  v2::Client c;
  CHECK(c.init(o) == bm::kOk, "init: %s", bm::error_name(c.last_error()));
  CHECK(c.stream_id() == 0x0123456789abcdefull, "stream id");
  for (uint64_t n = 1; n <= 10; ++n) CHECK(c.send_reading(reading(n)) == bm::kOk, "accept %llu", static_cast<unsigned long long>(n));
  CHECK(c.pending() == 10 && c.stats().accepted == 10, "pending %llu", static_cast<unsigned long long>(c.pending()));
  CHECK(deliver(c, peer, 5000), "flush: %s", bm::error_name(c.last_error()));
  CHECK(peer.battery_id == "pack-7" && peer.handshakes == 1, "handshake: id %s, %d handshakes", peer.battery_id.c_str(), peer.handshakes);
  CHECK(stored_exactly(peer, 5, 10), "resume_after 4: the peer got %lu frames from %llu", static_cast<unsigned long>(peer.stored.size()),
        peer.stored.empty() ? 0ull : static_cast<unsigned long long>(peer.stored.begin()->first));
  const v2::Stats s = c.stats();
  CHECK(s.acknowledged == 10 && s.pending == 0 && s.frames_sent == 6 && s.dropped == 0, "acknowledged %llu, sent %llu",
        static_cast<unsigned long long>(s.acknowledged), static_cast<unsigned long long>(s.frames_sent));
  CHECK(peer.duplicates == 0, "duplicates %d", peer.duplicates);
  std::printf("v2 client: handshake with battery_id and stream; resume_after 4 skips 1-4; 5-10 sent and acknowledged\n");
}

void test_cumulative_acks_free_the_queue() {
  Peer peer;
  peer.acking = false;
  const std::string path = fresh_path();
  v2::ClientOptions o = options_for(peer.port(), path);
  {
    v2::Client c;
    CHECK(c.init(o) == bm::kOk, "init");
    for (uint64_t n = 1; n <= 30; ++n) c.send_reading(reading(n));
    pump_until(c, &peer, [&] { return peer.stored.size() == 30; }, 5000);
    CHECK(stored_exactly(peer, 1, 30), "stored %lu", static_cast<unsigned long>(peer.stored.size()));
    CHECK(c.pending() == 30, "readings left the queue without an acknowledgement: %llu", static_cast<unsigned long long>(c.pending()));
    peer.acking = true;
    c.send_reading(reading(31));  // its batch brings the cumulative ack for 1-31
    CHECK(drive_until(c, peer, [&] { return c.pending() == 0; }, 5000), "one cumulative ack did not free the queue: %llu",
          static_cast<unsigned long long>(c.pending()));
    CHECK(c.stats().acknowledged == 31, "acknowledged %llu", static_cast<unsigned long long>(c.stats().acknowledged));
    c.close(1000);
  }
  // The file agrees: nothing to send after a reopen.
  v2::Client again;
  CHECK(again.init(o) == bm::kOk && again.report().recovered == 0 && again.pending() == 0, "reopened with %llu pending",
        static_cast<unsigned long long>(again.pending()));
  std::printf("v2 client: readings stay queued until acknowledged; one cumulative ack frees 31\n");
}

void test_cut_mid_frame_resends() {
  Peer peer;
  v2::ClientOptions o = options_for(peer.port(), fresh_path());
  v2::Client c;
  CHECK(c.init(o) == bm::kOk, "init");
  // Handshake (16 + 6 + 4) and three whole 48-byte frames, then half of the fourth.
  peer.cut_after_bytes = 26 + 3 * 48 + 20;
  for (uint64_t n = 1; n <= 20; ++n) c.send_reading(reading(n));
  CHECK(pump_until(c, &peer, [&] { return peer.connections >= 1 && !peer.has_connection(); }, 5000), "the peer did not cut");
  CHECK(stored_exactly(peer, 1, 3), "before the cut the peer stored %lu", static_cast<unsigned long>(peer.stored.size()));
  peer.cut_after_bytes = -1;
  CHECK(deliver(c, peer, 5000), "flush after the cut: %s", bm::error_name(c.last_error()));
  CHECK(stored_exactly(peer, 1, 20), "after reconnecting the peer holds %lu", static_cast<unsigned long>(peer.stored.size()));
  // 1-3 were stored but never acknowledged: sent again, and stored once.
  CHECK(peer.duplicates == 3 && c.stats().resent >= 3 && c.stats().reconnects >= 1, "duplicates %d, resent %llu", peer.duplicates,
        static_cast<unsigned long long>(c.stats().resent));
  CHECK(peer.bad_frames == 0, "the peer saw %d bad frames (a torn frame was continued?)", peer.bad_frames);
  std::printf("v2 client: a connection cut mid-frame; the unacknowledged went again whole, stored once\n");
}

// A full queue drops its oldest readings: the first frame sent after each skip carries
// kFlagSkipped (the service would otherwise take the gap for a frame lost on the way), no other;
// so does the first after a resume_after below what was acknowledged.
void test_skips_flagged() {
  Peer peer;
  v2::ClientOptions o = options_for(peer.port(), fresh_path());
  o.queue.file_bytes = 1024 + 4 * 80;  // four slots
  v2::Client c;
  CHECK(c.init(o) == bm::kOk, "init");
  // Offline: 1-6 went to make room, 7-10 wait.
  for (uint64_t n = 1; n <= 10; ++n) c.send_reading(reading(n));
  CHECK(c.stats().dropped == 6 && c.pending() == 4, "dropped %llu", static_cast<unsigned long long>(c.stats().dropped));
  CHECK(deliver(c, peer, 5000), "flush: %s", bm::error_name(c.last_error()));
  CHECK(stored_exactly(peer, 7, 10), "stored %lu from %llu", static_cast<unsigned long>(peer.stored.size()),
        peer.stored.empty() ? 0ull : static_cast<unsigned long long>(peer.stored.begin()->first));
  CHECK(peer.flagged.size() == 1 && peer.flagged.count(7), "flagged %lu, the first %llu", static_cast<unsigned long>(peer.flagged.size()),
        peer.flagged.empty() ? 0ull : static_cast<unsigned long long>(peer.flagged.begin()->first));
  // Connected, with 10 the last frame sent: 11-12 dropped before they were sent, then 13-16 follow.
  for (uint64_t n = 11; n <= 16; ++n) c.send_reading(reading(n));
  CHECK(deliver(c, peer, 5000), "flush: %s", bm::error_name(c.last_error()));
  for (uint64_t n = 13; n <= 16; ++n) CHECK(peer.stored.count(n) == 1, "%llu not stored", static_cast<unsigned long long>(n));
  CHECK(peer.stored.size() == 8 && peer.flagged.size() == 2 && peer.flagged.count(13), "flagged %lu", static_cast<unsigned long>(peer.flagged.size()));
  // And no flag without a skip.
  c.send_reading(reading(17));
  CHECK(deliver(c, peer, 5000), "flush: %s", bm::error_name(c.last_error()));
  CHECK(peer.stored.count(17) == 1 && peer.flagged.size() == 2, "17: stored %lu, flagged %lu", static_cast<unsigned long>(peer.stored.count(17)),
        static_cast<unsigned long>(peer.flagged.size()));
  CHECK(peer.gaps == 0 && peer.bad_frames == 0 && peer.connections == 1, "gaps %d, bad frames %d, connections %d", peer.gaps, peer.bad_frames,
        peer.connections);
  // A service that lost its position in a crash answers resume_after 14 after 17 was acknowledged:
  // the client no longer holds 15-17, so 18 comes flagged.
  peer.acked_through[c.stream_id()] = 14;
  peer.drop();
  c.send_reading(reading(18));
  CHECK(deliver(c, peer, 5000), "flush: %s", bm::error_name(c.last_error()));
  CHECK(peer.connections == 2 && peer.stored.count(18) == 1 && peer.flagged.count(18) == 1 && peer.flagged.size() == 3 && peer.gaps == 0,
        "connections %d, flagged %lu, gaps %d", peer.connections, static_cast<unsigned long>(peer.flagged.size()), peer.gaps);
  std::printf("v2 client: the first frame sent after a skip carries kFlagSkipped (7 and 13 after a full queue, 18 after a lagging resume_after), no other\n");
}

void on_event(void* context, const v2::Event& e) {
  std::vector<v2::Event>* log = static_cast<std::vector<v2::Event>*>(context);
  log->push_back(e);
}

void test_bad_status() {
  Peer peer;
  std::vector<v2::Event> events;
  v2::ClientOptions o = options_for(peer.port(), fresh_path());
  o.on_event = on_event;
  o.event_context = &events;
  v2::Client c;
  CHECK(c.init(o) == bm::kOk, "init");
  for (uint64_t n = 1; n <= 5; ++n) c.send_reading(reading(n));
  peer.status = v2::kStatusBusy;
  CHECK(pump_until(c, &peer, [&] { return peer.handshakes >= 3; }, 5000), "the client did not retry after 'busy' (%d handshakes)", peer.handshakes);
  CHECK(peer.stored.empty() && peer.bad_frames == 0, "frames were sent after a refusing answer");
  CHECK(c.last_error() == bm::kErrRejected && c.last_status() == v2::kStatusBusy && c.stats().rejected >= 2, "last error %s, status %d",
        bm::error_name(c.last_error()), c.last_status());
  bool reported = false;
  for (std::size_t i = 0; i < events.size(); ++i) {
    reported = reported || (events[i].kind == bm::kEventConnectFailed && events[i].error == bm::kErrRejected && events[i].status == v2::kStatusBusy);
  }
  CHECK(reported, "no connect-failed event with the status");
  CHECK(c.pending() == 5, "a refusing answer cost readings: %llu pending", static_cast<unsigned long long>(c.pending()));
  peer.status = v2::kStatusOk;
  CHECK(deliver(c, peer, 5000) && stored_exactly(peer, 1, 5), "not delivered once the peer took them");
  std::printf("v2 client: a 'busy' answer is reported (kErrRejected, status 4), retried with backoff; nothing lost\n");
}

void test_corrupt_ack_and_ack_timeout() {
  Peer peer;
  v2::ClientOptions o = options_for(peer.port(), fresh_path());
  o.ack_timeout_ms = 200;
  v2::Client c;
  CHECK(c.init(o) == bm::kOk, "init");
  peer.corrupt_next_ack = true;
  for (uint64_t n = 1; n <= 5; ++n) c.send_reading(reading(n));
  CHECK(pump_until(c, &peer, [&] { return c.last_error() == bm::kErrProtocol; }, 5000), "a corrupt ack was believed: %s", bm::error_name(c.last_error()));
  CHECK(c.pending() > 0 || peer.acked_through.begin()->second == 5, "a corrupt ack freed the queue");
  CHECK(deliver(c, peer, 5000) && stored_exactly(peer, 1, 5), "not delivered after the corrupt ack");
  // A peer that reads and stores but never acknowledges: abandoned after ack_timeout_ms.
  peer.acking = false;
  for (uint64_t n = 6; n <= 8; ++n) c.send_reading(reading(n));
  CHECK(pump_until(c, &peer, [&] { return c.stats().stalls >= 1; }, 5000), "no stall after ack_timeout_ms");
  CHECK(c.last_error() == bm::kErrStalled && c.pending() == 3, "last error %s", bm::error_name(c.last_error()));
  peer.acking = true;
  CHECK(deliver(c, peer, 5000) && stored_exactly(peer, 1, 8), "not delivered after the stall");
  std::printf("v2 client: a corrupt ack closes the connection; silence past ack_timeout_ms is a stall; both recover\n");
}

// Cells travel in the frame; a reading with more cells than the queue's slots is refused.
void test_cells_and_refusals() {
  Peer peer;
  v2::ClientOptions o = options_for(peer.port(), fresh_path());
  o.queue.max_cells = 96;
  o.queue.file_bytes = 64 * 1024;
  v2::Client c;
  CHECK(c.init(o) == bm::kOk, "init");
  std::vector<double> volts(96, 3.7), temps(97, 30.5);
  v2::DataReading r = reading(1);
  r.cell_voltages = &volts[0];
  r.cell_voltage_count = 96;
  r.cell_temps = &temps[0];
  r.cell_temp_count = 96;
  CHECK(c.send_reading(r) == bm::kOk, "96 cells refused");
  r.cell_temp_count = 97;
  CHECK(c.send_reading(r) == bm::kErrTooManyCells, "97 cells accepted by a 96-cell queue");
  r.cell_temp_count = 96;
  volts[5] = std::numeric_limits<double>::quiet_NaN();
  CHECK(c.send_reading(r) == bm::kErrRefused, "NaN accepted");
  v2::Performance p;
  p.cycle_count = 412.5;
  CHECK(c.send_performance(p) == bm::kErrRefused, "cycle_count 412.5 accepted");
  v2::Prediction q;
  q.timestamp = 1764288000;
  q.remaining_cycles = 1200;
  CHECK(c.send_prediction(q) == bm::kOk, "prediction refused");
  CHECK(c.stats().refused == 3 && c.stats().accepted == 2, "refused %llu accepted %llu", static_cast<unsigned long long>(c.stats().refused),
        static_cast<unsigned long long>(c.stats().accepted));
  CHECK(deliver(c, peer, 5000) && peer.stored.size() == 2 && peer.stored.count(1) && peer.stored.count(2), "cells and prediction not delivered");
  std::printf("v2 client: cells in the frame; too many cells, NaN and a fractional cycle_count refused, never queued\n");
}

// Nothing allocates after init(): accepting, sending, acknowledging, reconnecting.
void test_no_heap_after_init() {
  Peer peer;
  v2::ClientOptions o = options_for(peer.port(), fresh_path());
  static uint8_t storage[64 * 1024];
  CHECK(v2::Client::storage_bytes(o) <= sizeof storage, "storage_bytes %lu", static_cast<unsigned long>(v2::Client::storage_bytes(o)));
  v2::Client c;
  CHECK(c.init(o, storage, sizeof storage) == bm::kOk, "init with storage");
  g_allocations = 0;
  const SteadyClock::time_point start = SteadyClock::now();
  uint64_t n = 0;
  while ((n < 150 || c.pending() > 0) && ms_since(start) < 5000) {
    g_count_allocations = true;
    if (n < 150) c.send_reading(reading(++n));
    c.poll(1);
    g_count_allocations = false;
    peer.pump();
    if (n == 75 && peer.has_connection()) peer.drop();  // a reconnect inside the counted run
  }
  CHECK(c.pending() == 0 && stored_exactly(peer, 1, 150), "not delivered: %llu pending", static_cast<unsigned long long>(c.pending()));
  CHECK(g_allocations == 0, "%ld allocations after init()", g_allocations);
  std::printf("v2 client: 150 readings, a reconnect, no allocation after init()\n");
}

// The process is killed (SIGKILL) after readings were accepted and before they were
// acknowledged; a new process on the same queue file sends them all, and each is stored once.
void test_killed_between_accept_and_ack(v2::FsyncPolicy policy, const char* name) {
  Peer peer;
  peer.acking = false;  // the peer stores what arrives but acknowledges nothing before the kill
  const std::string path = fresh_path();
  v2::ClientOptions o = options_for(peer.port(), path);
  o.queue.fsync = policy;
  o.queue.fsync_every = 4;
  o.queue.fsync_interval_ms = 50;
  int pipefd[2];
  CHECK(::pipe(pipefd) == 0, "pipe");
  std::fflush(stdout);
  const pid_t child = ::fork();
  if (child == 0) {
    ::close(pipefd[0]);
    v2::Client c;
    if (c.init(o) != bm::kOk) ::_exit(3);
    for (uint64_t n = 1;; ++n) {
      if (c.send_reading(reading(n)) == bm::kOk) {
        uint8_t b[8];
        v2::detail::put_u64(n, b);
        if (::write(pipefd[1], b, 8) != 8) ::_exit(4);
      }
      c.poll(1);
    }
  }
  ::close(pipefd[1]);
  set_nonblocking(pipefd[0]);
  uint64_t reported = 0;
  const SteadyClock::time_point start = SteadyClock::now();
  std::string partial;
  bool killed = false;
  while (ms_since(start) < 10000) {
    peer.pump();
    uint8_t b[512];
    const ssize_t n = ::read(pipefd[0], b, sizeof b);
    if (n > 0) partial.append(reinterpret_cast<char*>(b), static_cast<std::size_t>(n));
    while (partial.size() >= 8) {
      reported = v2::detail::get_u64(reinterpret_cast<const uint8_t*>(partial.data()));
      partial.erase(0, 8);
    }
    if (!killed && reported >= 120 && !peer.stored.empty()) {
      ::kill(child, SIGKILL);
      killed = true;
    }
    if (n == 0) break;  // the child is gone and the pipe drained
    if (n < 0) ::usleep(1000);
  }
  int wstatus = 0;
  ::waitpid(child, &wstatus, 0);
  ::close(pipefd[0]);
  CHECK(killed && WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL, "%s: the child was not killed (status %d)", name, wstatus);
  const std::size_t stored_before = peer.stored.size();
  peer.acking = true;
  v2::Client c;
  CHECK(c.init(o) == bm::kOk, "%s: reopen after the kill: %s errno %d", name, bm::error_name(c.last_error()), c.last_errno());
  CHECK(c.report().recovered >= reported && c.report().lost == 0, "%s: recovered %llu of %llu accepted, lost %llu", name,
        static_cast<unsigned long long>(c.report().recovered), static_cast<unsigned long long>(reported),
        static_cast<unsigned long long>(c.report().lost));
  CHECK(deliver(c, peer, 10000), "%s: flush after the kill: %s", name, bm::error_name(c.last_error()));
  const uint64_t last = peer.stored.empty() ? 0 : peer.stored.rbegin()->first;
  CHECK(last >= reported && stored_exactly(peer, 1, last), "%s: %llu accepted, the peer holds %lu up to %llu", name,
        static_cast<unsigned long long>(reported), static_cast<unsigned long>(peer.stored.size()), static_cast<unsigned long long>(last));
  CHECK(stored_before > 0 && peer.duplicates > 0, "%s: nothing was in flight at the kill (%lu stored, %d duplicates)", name,
        static_cast<unsigned long>(stored_before), peer.duplicates);
  std::printf("v2 client (%s): killed after %llu accepted (%lu stored, none acknowledged); the reopened queue delivered all, each once\n", name,
              static_cast<unsigned long long>(reported), static_cast<unsigned long>(stored_before));
}


// ---------------------------------------------------------------------------------------------
// The example program end to end: build/send_readings --protocol v2 against the peer.
// ---------------------------------------------------------------------------------------------

std::string g_example;  // the command that runs send_readings (with an emulator prefix when cross-built)

struct Run {
  pid_t pid;
  int out;
  std::string output;
  int status;

  Run() : pid(-1), out(-1), status(-1) {}
};

// Starts the example with `args`, its standard output on a pipe (`exec` so the pid is the program's).
Run start_example(const std::string& args) {
  Run r;
  int p[2];
  if (::pipe(p) != 0) return r;
  const std::string command = "exec " + g_example + " " + args;
  std::fflush(stdout);
  r.pid = ::fork();
  if (r.pid == 0) {
    ::dup2(p[1], 1);
    ::close(p[0]);
    ::close(p[1]);
    ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(0));
    ::_exit(127);
  }
  ::close(p[1]);
  set_nonblocking(p[0]);
  r.out = p[0];
  return r;
}

// Pumps the peer until the program exits (true) or timeout_ms passes; `tick` runs each round.
bool wait_example(Run& r, Peer& peer, int timeout_ms, const std::function<void()>& tick) {
  const SteadyClock::time_point start = SteadyClock::now();
  while (ms_since(start) < timeout_ms) {
    peer.pump();
    if (tick) tick();
    char buf[512];
    const ssize_t n = ::read(r.out, buf, sizeof buf);
    if (n > 0) r.output.append(buf, static_cast<std::size_t>(n));
    int status = 0;
    if (::waitpid(r.pid, &status, WNOHANG) == r.pid) {
      for (ssize_t m; (m = ::read(r.out, buf, sizeof buf)) > 0;) r.output.append(buf, static_cast<std::size_t>(m));
      ::close(r.out);
      r.status = status;
      return true;
    }
    ::usleep(1000);
  }
  ::kill(r.pid, SIGKILL);
  ::waitpid(r.pid, &r.status, 0);
  ::close(r.out);
  return false;
}

struct Summary {
  unsigned long long accepted, acknowledged, dropped, lost, recovered, pending;
  bool parsed;
};

Summary summary_of(const std::string& output) {
  Summary s;
  std::memset(&s, 0, sizeof s);
  const std::size_t at = output.find("v2 accepted ");
  s.parsed = at != std::string::npos &&
             std::sscanf(output.c_str() + at, "v2 accepted %llu, acknowledged %llu, dropped %llu, lost %llu, recovered %llu, pending %llu", &s.accepted,
                         &s.acknowledged, &s.dropped, &s.lost, &s.recovered, &s.pending) == 6;
  return s;
}

// Sequences 1..n, nothing else (each once: the peer stores by sequence and counts the rest).
bool contiguous_from_1(const Peer& peer) { return !peer.stored.empty() && peer.stored.rbegin()->first == peer.stored.size(); }

void test_example_program() {
  if (g_example.empty()) {
    std::printf("example program: skipped (no command given)\n");
    return;
  }
  Peer peer;
  char common[160];
  std::snprintf(common, sizeof common, "--protocol v2 --host 127.0.0.1 --port %d --battery-id pack-9 --queue-bytes 65536", peer.port());
  // A plain run: 30 readings (and a performance record and a prediction every 10) acknowledged.
  const std::string q1 = fresh_path();
  Run a = start_example(std::string(common) + " --queue " + q1 + " --count 30 --rate 0 --timeout 10");
  CHECK(wait_example(a, peer, 30000, std::function<void()>()), "the example did not finish");
  Summary s = summary_of(a.output);
  CHECK(WIFEXITED(a.status) && WEXITSTATUS(a.status) == 0, "exit status %d: %s", a.status, a.output.c_str());
  CHECK(s.parsed && s.accepted == 36 && s.acknowledged == 36 && s.pending == 0 && s.dropped == 0, "summary: %s", a.output.c_str());
  CHECK(peer.battery_id == "pack-9" && peer.stored.size() == 36 && contiguous_from_1(peer), "the peer holds %lu", static_cast<unsigned long>(peer.stored.size()));

  // SIGTERM stops the readings; the program waits for the acknowledgements and exits 0.
  Peer peer2;
  std::snprintf(common, sizeof common, "--protocol v2 --host 127.0.0.1 --port %d --battery-id pack-9 --queue-bytes 65536", peer2.port());
  Run b = start_example(std::string(common) + " --queue " + fresh_path() + " --count 1000000 --rate 200 --fsync batch --timeout 10");
  bool termed = false;
  CHECK(wait_example(b, peer2, 30000, [&] {
          if (!termed && peer2.stored.size() >= 20) {
            ::kill(b.pid, SIGTERM);
            termed = true;
          }
        }),
        "the example did not end after SIGTERM");
  s = summary_of(b.output);
  CHECK(termed && WIFEXITED(b.status) && WEXITSTATUS(b.status) == 0, "after SIGTERM: exit status %d: %s", b.status, b.output.c_str());
  CHECK(s.parsed && s.pending == 0 && s.acknowledged == s.accepted && s.accepted == peer2.stored.size() && contiguous_from_1(peer2), "after SIGTERM: %s",
        b.output.c_str());

  // kill -9 while nothing is acknowledged, then --resume: everything accepted arrives, once.
  Peer peer3;
  peer3.acking = false;
  std::snprintf(common, sizeof common, "--protocol v2 --host 127.0.0.1 --port %d --battery-id pack-9 --queue-bytes 65536", peer3.port());
  const std::string q3 = fresh_path();
  Run c = start_example(std::string(common) + " --queue " + q3 + " --count 1000000 --rate 500 --fsync never --timeout 10");
  bool killed = false;
  wait_example(c, peer3, 30000, [&] {
    if (!killed && peer3.stored.size() >= 40) {
      ::kill(c.pid, SIGKILL);
      killed = true;
    }
  });
  CHECK(killed && WIFSIGNALED(c.status), "the example was not killed: status %d", c.status);
  const std::size_t before = peer3.stored.size();
  peer3.acking = true;
  Run d = start_example(std::string(common) + " --queue " + q3 + " --resume --count 0 --timeout 10");
  CHECK(wait_example(d, peer3, 30000, std::function<void()>()), "the resumed example did not finish");
  s = summary_of(d.output);
  CHECK(WIFEXITED(d.status) && WEXITSTATUS(d.status) == 0, "resume: exit status %d: %s", d.status, d.output.c_str());
  CHECK(s.parsed && s.recovered >= before && s.pending == 0 && s.acknowledged == s.recovered, "resume: %s", d.output.c_str());
  CHECK(contiguous_from_1(peer3) && peer3.stored.size() >= before && peer3.duplicates > 0, "resume: the peer holds %lu (had %lu), %d duplicates",
        static_cast<unsigned long>(peer3.stored.size()), static_cast<unsigned long>(before), peer3.duplicates);
  std::printf("example program: --protocol v2 delivers and exits 0; SIGTERM ends it cleanly; after kill -9, --resume delivers the rest once\n");
}

}  // namespace

// Usage: test_v2_client [COMMAND]   COMMAND runs the example program (e.g. build/send_readings).
int main(int argc, char** argv) {
  char dir[] = "/tmp/bm-v2-XXXXXX";
  if (!::mkdtemp(dir)) {
    std::perror("mkdtemp");
    return 2;
  }
  g_dir = dir;
  test_options();
  test_handshake_and_resume();
  test_cumulative_acks_free_the_queue();
  test_cut_mid_frame_resends();
  test_skips_flagged();
  test_bad_status();
  test_corrupt_ack_and_ack_timeout();
  test_cells_and_refusals();
  test_no_heap_after_init();
  test_killed_between_accept_and_ack(v2::kFsyncNever, "fsync never");
  test_killed_between_accept_and_ack(v2::kFsyncBatch, "fsync batch");
  test_killed_between_accept_and_ack(v2::kFsyncAlways, "fsync always");
  if (argc > 1) g_example = argv[1];
  test_example_program();
  const std::string cleanup = "rm -rf '" + g_dir + "'";
  if (check::failures() == 0 && std::system(cleanup.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", dir);
  std::printf("test_v2_client: %d checks passed, %d failed\n", check::passes(), check::failures());
  return check::failures() == 0 ? 0 : 1;
}
