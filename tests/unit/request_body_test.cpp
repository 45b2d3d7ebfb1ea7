#include "http/request_body.hpp"

#include <catch2/catch.hpp>

#include <limits>
#include <set>

#include <boost/json.hpp>

using namespace videostreams;
namespace json = boost::json;

namespace {

json::object object_of(std::string_view body) {
  auto r = parse_object_body(body);
  REQUIRE(std::holds_alternative<json::object>(r));
  return std::get<json::object>(r);
}

} // namespace

TEST_CASE("session ids are 1-64 characters of [A-Za-z0-9._-]", "[unit]") {
  CHECK(valid_session_id("a"));
  CHECK(valid_session_id("TV-living_room.2"));
  CHECK(valid_session_id(std::string(64, 'x')));
  CHECK_FALSE(valid_session_id(""));
  CHECK_FALSE(valid_session_id(std::string(65, 'x')));
  CHECK(valid_session_id(".a."));
  for (auto bad : {"a b", "a/b", "a%b", "ä", "a\n", "{x}", "a+b", ".", "..",
                   "..."}) {
    INFO(bad);
    CHECK_FALSE(valid_session_id(bad));
  }
}

TEST_CASE("server-made session ids are 128-bit random hex", "[unit]") {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    auto id = new_session_id();
    REQUIRE(id.size() == 32);
    CHECK(id.find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK(valid_session_id(id));
    seen.insert(id);
  }
  CHECK(seen.size() == 1000);
}

TEST_CASE("a body must be a JSON object or empty", "[unit]") {
  CHECK(object_of("").empty());
  CHECK(object_of(" \r\n").empty());
  CHECK(object_of(R"({"a":1,"unknown":[1,2]})").size() == 2);
  for (auto bad : {"[]", "1", "\"x\"", "null", "{", "{\"a\":}", "x"}) {
    INFO(bad);
    auto r = parse_object_body(bad);
    REQUIRE(std::holds_alternative<field_error>(r));
    CHECK(std::get<field_error>(r).field == "body");
  }
}

TEST_CASE("integer fields are checked for type and range", "[unit]") {
  auto get = [](std::string_view body) {
    return optional_integer(object_of(body), "ttlSeconds", 5, 3600);
  };
  using opt = std::optional<std::int64_t>;
  CHECK(std::get<opt>(get(R"({})")) == std::nullopt);
  CHECK(std::get<opt>(get(R"({"ttlSeconds":null})")) == std::nullopt);
  CHECK(std::get<opt>(get(R"({"ttlSeconds":5})")) == 5);
  CHECK(std::get<opt>(get(R"({"ttlSeconds":3600})")) == 3600);
  CHECK(std::get<opt>(get(R"({"ttlSeconds":30.0})")) == 30);
  for (auto bad : {R"({"ttlSeconds":4})", R"({"ttlSeconds":3601})",
                   R"({"ttlSeconds":-1})", R"({"ttlSeconds":1.5})",
                   R"({"ttlSeconds":"30"})", R"({"ttlSeconds":true})",
                   R"({"ttlSeconds":[30]})",
                   R"({"ttlSeconds":18446744073709551615})",
                   R"({"ttlSeconds":1e300})"}) {
    INFO(bad);
    auto r = get(bad);
    REQUIRE(std::holds_alternative<field_error>(r));
    CHECK(std::get<field_error>(r).field == "ttlSeconds");
  }
}

TEST_CASE("string fields are checked for type", "[unit]") {
  using opt = std::optional<std::string>;
  auto r = optional_string(object_of(R"({"sessionId":"x"})"), "sessionId");
  CHECK(std::get<opt>(r) == "x");
  auto bad = optional_string(object_of(R"({"sessionId":7})"), "sessionId");
  REQUIRE(std::holds_alternative<field_error>(bad));
  CHECK(std::get<field_error>(bad).field == "sessionId");
  // null is as if the field were absent, as for integer fields.
  auto null = optional_string(object_of(R"({"sessionId":null})"), "sessionId");
  REQUIRE(std::holds_alternative<opt>(null));
  CHECK(std::get<opt>(null) == std::nullopt);
  auto absent = optional_string(object_of(R"({})"), "sessionId");
  REQUIRE(std::holds_alternative<opt>(absent));
  CHECK(std::get<opt>(absent) == std::nullopt);
}

TEST_CASE("integral doubles at the edge of int64 are read exactly or refused",
          "[unit]") {
  // Found by tests/fuzz (fuzz_request_body): 2^63 as a double passed a
  // bound of INT64_MAX (which rounds to 2^63) and was then converted to an
  // int64, which is undefined (INT64_MIN on x86-64).
  constexpr auto lo = std::numeric_limits<std::int64_t>::min();
  constexpr auto hi = std::numeric_limits<std::int64_t>::max();
  using opt = std::optional<std::int64_t>;
  auto get = [&](std::string_view body) {
    return optional_integer(object_of(body), "n", lo, hi);
  };
  for (auto bad : {R"({"n":9223372036854775808.0})",
                   R"({"n":9223372036854775807e0})", R"({"n":1e19})",
                   R"({"n":-9223372036854777856.0})", R"({"n":1e400})"}) {
    INFO(bad);
    auto r = get(bad);
    REQUIRE(std::holds_alternative<field_error>(r));
    CHECK(std::get<field_error>(r).field == "n");
  }
  // The largest double below 2^63, and -2^63, are int64 values.
  CHECK(std::get<opt>(get(R"({"n":9223372036854774784.0})"))
        == 9223372036854774784);
  CHECK(std::get<opt>(get(R"({"n":-9223372036854775808.0})")) == lo);
}
