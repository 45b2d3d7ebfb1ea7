#include "http/user_id.hpp"

#include <catch2/catch.hpp>

using videostreams::parse_user_id;

TEST_CASE("user ids are plain non-negative decimal integers", "[unit]") {
  CHECK(parse_user_id("0") == 0u);
  CHECK(parse_user_id("7") == 7u);
  CHECK(parse_user_id("007") == 7u);
  CHECK(parse_user_id("000000000000000000000000000042") == 42u);
  CHECK(parse_user_id("9223372036854775807") == 9223372036854775807u);
}

TEST_CASE("anything else is no user id", "[unit]") {
  for (auto text : {"", "-1", "+1", " 1", "1 ", "1.5", "1e3", "abc", "0x10",
                    "9223372036854775808", "18446744073709551615",
                    "18446744073709551616", "99999999999999999999999"}) {
    INFO("text: '" << text << "'");
    CHECK_FALSE(parse_user_id(text).has_value());
  }
}
