// test_queue: the v2 client's on-disk queue (v2::detail::Queue) on real files in a temporary
// directory: wrap-around, a full ring dropping its oldest, reopening after a close and after a
// crash (a copy of the file taken while it was open is what a killed process leaves), truncated
// and corrupted files, torn header and slot writes, and the fsync policies.

#include "battery_monitor/v2.hpp"
#include "check.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace v2 = battery_monitor::v2;
using battery_monitor::kOk;
using v2::detail::Queue;

namespace {

class ManualClock : public battery_monitor::Clock {
 public:
  ManualClock() : now_(1000) {}
  int64_t now_ms() { return now_; }
  void advance(int64_t ms) { now_ += ms; }

 private:
  int64_t now_;
};

std::string g_dir;

std::string temp_path(const char* name) { return g_dir + "/" + name; }

const std::size_t kSlot = 80;  // slot_bytes_for(0)

// A queue of `slots` slots, no cells.
v2::QueueOptions options_for(const std::string& path, std::size_t slots, v2::FsyncPolicy fsync = v2::kFsyncNever) {
  v2::QueueOptions o;
  o.path = path;
  o.file_bytes = v2::detail::kQueueDataOffset + slots * kSlot;
  o.fsync = fsync;
  return o;
}

// Reading n: every value derived from n, so a frame from another sequence or another lap differs.
v2::DataReading reading(uint64_t n) {
  v2::DataReading r;
  r.timestamp = 1764288000.0 + static_cast<double>(n);
  r.pack_voltage = 350.0 + static_cast<double>(n % 1000) * 0.125;
  r.pack_current = -static_cast<double>(n);
  r.cell_temp = 25.0;
  return r;
}

bool append_reading(Queue& q) {
  uint8_t frame[kSlot];
  const std::size_t n = v2::encode_data(q.next_sequence(), reading(q.next_sequence()), frame, sizeof frame);
  return n > 0 && q.append(frame, n);
}

// The sequences read() hands out from `from` on, checking each frame is that reading's.
std::vector<uint64_t> read_all_seqs(Queue& q, uint64_t from = 0) {
  std::vector<uint64_t> seqs;
  std::vector<uint8_t> buf(3 * kSlot + 7);  // a few slots per read, so reads split and wrap
  uint64_t next = from;
  for (int guard = 0; guard < 100000; ++guard) {
    const uint64_t before = next;
    const long n = q.read(before, &buf[0], buf.size(), next);
    CHECK(n >= 0, "read failed: errno %d", q.last_errno());
    if (n < 0) break;
    std::size_t at = 0;
    while (at < static_cast<std::size_t>(n)) {
      v2::FrameView f;
      const v2::FrameCheck c = v2::decode_frame(&buf[at], static_cast<std::size_t>(n) - at, f);
      CHECK(c == v2::kFrameOk, "read() returned a bad frame (%s)", v2::frame_check_name(c));
      if (c != v2::kFrameOk) return seqs;
      CHECK(f.value(1) == -static_cast<double>(f.sequence), "frame %llu carries another reading", static_cast<unsigned long long>(f.sequence));
      seqs.push_back(f.sequence);
      at += f.length;
    }
    if (next == before || next >= q.sendable_end()) break;
  }
  return seqs;
}

std::vector<uint64_t> range(uint64_t first, uint64_t last) {
  std::vector<uint64_t> v;
  for (uint64_t s = first; s <= last; ++s) v.push_back(s);
  return v;
}

std::string seqs_text(const std::vector<uint64_t>& v) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "%s%llu", i ? "," : "", static_cast<unsigned long long>(v[i]));
    s += buf;
  }
  return s;
}

bool copy_file(const std::string& from, const std::string& to) {
  std::FILE* in = std::fopen(from.c_str(), "rb");
  std::FILE* out = std::fopen(to.c_str(), "wb");
  bool ok = in && out;
  char buf[4096];
  std::size_t n;
  while (ok && (n = std::fread(buf, 1, sizeof buf, in)) > 0) ok = std::fwrite(buf, 1, n, out) == n;
  if (in) std::fclose(in);
  if (out) std::fclose(out);
  return ok;
}

void poke(const std::string& path, long offset, const void* bytes, std::size_t n) {
  std::FILE* f = std::fopen(path.c_str(), "r+b");
  CHECK(f != 0, "cannot open %s", path.c_str());
  if (!f) return;
  std::fseek(f, offset, SEEK_SET);
  std::fwrite(bytes, 1, n, f);
  std::fclose(f);
}

long file_size(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<long>(st.st_size) : -1;
}

