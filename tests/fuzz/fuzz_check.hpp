#pragma once

// What every fuzz target uses to state an invariant. A broken invariant
// prints what was expected and aborts, so libFuzzer saves the input as a
// crash (artifact) and the run fails, like a sanitizer report does.

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace videostreams::fuzz {

/// Prints `text` with its non-printable bytes escaped (for failure messages).
inline std::string printable(std::string_view text, std::size_t max = 400) {
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < max; ++i) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c == '\\') {
      out += "\\\\";
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02x", c);
      out += buf;
    }
  }
  if (text.size() > max)
    out += "...";
  return out;
}

[[noreturn]] inline void fail(const char* file, int line, const char* what,
                              const std::string& detail) {
  std::fprintf(stderr, "\n==fuzz== invariant broken at %s:%d: %s\n%s\n", file,
               line, what, detail.c_str());
  std::fflush(stderr);
  std::abort();
}

} // namespace videostreams::fuzz

/// Aborts with `detail` (a std::string expression, evaluated only on
/// failure) unless `cond` holds.
#define FUZZ_CHECK(cond, detail)                                               \
  do {                                                                         \
    if (!(cond))                                                               \
      ::videostreams::fuzz::fail(__FILE__, __LINE__, #cond, (detail));         \
  } while (false)
