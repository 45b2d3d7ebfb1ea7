// The edge's request framing (http/request_framing.hpp) on any bytes: it
// never reads past its input, its verdicts are the documented ones, and
// where a request ends depends on that request's bytes alone, so the edge
// and cpp-httplib (which parses exactly those bytes) agree on it.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "http/request_framing.hpp"

#include "fuzz_check.hpp"

using namespace videostreams;
using videostreams::fuzz::printable;
using state = request_frame::state;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  std::string_view in{reinterpret_cast<const char*>(data), size};
  const framing_limits limits;
  auto f = frame_request(in, limits);
  switch (f.what) {
    case state::refused:
      FUZZ_CHECK(f.status == 400 || f.status == 413 || f.status == 414
                   || f.status == 415 || f.status == 431,
                 "refused with " + std::to_string(f.status) + ": "
                   + printable(in));
      FUZZ_CHECK(!f.reason.empty(), "refused without a reason");
      break;
    case state::incomplete:
      // Never a header over the limit waiting for more bytes.
      FUZZ_CHECK(in.size() - f.skip
                   <= limits.max_header_bytes + limits.max_body_bytes + 4096
                 || f.header_complete,
                 "incomplete at " + std::to_string(in.size()) + " bytes");
      break;
    case state::complete: {
      FUZZ_CHECK(f.size > 0 && f.skip + f.size <= in.size(),
                 "complete with skip " + std::to_string(f.skip) + ", size "
                   + std::to_string(f.size) + " of "
                   + std::to_string(in.size()));
      auto request = in.substr(f.skip, f.size);
      // The request is whole by itself, and ends where it ended before,
      // whatever follows it.
      auto alone = frame_request(in.substr(0, f.skip + f.size), limits);
      FUZZ_CHECK(alone.what == state::complete && alone.size == f.size,
                 "not complete on its own: " + printable(request));
      std::string followed{in.substr(0, f.skip + f.size)};
      followed += "GET / HTTP/1.1\r\n\r\n";
      auto next = frame_request(followed, limits);
      FUZZ_CHECK(next.what == state::complete && next.size == f.size,
                 "its end moved with what followed: " + printable(request));
      // It cannot end earlier: a shorter prefix is not a request yet.
      auto cut = frame_request(in.substr(0, f.skip + f.size - 1), limits);
      FUZZ_CHECK(cut.what == state::incomplete,
                 "a prefix one byte short is not incomplete: "
                   + printable(request));
      // A header ends with an empty line, in CRLFs only.
      FUZZ_CHECK(request.find("\r\n\r\n") != std::string_view::npos,
                 "no blank line: " + printable(request));
      break;
    }
  }
  return 0;
}
