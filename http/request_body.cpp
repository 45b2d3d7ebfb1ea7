#include "http/request_body.hpp"

#include <cmath>
#include <random>

#include <boost/json/parse.hpp>

namespace videostreams {

namespace json = boost::json;

bool valid_session_id(std::string_view text) noexcept {
  if (text.empty() || text.size() > 64)
    return false;
  // "." and ".." (any id of dots only) would be removed from a URL path by
  // ordinary clients, so such a session could never be heartbeated.
  if (text.find_first_not_of('.') == std::string_view::npos)
    return false;
  for (char c : text) {
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
              || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok)
      return false;
  }
  return true;
}

std::string new_session_id() {
  // std::random_device reads the kernel's CSPRNG (getrandom) on Linux.
  thread_local std::random_device entropy;
  static constexpr char digits[] = "0123456789abcdef";
  std::string result;
  result.reserve(32);
  for (int word = 0; word < 4; ++word) {
    auto bits = static_cast<std::uint32_t>(entropy());
    for (int nibble = 0; nibble < 8; ++nibble, bits >>= 4)
      result += digits[bits & 0xf];
  }
  return result;
}

std::variant<json::object, field_error>
parse_object_body(std::string_view body) {
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos)
    return json::object{};
  boost::system::error_code ec;
  auto value = json::parse(body, ec);
  if (ec)
    return field_error{"body", "must be a JSON object (" + ec.message() + ")"};
  if (!value.is_object())
    return field_error{"body", "must be a JSON object"};
  return std::move(value.as_object());
}

std::variant<std::optional<std::string>, field_error>
optional_string(const json::object& obj, std::string_view name) {
  auto i = obj.find(name);
  if (i == obj.end() || i->value().is_null())
    return std::optional<std::string>{};
  if (!i->value().is_string())
    return field_error{std::string{name}, "must be a string"};
  auto& s = i->value().get_string();
  return std::optional<std::string>{std::string{s.data(), s.size()}};
}

std::variant<std::optional<std::int64_t>, field_error>
optional_integer(const json::object& obj, std::string_view name,
                 std::int64_t min, std::int64_t max) {
  auto out_of_range = [&] {
    return field_error{std::string{name},
                       "must be an integer from " + std::to_string(min)
                         + " to " + std::to_string(max)};
  };
  auto i = obj.find(name);
  if (i == obj.end() || i->value().is_null())
    return std::optional<std::int64_t>{};
  auto& v = i->value();
  std::int64_t n;
  if (v.is_int64()) {
    n = v.get_int64();
  } else if (v.is_uint64()) {
    return out_of_range(); // above INT64_MAX, so above any bound here
  } else if (v.is_double()) {
    // Converting a double outside [-2^63, 2^63) to an int64 is undefined
    // (found by tests/fuzz: 9223372036854775808.0 passed a bound of
    // INT64_MAX, which rounds to 2^63 as a double). Compare with 2^63,
    // which a double holds exactly, then convert, then check the bounds
    // as integers.
    constexpr double two_to_63 = 9223372036854775808.0;
    auto d = v.get_double();
    if (std::trunc(d) != d || d < -two_to_63 || d >= two_to_63)
      return out_of_range();
    n = static_cast<std::int64_t>(d);
  } else {
    return out_of_range();
  }
  if (n < min || n > max)
    return out_of_range();
  return std::optional<std::int64_t>{n};
}

} // namespace videostreams
