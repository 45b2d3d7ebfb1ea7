#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace videostreams {

/// Parses a user id as the API accepts it: a plain non-negative decimal
/// integer (digits only, leading zeros allowed, so "007" is user 7) that fits
/// a signed 64-bit value. Anything else — empty, signs, spaces, other
/// characters, values above 9223372036854775807 — is no user id.
std::optional<std::uint64_t> parse_user_id(std::string_view text) noexcept;

} // namespace videostreams
