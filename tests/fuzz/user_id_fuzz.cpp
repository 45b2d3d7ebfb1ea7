// The user-id parser (http/user_id.hpp) against its contract, on any text:
// a user id is a plain non-negative decimal integer (leading zeros allowed)
// of at most 9223372036854775807; everything else is refused. Checked
// against a reference that decides by comparing digit strings, so it
// shares no arithmetic with the parser.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "http/user_id.hpp"

#include "fuzz_check.hpp"

using namespace videostreams;
using videostreams::fuzz::printable;

namespace {

constexpr std::string_view int64_max = "9223372036854775807";

/// The digits of `text` without leading zeros ("0" for zero), or nothing
/// when `text` is no user id by the contract.
std::optional<std::string> reference_digits(std::string_view text) {
  if (text.empty())
    return std::nullopt;
  for (char c : text)
    if (c < '0' || c > '9')
      return std::nullopt;
  auto first = text.find_first_not_of('0');
  if (first == std::string_view::npos)
    return std::string{"0"};
  auto digits = text.substr(first);
  // Same length: decimal strings compare like their values.
  if (digits.size() > int64_max.size()
      || (digits.size() == int64_max.size() && digits > int64_max))
    return std::nullopt;
  return std::string{digits};
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  std::string_view text{reinterpret_cast<const char*>(data), size};
  auto parsed = parse_user_id(text);
  auto expected = reference_digits(text);
  FUZZ_CHECK(parsed.has_value() == expected.has_value(),
             "text '" + printable(text) + "': parser "
               + (parsed ? "accepted" : "refused") + ", contract says "
               + (expected ? "accept" : "refuse"));
  if (!parsed)
    return 0;
  FUZZ_CHECK(*parsed <= static_cast<std::uint64_t>(INT64_MAX),
             "accepted " + std::to_string(*parsed) + " above INT64_MAX");
  // Round trip: the value printed in decimal is the text without its
  // leading zeros.
  FUZZ_CHECK(std::to_string(*parsed) == *expected,
             "text '" + printable(text) + "' parsed as "
               + std::to_string(*parsed));
  return 0;
}