long slot_offset(uint64_t seq, uint64_t slots) { return static_cast<long>(v2::detail::kQueueDataOffset + (seq % slots) * kSlot); }

struct Opened {
  ManualClock clock;
  std::vector<uint8_t> scratch;
  Queue q;
  battery_monitor::Error error;

  Opened(const v2::QueueOptions& o) : scratch(16 * 1024) { error = q.open(o, &clock, &scratch[0], scratch.size()); }
};

void test_create_and_geometry() {
  const std::string path = temp_path("create.q");
  Opened a(options_for(path, 10));
  CHECK(a.error == kOk, "open failed: errno %d", a.q.last_errno());
  CHECK(a.q.report().created && !a.q.report().recreated, "report: created");
  CHECK(a.q.stream_id() != 0 && a.q.report().stream_id == a.q.stream_id(), "stream id");
  CHECK(a.q.slot_count() == 10 && a.q.slot_bytes() == kSlot, "geometry %llu x %lu", static_cast<unsigned long long>(a.q.slot_count()),
        static_cast<unsigned long>(a.q.slot_bytes()));
  CHECK(file_size(path) == static_cast<long>(v2::detail::kQueueDataOffset + 10 * kSlot), "file size %ld", file_size(path));
  CHECK(a.q.next_sequence() == 1 && a.q.size() == 0, "a new queue starts at sequence 1, empty");
  struct stat st;
  CHECK(::stat(path.c_str(), &st) == 0 && static_cast<long>(st.st_blocks) * 512 >= file_size(path), "the file is sparse: %ld blocks",
        static_cast<long>(st.st_blocks));
  const uint64_t first = a.q.stream_id();
  a.q.close();
  Opened b(options_for(temp_path("create2.q"), 10));
  CHECK(b.q.stream_id() != first, "two queues made the same random stream id");
  v2::QueueOptions replace = options_for(path, 10);
  replace.mode = v2::kCreateNew;
  Opened c(replace);
  CHECK(c.error == kOk && c.q.report().created && c.q.stream_id() != first, "kCreateNew did not make a new stream");
  std::printf("queue: created whole (not sparse) with a random stream id; kCreateNew starts a new stream\n");
}

void test_wrap_around() {
  const std::string path = temp_path("wrap.q");
  Opened o(options_for(path, 5));
  // 23 readings through 5 slots, acknowledged in uneven steps: every read is in order and whole.
  uint64_t acked = 0;
  for (int round = 0; round < 23; ++round) {
    CHECK(append_reading(o.q), "append failed");
    if (round % 3 == 2) {
      const std::vector<uint64_t> seqs = read_all_seqs(o.q);
      CHECK(seqs == range(acked + 1, o.q.next_sequence() - 1), "round %d: read %s", round, seqs_text(seqs).c_str());
      acked = o.q.next_sequence() - 2;  // leave the newest in
      o.q.acknowledge(acked);
    }
  }
  CHECK(o.q.dropped() == 0, "dropped %llu while never full", static_cast<unsigned long long>(o.q.dropped()));
  CHECK(read_all_seqs(o.q) == range(acked + 1, 23), "after the last round: %s", seqs_text(read_all_seqs(o.q)).c_str());
  CHECK(read_all_seqs(o.q, 22) == range(22, 23), "read from the middle");
  std::printf("queue: 23 readings wrap 5 slots in order\n");
}

void test_full_drops_oldest() {
  const std::string path = temp_path("full.q");
  Opened o(options_for(path, 5));
  for (int i = 0; i < 8; ++i) CHECK(append_reading(o.q), "append failed");
  CHECK(o.q.dropped() == 3 && o.q.head() == 4 && o.q.size() == 5, "dropped %llu head %llu", static_cast<unsigned long long>(o.q.dropped()),
        static_cast<unsigned long long>(o.q.head()));
  CHECK(read_all_seqs(o.q) == range(4, 8), "kept %s", seqs_text(read_all_seqs(o.q)).c_str());
  o.q.close();
  Opened again(options_for(path, 5));
  CHECK(again.q.dropped() == 3, "the drop count did not survive a reopen: %llu", static_cast<unsigned long long>(again.q.dropped()));
  CHECK(read_all_seqs(again.q) == range(4, 8), "reopened: %s", seqs_text(read_all_seqs(again.q)).c_str());
  std::printf("queue: a full ring drops its oldest and counts them, across a reopen\n");
}

