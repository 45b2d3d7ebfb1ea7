// The names every test program refuses (tests/common/catch_main.cpp): a
// failing test under one of them could not be reported.

#include <catch2/catch.hpp>

#include "test_names.hpp"

using videostreams::testing::unusable_test_name;

TEST_CASE("a test name whose first colon ends past column 60 is refused, "
          "one that ends by it is not") {
  // The name that hung Catch2's console reporter when its test failed.
  auto hung = unusable_test_name(
    "two nodes that leave at once under load hand their shards to the "
    "staying nodes: no request fails and no stream is lost");
  REQUIRE(hung);
  CHECK_THAT(*hung, Catch::Contains("ends at column 80"));
  std::string at_60 = std::string(58, 'x') + ": and the rest of the name";
  CHECK_FALSE(unusable_test_name(at_60));
  CHECK(unusable_test_name("y" + at_60));
  // Only the first ": " counts; a name without one is fine at any length.
  CHECK_FALSE(unusable_test_name("short: " + std::string(100, 'z') + ": z"));
  CHECK_FALSE(unusable_test_name(std::string(300, 'w')));
}

TEST_CASE("a test name with a semicolon is refused") {
  auto why = unusable_test_name("start, then stop; again");
  REQUIRE(why);
  CHECK_THAT(*why, Catch::Contains("list separator"));
}

TEST_CASE("a test name that Catch2 would read as an option or a test spec's "
          "operator is refused") {
  // ctest passes the name as an argument: "--log-format=json: ..." ran
  // nothing but "Unrecognised token".
  for (auto name : {"--log-format=json: every line", "~hidden", "[tag] name",
                    "*wild", " leading space", ""})
    CHECK(unusable_test_name(name));
  CHECK_FALSE(unusable_test_name("JSON logs (--log-format=json): every line"));
}
