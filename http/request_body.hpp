#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <boost/json/object.hpp>

namespace videostreams {

/// Why a request was refused as a 400: the offending field and what it must
/// be. Every such answer names the field.
struct field_error {
  std::string field;
  std::string detail;
};

/// True for a session id of 1 to 64 characters of `[A-Za-z0-9._-]` that is
/// not made of dots only.
bool valid_session_id(std::string_view text) noexcept;

/// A new server-chosen session id: 128 random bits as 32 hex digits.
std::string new_session_id();

/// Parses a request body that must be a JSON object; an empty body (or one
/// of only white space) is an empty object.
std::variant<boost::json::object, field_error>
parse_object_body(std::string_view body);

/// Reads the optional string field `name` of `obj`.
std::variant<std::optional<std::string>, field_error>
optional_string(const boost::json::object& obj, std::string_view name);

/// Reads the optional integer field `name` of `obj`, which must lie within
/// [`min`, `max`]. Integral doubles such as `30.0` count as integers.
std::variant<std::optional<std::int64_t>, field_error>
optional_integer(const boost::json::object& obj, std::string_view name,
                 std::int64_t min, std::int64_t max);

} // namespace videostreams