void test_reopen_after_close() {
  const std::string path = temp_path("reopen.q");
  uint64_t stream = 0;
  {
    Opened o(options_for(path, 8, v2::kFsyncAlways));
    for (int i = 0; i < 6; ++i) append_reading(o.q);
    o.q.acknowledge(2);
    stream = o.q.stream_id();
  }  // destructor closes
  Opened o(options_for(path, 8));
  CHECK(o.error == kOk && !o.q.report().created, "reopen failed or recreated");
  CHECK(o.q.stream_id() == stream, "the stream id changed across a reopen");
  CHECK(o.q.head() == 3 && o.q.next_sequence() == 7, "head %llu next %llu", static_cast<unsigned long long>(o.q.head()),
        static_cast<unsigned long long>(o.q.next_sequence()));
  CHECK(o.q.report().recovered == 4 && o.q.report().lost == 0, "recovered %llu lost %llu", static_cast<unsigned long long>(o.q.report().recovered),
        static_cast<unsigned long long>(o.q.report().lost));
  CHECK(read_all_seqs(o.q) == range(3, 6), "read %s", seqs_text(read_all_seqs(o.q)).c_str());
  append_reading(o.q);
  CHECK(read_all_seqs(o.q) == range(3, 7), "numbering did not continue");
  std::printf("queue: reopened after close with its stream, head and readings\n");
}

// A copy of the file taken while the queue is open is what a process killed at that moment
// leaves (the kernel keeps written pages); no close(), no final header.
void test_reopen_after_crash() {
  const std::string path = temp_path("crash.q");
  const std::string image = temp_path("crash-image.q");
  Opened o(options_for(path, 6));
  for (int i = 0; i < 4; ++i) append_reading(o.q);
  o.q.acknowledge(1);
  for (int i = 0; i < 5; ++i) append_reading(o.q);  // wraps: 9 written, 6 slots, head 4 after drops
  CHECK(o.q.head() == 4 && o.q.dropped() == 2, "head %llu dropped %llu", static_cast<unsigned long long>(o.q.head()),
        static_cast<unsigned long long>(o.q.dropped()));
  CHECK(copy_file(path, image), "copy");
  Opened c(options_for(image, 6));
  CHECK(c.error == kOk, "crash image did not open");
  CHECK(c.q.stream_id() == o.q.stream_id(), "stream id");
  CHECK(read_all_seqs(c.q) == range(4, 9), "crash image holds %s", seqs_text(read_all_seqs(c.q)).c_str());
  CHECK(c.q.next_sequence() == 10 && c.q.report().lost == 0, "next %llu lost %llu", static_cast<unsigned long long>(c.q.next_sequence()),
        static_cast<unsigned long long>(c.q.report().lost));
  std::printf("queue: a crash image (no close) reopens with every accepted reading\n");
}

void test_truncated() {
  const std::string path = temp_path("trunc.q");
  {
    Opened o(options_for(path, 10));
    for (int i = 0; i < 10; ++i) append_reading(o.q);  // sequences 1-10 in slots 1-9, 0
  }
  // Cut inside slot 7 (sequence 7): 7, 8, 9 gone, 10 (slot 0) and 1-6 survive.
  CHECK(::truncate(path.c_str(), slot_offset(7, 10) + 30) == 0, "truncate");
  Opened o(options_for(path, 10));
  CHECK(o.error == kOk && o.q.report().extended && !o.q.report().created, "a truncated file did not reopen");
  CHECK(o.q.report().recovered == 7 && o.q.report().lost == 3, "recovered %llu lost %llu", static_cast<unsigned long long>(o.q.report().recovered),
        static_cast<unsigned long long>(o.q.report().lost));
  std::vector<uint64_t> want = range(1, 6);
  want.push_back(10);
  CHECK(read_all_seqs(o.q) == want, "read %s", seqs_text(read_all_seqs(o.q)).c_str());
  CHECK(o.q.next_sequence() == 11, "numbering restarted at %llu", static_cast<unsigned long long>(o.q.next_sequence()));
  CHECK(file_size(path) == static_cast<long>(v2::detail::kQueueDataOffset + 10 * kSlot), "not extended back: %ld", file_size(path));
  // Cut into the header area: copy A (generation 2 after creation... whichever) may go; one survives.
  {
    Opened p(options_for(path, 10));
  }
  CHECK(::truncate(path.c_str(), 100) == 0, "truncate");
  Opened h(options_for(path, 10));
  CHECK(h.error == kOk, "a file cut after its first header copy did not reopen");
  std::printf("queue: a truncated file reopens with what survives (%llu lost, counted)\n", static_cast<unsigned long long>(o.q.report().lost));
}

