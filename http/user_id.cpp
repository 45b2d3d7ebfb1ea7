#include "http/user_id.hpp"

#include <limits>

namespace videostreams {

std::optional<std::uint64_t> parse_user_id(std::string_view text) noexcept {
  constexpr auto max = static_cast<std::uint64_t>(
    std::numeric_limits<std::int64_t>::max());
  if (text.empty())
    return std::nullopt;
  std::uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9')
      return std::nullopt;
    auto digit = static_cast<std::uint64_t>(c - '0');
    if (value > (max - digit) / 10)
      return std::nullopt;
    value = value * 10 + digit;
  }
  return value;
}

} // namespace videostreams
