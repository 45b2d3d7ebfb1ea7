// The v2 body parser (http/request_body.hpp) on any bytes: it never throws;
// a body it accepts is a JSON object (or only white space: an empty one)
// that survives a serialize/parse round trip; a body it refuses is an error
// on the field "body". The field readers, applied to the API's own fields
// with the API's bounds (ttlSeconds 5..3600, maxStreams 0..1000) and to
// the extreme bounds of an int64, answer exactly what the contract says:
// absent or null is nothing; an integer (or an integral double) within the
// bounds is that integer; anything else is an error naming the field.
// The reference compares in long double, which holds every int64 exactly.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <boost/json.hpp>

#include "http/request_body.hpp"

#include "fuzz_check.hpp"

using namespace videostreams;
using videostreams::fuzz::printable;
namespace json = boost::json;

namespace {

struct bounds {
  std::int64_t min;
  std::int64_t max;
};

constexpr bounds checked_bounds[] = {
  {5, 3600}, // ttlSeconds, as the API's defaults have it
  {0, 1000}, // maxStreams
  {std::numeric_limits<std::int64_t>::min(),
   std::numeric_limits<std::int64_t>::max()},
  {0, std::numeric_limits<std::int64_t>::max()},
  {std::numeric_limits<std::int64_t>::min(), -1},
};

/// What `optional_integer` must answer for `v` (null pointer: the field is
/// absent): nothing, an integer, or (false) an error.
std::variant<std::optional<std::int64_t>, bool>
reference_integer(const json::value* v, bounds b) {
  if (v == nullptr || v->is_null())
    return std::optional<std::int64_t>{};
  long double x;
  if (v->is_int64())
    x = static_cast<long double>(v->get_int64());
  else if (v->is_uint64())
    x = static_cast<long double>(v->get_uint64());
  else if (v->is_double())
    x = static_cast<long double>(v->get_double());
  else
    return false;
  if (std::trunc(x) != x || x < static_cast<long double>(b.min)
      || x > static_cast<long double>(b.max))
    return false;
  return std::optional<std::int64_t>{static_cast<std::int64_t>(x)};
}

/// Whether `v` holds an infinite number anywhere.
bool has_non_finite(const json::value& v) {
  if (v.is_double())
    return !std::isfinite(v.get_double());
  if (v.is_object()) {
    for (auto& kv : v.as_object())
      if (has_non_finite(kv.value()))
        return true;
  } else if (v.is_array()) {
    for (auto& x : v.as_array())
      if (has_non_finite(x))
        return true;
  }
  return false;
}

bool has_non_finite(const json::object& obj) {
  for (auto& kv : obj)
    if (has_non_finite(kv.value()))
      return true;
  return false;
}

/// Equal values, doubles within a few units in the last place: Boost.JSON
/// 1.81 reads decimals without always rounding them correctly, so a double
/// written and read again may move by an ulp.
bool same(const json::value& a, const json::value& b) {
  if (a.kind() != b.kind())
    return false;
  if (a.is_double()) {
    auto x = a.get_double();
    auto y = b.get_double();
    return x == y || std::fabs(x - y) <= 4 * std::numeric_limits<double>::epsilon()
                                           * std::fmax(std::fabs(x), std::fabs(y));
  }
  if (a.is_object()) {
    auto& x = a.as_object();
    auto& y = b.as_object();
    if (x.size() != y.size())
      return false;
    for (auto& kv : x) {
      auto i = y.find(kv.key());
      if (i == y.end() || !same(kv.value(), i->value()))
        return false;
    }
    return true;
  }
  if (a.is_array()) {
    auto& x = a.as_array();
    auto& y = b.as_array();
    if (x.size() != y.size())
      return false;
    for (std::size_t i = 0; i < x.size(); ++i)
      if (!same(x[i], y[i]))
        return false;
    return true;
  }
  return a == b;
}

void check_integer(const json::object& obj, std::string_view name, bounds b,
                   std::string_view body) {
  auto i = obj.find(name);
  const json::value* v = i == obj.end() ? nullptr : &i->value();
  auto got = optional_integer(obj, name, b.min, b.max);
  auto want = reference_integer(v, b);
  auto where = [&] {
    return "field '" + printable(name) + "' in [" + std::to_string(b.min)
           + ", " + std::to_string(b.max) + "] of body " + printable(body);
  };
  if (auto err = std::get_if<field_error>(&got)) {
    FUZZ_CHECK(std::holds_alternative<bool>(want),
               "refused but the contract accepts it: " + where());
    FUZZ_CHECK(err->field == name && !err->detail.empty(),
               "error names '" + err->field + "': " + where());
    return;
  }
  FUZZ_CHECK(!std::holds_alternative<bool>(want),
             "accepted but the contract refuses it: " + where());
  auto& value = std::get<std::optional<std::int64_t>>(got);
  auto& expected = std::get<std::optional<std::int64_t>>(want);
  FUZZ_CHECK(value == expected,
             "read " + (value ? std::to_string(*value) : "nothing")
               + ", contract says "
               + (expected ? std::to_string(*expected) : "nothing") + ": "
               + where());
  FUZZ_CHECK(!value || (*value >= b.min && *value <= b.max),
             "out of range: " + where());
}

void check_string(const json::object& obj, std::string_view name,
                  std::string_view body) {
  auto i = obj.find(name);
  auto got = optional_string(obj, name);
  auto where = [&] {
    return "field '" + printable(name) + "' of body " + printable(body);
  };
  if (auto err = std::get_if<field_error>(&got)) {
    FUZZ_CHECK(i != obj.end() && !i->value().is_null()
                 && !i->value().is_string(),
               "refused a string, null or absent field: " + where());
    FUZZ_CHECK(err->field == name, "error names '" + err->field + "': " + where());
    return;
  }
  auto& value = std::get<std::optional<std::string>>(got);
  if (i == obj.end() || i->value().is_null()) {
    FUZZ_CHECK(!value, "read a value from nothing: " + where());
    return;
  }
  FUZZ_CHECK(i->value().is_string() && value
               && *value == std::string_view{i->value().get_string()},
             "did not read the string as it is: " + where());
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  std::string_view body{reinterpret_cast<const char*>(data), size};
  std::variant<json::object, field_error> parsed;
  try {
    parsed = parse_object_body(body);
  } catch (const std::exception& e) {
    FUZZ_CHECK(false, std::string{"threw "} + e.what() + " on body "
                        + printable(body));
  }
  bool blank = body.find_first_not_of(" \t\r\n") == std::string_view::npos;
  if (auto err = std::get_if<field_error>(&parsed)) {
    FUZZ_CHECK(!blank, "refused a blank body " + printable(body));
    FUZZ_CHECK(err->field == "body" && !err->detail.empty(),
               "a refused body names field '" + err->field + "'");
    return 0;
  }
  auto& obj = std::get<json::object>(parsed);
  if (blank) {
    FUZZ_CHECK(obj.empty(), "a blank body is not the empty object");
  } else {
    // An object's text starts with '{' and ends with '}' (JSON allows
    // white space around it, and nothing else).
    auto first = body.find_first_not_of(" \t\r\n");
    auto last = body.find_last_not_of(" \t\r\n");
    FUZZ_CHECK(body[first] == '{' && body[last] == '}',
               "accepted a body that is no JSON object: " + printable(body));
    // Boost.JSON reads a number beyond a double's range (1e400) as an
    // infinity, which it cannot write back as JSON; the API never writes a
    // client's number back, and reads such a one as out of range. (Its
    // reading of decimals is not always correctly rounded, hence `same`.)
    if (!has_non_finite(obj)) {
      json::error_code ec;
      auto again = json::parse(json::serialize(obj), ec);
      FUZZ_CHECK(!ec && same(again, json::value(obj)),
                 "the accepted object does not survive a round trip: "
                   + printable(body));
    }
  }
  std::string first_key;
  if (!obj.empty())
    first_key = std::string{obj.begin()->key()};
  for (auto& b : checked_bounds) {
    check_integer(obj, "ttlSeconds", b, body);
    check_integer(obj, "maxStreams", b, body);
    if (!first_key.empty())
      check_integer(obj, first_key, b, body);
  }
  check_string(obj, "sessionId", body);
  check_string(obj, "replaceSessionId", body);
  if (!first_key.empty())
    check_string(obj, first_key, body);
  return 0;
}
