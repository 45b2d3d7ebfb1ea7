#pragma once

// What a Catch2 test name must be for ctest to run it by and for a failure
// to be reported under it.

#include <optional>
#include <string>
#include <string_view>

namespace videostreams::testing {

/// The column by which a test name's first ": " must end.
///
/// Catch2 2.13's console reporter prints a failing test's name wrapped to
/// 79 columns, indenting every line after the first to just past the
/// name's first ": ". When that leaves no room on the line it never
/// finishes: it writes spaces and the rest of the name forever (one failing
/// cluster test wrote some 17 GB until ctest, which keeps a test's output,
/// died of std::bad_alloc, and the failure itself was never seen). Ending
/// the ": " by column 60 leaves at least 15 columns on each line.
inline constexpr std::size_t test_name_colon_column = 60;

/// Why `name` cannot be a test name (ctest's list separator, a first
/// character that Catch2 reads as an option or a test spec's operator when
/// ctest passes the name, or a ": " that ends past
/// `test_name_colon_column`); nothing when it can.
inline std::optional<std::string> unusable_test_name(std::string_view name) {
  if (name.empty())
    return std::string{"it is empty"};
  if (std::string_view{"-~[*\" \t"}.find(name.front())
      != std::string_view::npos)
    return "it begins with '" + std::string(1, name.front())
           + "', which Catch2 reads as an option or a test spec's operator "
             "(it would not find the test ctest names)";
  if (name.find(';') != std::string_view::npos)
    return std::string{"it contains ';', which ctest reads as a list "
                       "separator"};
  auto colon = name.find(": ");
  if (colon != std::string_view::npos
      && colon + 2 > test_name_colon_column)
    return "its first \": \" ends at column " + std::to_string(colon + 2)
           + ", past column " + std::to_string(test_name_colon_column)
           + ": Catch2's console reporter would never finish printing it "
             "when it fails";
  return std::nullopt;
}

} // namespace videostreams::testing
