// The session-id check (`valid_session_id`, http/request_body.hpp) against
// its contract on any text: 1 to 64 characters of [A-Za-z0-9._-], not dots
// only. An id it accepts must also work where ids are used: as the last
// segment of a v2 path it must resolve to that route with that id, so a
// session the API hands out can always be heartbeated and closed.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "http/request_body.hpp"
#include "http/routes.hpp"

#include "fuzz_check.hpp"

using namespace videostreams;
using videostreams::fuzz::printable;

namespace {

bool reference_valid(std::string_view text) {
  static constexpr std::string_view alphabet
    = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-";
  if (text.size() < 1 || text.size() > 64)
    return false;
  bool only_dots = true;
  for (char c : text) {
    if (alphabet.find(c) == std::string_view::npos)
      return false;
    only_dots = only_dots && c == '.';
  }
  return !only_dots;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  std::string_view text{reinterpret_cast<const char*>(data), size};
  bool valid = valid_session_id(text);
  FUZZ_CHECK(valid == reference_valid(text),
             "id '" + printable(text) + "': check says "
               + (valid ? "valid" : "invalid"));
  if (!valid)
    return 0;
  for (auto prefix : {"/api/v2/users/7/streams/", "/api/v2/users/007/streams/"})
    for (auto suffix : {"", "/"}) {
      auto path = std::string{prefix} + std::string{text} + suffix;
      auto m = match_route(path);
      FUZZ_CHECK(m.which == route::v2_stream && m.session_id == text,
                 "valid id '" + printable(text) + "' does not route in "
                   + printable(path));
    }
  return 0;
}