void test_corrupted_slot_and_torn_write() {
  const std::string path = temp_path("corrupt.q");
  {
    Opened o(options_for(path, 10));
    for (int i = 0; i < 6; ++i) append_reading(o.q);
  }
  const uint8_t junk[3] = {0x5A, 0xA5, 0x00};
  poke(path, slot_offset(3, 10) + 25, junk, sizeof junk);  // inside sequence 3's payload
  // A torn write of sequence 7: only its first half reached the disk.
  uint8_t frame[kSlot];
  const std::size_t n = v2::encode_data(7, reading(7), frame, sizeof frame);
  poke(path, slot_offset(7, 10), frame, n / 2);
  Opened o(options_for(path, 10));
  CHECK(o.error == kOk, "reopen");
  CHECK(o.q.report().lost == 1 && o.q.report().recovered == 5, "lost %llu recovered %llu", static_cast<unsigned long long>(o.q.report().lost),
        static_cast<unsigned long long>(o.q.report().recovered));
  std::vector<uint64_t> want;
  want.push_back(1);
  want.push_back(2);
  want.push_back(4);
  want.push_back(5);
  want.push_back(6);
  CHECK(read_all_seqs(o.q) == want, "read %s", seqs_text(read_all_seqs(o.q)).c_str());
  CHECK(o.q.next_sequence() == 7, "the torn write counted as a reading: next %llu", static_cast<unsigned long long>(o.q.next_sequence()));
  CHECK(o.q.lost() == 1, "the corrupt slot was counted again on read: %llu", static_cast<unsigned long long>(o.q.lost()));
  std::printf("queue: a corrupt slot loses one reading (counted), a torn last write none accepted\n");
}

void test_torn_header() {
  const std::string path = temp_path("header.q");
  uint64_t stream = 0;
  {
    Opened o(options_for(path, 10));
    for (int i = 0; i < 6; ++i) append_reading(o.q);
    o.q.acknowledge(2);
    o.q.acknowledge(4);  // the newest header copy says head 5, the other head 3
    stream = o.q.stream_id();
  }
  // Tear whichever copy is newer: the older one must serve.
  for (int copy = 0; copy < 2; ++copy) {
    const std::string torn = temp_path(copy ? "header-b.q" : "header-a.q");
    copy_file(path, torn);
    const uint8_t junk[4] = {1, 2, 3, 4};
    poke(torn, static_cast<long>(v2::detail::kQueueHeaderOffsets[copy]) + 30, junk, sizeof junk);
    Opened o(options_for(torn, 10));
    CHECK(o.error == kOk && o.q.report().header_torn && o.q.stream_id() == stream, "copy %d torn: did not reopen from the other", copy);
    // An older head only means acknowledged readings go again (the service drops them by key).
    const std::vector<uint64_t> seqs = read_all_seqs(o.q);
    CHECK(!seqs.empty() && seqs.back() == 6 && seqs.front() <= 5 && o.q.report().lost == 0, "copy %d torn: read %s", copy, seqs_text(seqs).c_str());
  }
  // Both copies gone: the readings cannot be sent under their stream; a new queue, reported.
  const uint8_t junk[4] = {1, 2, 3, 4};
  poke(path, static_cast<long>(v2::detail::kQueueHeaderOffsets[0]) + 30, junk, sizeof junk);
  poke(path, static_cast<long>(v2::detail::kQueueHeaderOffsets[1]) + 30, junk, sizeof junk);
  Opened o(options_for(path, 10));
  CHECK(o.error == kOk && o.q.report().created && o.q.report().recreated && o.q.stream_id() != stream && o.q.size() == 0,
        "both header copies corrupt: not recreated with a new stream");
  std::printf("queue: a torn header copy falls back to the other; both torn recreates (reported)\n");
}

