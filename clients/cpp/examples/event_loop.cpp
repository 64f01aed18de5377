// event_loop: the Client inside an application's own poll() loop, next to the application's own
// descriptor (here standard input, where a device would have its CAN or serial port).
//
//   printf '1 396.5 -10.25 30.5\n2 396.4 -10.5 30.6\n' | event_loop --host 127.0.0.1 --binary-port 23456
//
// Each input line "device_time pack_voltage pack_current cell_temp" becomes one reading. At the end
// of input it closes (flush, then wait for the collector's confirmation) and prints
// "sent N frames, dropped D, confirmed yes|no"; exits 0 only when every reading was confirmed.
// Storage for the ring is a static array: nothing is allocated after init().

#include "battery_monitor/client.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

const std::size_t kFrameCapacity = 4096;
uint8_t g_ring[kFrameCapacity * battery_monitor::kFrameBytes];

void log_event(void*, const battery_monitor::Event& e) {
  if (e.error != battery_monitor::kOk) {
    std::fprintf(stderr, "event_loop: %s (errno %d)\n", battery_monitor::error_name(e.error), e.sys_errno);
  }
}

// Splits complete lines out of what standard input delivered; returns false at end of input.
bool read_lines(battery_monitor::Client& client, std::string& pending) {
  char buf[4096];
  const ssize_t n = ::read(STDIN_FILENO, buf, sizeof buf);
  if (n <= 0) return n < 0 && errno == EINTR;
  pending.append(buf, static_cast<std::size_t>(n));
  std::size_t end;
  while ((end = pending.find('\n')) != std::string::npos) {
    float t, v, i, temp;
    if (std::sscanf(pending.c_str(), "%f %f %f %f", &t, &v, &i, &temp) == 4) client.send_reading(battery_monitor::Reading(t, v, i, temp));
    pending.erase(0, end + 1);
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  battery_monitor::ClientOptions options;
  options.json_port = 0;  // readings only
  options.frame_capacity = kFrameCapacity;
  options.on_event = log_event;
  for (int a = 1; a + 1 < argc; a += 2) {
    if (std::strcmp(argv[a], "--host") == 0) options.host = argv[a + 1];
    if (std::strcmp(argv[a], "--binary-port") == 0) options.binary_port = std::atoi(argv[a + 1]);
  }
  battery_monitor::Client client;
  const battery_monitor::Error started = client.init(options, g_ring, sizeof g_ring);
  if (started != battery_monitor::kOk) {
    const char* problem = "";
    battery_monitor::Client::validate(options, &problem);
    std::fprintf(stderr, "event_loop: %s %s\n", battery_monitor::error_name(started), problem ? problem : "");
    return 2;
  }

  std::string pending;
  bool input_open = true;
  struct pollfd fds[3];
  while (input_open) {
    const int n = client.descriptors(fds, 2);
    fds[n].fd = STDIN_FILENO;
    fds[n].events = POLLIN;
    fds[n].revents = 0;
    const int64_t t = client.next_timeout_ms();
    // 1000 ms: the application's own tick; the client's timers may ask for less.
    ::poll(fds, static_cast<nfds_t>(n + 1), t < 0 || t > 1000 ? 1000 : static_cast<int>(t));
    client.process(fds, n);
    if (fds[n].revents & (POLLIN | POLLHUP)) input_open = read_lines(client, pending);
  }

  const bool confirmed = client.close(10000) == battery_monitor::kOk;
  const battery_monitor::Stats s = client.stats();
  std::printf("sent %llu frames, dropped %llu, confirmed %s\n", static_cast<unsigned long long>(s.frames_sent),
              static_cast<unsigned long long>(s.frames_dropped), confirmed ? "yes" : "no");
  return confirmed && s.frames_dropped == 0 ? 0 : 1;
}
