// check.hpp: the few lines of test harness the two tests share (no framework to install).
#ifndef BATTERY_MONITOR_TESTS_CHECK_HPP
#define BATTERY_MONITOR_TESTS_CHECK_HPP

#include <cstdio>

namespace check {
inline int& failures() {
  static int count = 0;
  return count;
}
inline int& passes() {
  static int count = 0;
  return count;
}
}  // namespace check

// Records a failure with its location and carries on, so one run reports every broken case.
#define CHECK(cond, ...)                                          \
  do {                                                            \
    if (cond) {                                                   \
      ++check::passes();                                          \
    } else {                                                      \
      ++check::failures();                                        \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                          \
      std::fprintf(stderr, "\n");                                 \
    }                                                             \
  } while (0)

#endif  // BATTERY_MONITOR_TESTS_CHECK_HPP