void test_fsync_policies() {
  {
    Opened o(options_for(temp_path("always.q"), 10, v2::kFsyncAlways));
    const uint64_t base = o.q.fsyncs();
    for (int i = 0; i < 5; ++i) append_reading(o.q);
    CHECK(o.q.fsyncs() - base == 5, "always: %llu fsyncs for 5 accepts", static_cast<unsigned long long>(o.q.fsyncs() - base));
    CHECK(o.q.sendable_end() == 6, "always: not sendable at once");
  }
  {
    v2::QueueOptions opt = options_for(temp_path("batch.q"), 20, v2::kFsyncBatch);
    opt.fsync_every = 3;
    opt.fsync_interval_ms = 500;
    Opened o(opt);
    const uint64_t base = o.q.fsyncs();
    for (int i = 0; i < 7; ++i) append_reading(o.q);
    CHECK(o.q.fsyncs() - base == 2, "batch of 3: %llu fsyncs for 7 accepts", static_cast<unsigned long long>(o.q.fsyncs() - base));
    // Not on disk yet, so not sent yet: a frame the service stored must never be lost here.
    CHECK(o.q.sendable_end() == 7, "batch: sendable end %llu", static_cast<unsigned long long>(o.q.sendable_end()));
    CHECK(o.q.sync_deadline_ms() == o.clock.now_ms() + 500, "batch: deadline %lld", static_cast<long long>(o.q.sync_deadline_ms()));
    o.clock.advance(500);
    CHECK(o.q.sync() && o.q.fsyncs() - base == 3 && o.q.sendable_end() == 8 && o.q.sync_deadline_ms() == -1, "batch: the timer's sync");
  }
  {
    Opened o(options_for(temp_path("never.q"), 10, v2::kFsyncNever));
    const uint64_t base = o.q.fsyncs();
    for (int i = 0; i < 5; ++i) append_reading(o.q);
    o.q.acknowledge(3);
    CHECK(o.q.sync() && o.q.fsyncs() == base, "never: %llu fsyncs", static_cast<unsigned long long>(o.q.fsyncs() - base));
    CHECK(o.q.sendable_end() == 6, "never: sendable at once");
  }
  std::printf("queue: fsync always (one per accept), batch (by count and timer; unsynced not sendable), never (none)\n");
}

void test_resume_and_geometry_mismatch() {
  const std::string path = temp_path("resume.q");
  {
    Opened o(options_for(path, 10));
    for (int i = 0; i < 3; ++i) append_reading(o.q);
    // The service holds more of this stream than the queue ever numbered (a file restored from
    // an old copy): numbering continues past it, and survives a reopen.
    CHECK(o.q.resume(41) == 3 && o.q.size() == 0 && o.q.next_sequence() == 42, "resume past the end");
    append_reading(o.q);
    CHECK(read_all_seqs(o.q) == range(42, 42), "after resume: %s", seqs_text(read_all_seqs(o.q)).c_str());
    CHECK(o.q.resume(10) == 0 && o.q.size() == 1, "an old resume_after removed something");
  }
  Opened o(options_for(path, 10));
  CHECK(o.q.next_sequence() == 43 && read_all_seqs(o.q) == range(42, 42), "after reopen: next %llu", static_cast<unsigned long long>(o.q.next_sequence()));
  // A file made for cells keeps its slots when opened with other options (a --resume without
  // --cells), as long as a slot fits the buffer it is read into.
  v2::QueueOptions cells = options_for(temp_path("cells.q"), 0);
  cells.max_cells = 16;
  cells.file_bytes = 64 * 1024;
  {
    Opened c(cells);
    CHECK(c.error == kOk && c.q.slot_bytes() == v2::slot_bytes_for(16), "cells queue");
    append_reading(c.q);
  }
  cells.max_cells = 0;
  {
    Opened reopened(cells);
    CHECK(reopened.error == kOk && reopened.q.slot_bytes() == v2::slot_bytes_for(16) && reopened.q.size() == 1, "a cells queue reopened without cells");
  }
  ManualClock clock;
  std::vector<uint8_t> small_scratch(v2::slot_bytes_for(16) - 1);
  Queue small;
  CHECK(small.open(cells, &clock, &small_scratch[0], small_scratch.size()) == battery_monitor::kErrQueue && small.last_errno() == EINVAL,
        "a file whose slots do not fit the read buffer opened");
  v2::QueueOptions bad = options_for(temp_path("bad.q"), 1);
  CHECK(Queue::validate(bad) != 0, "a one-slot queue validated");
  std::printf("queue: resume_after past the end continues numbering; slot geometry checked\n");
}

}  // namespace

int main() {
  char dir[] = "/tmp/bm-queue-XXXXXX";
  if (!::mkdtemp(dir)) {
    std::perror("mkdtemp");
    return 2;
  }
  g_dir = dir;
  test_create_and_geometry();
  test_wrap_around();
  test_full_drops_oldest();
  test_reopen_after_close();
  test_reopen_after_crash();
  test_truncated();
  test_corrupted_slot_and_torn_write();
  test_torn_header();
  test_fsync_policies();
  test_resume_and_geometry_mismatch();
  const std::string cleanup = "rm -rf '" + g_dir + "'";
  if (check::failures() == 0 && std::system(cleanup.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", dir);
  std::printf("test_queue: %d checks passed, %d failed\n", check::passes(), check::failures());
  return check::failures() == 0 ? 0 : 1;
}
