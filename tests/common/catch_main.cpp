// Catch2's main for every test program, alone in its translation unit so
// that editing a test does not recompile it. It refuses to run (and
// catch_discover_tests, which lists the tests after each build, fails the
// build) while a test has a name that ctest could not run it by, or that
// a failure could not be reported under (test_names.hpp).

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <iostream>

#include "test_names.hpp"

int main(int argc, char* argv[]) {
  Catch::Session session;
  if (auto rc = session.applyCommandLine(argc, argv); rc != 0)
    return rc;
  int unusable = 0;
  for (auto& test : Catch::getRegistryHub().getTestCaseRegistry().getAllTests())
    if (auto why = videostreams::testing::unusable_test_name(test.name)) {
      std::cerr << test.lineInfo << ": test name \"" << test.name
                << "\" cannot be used: " << *why << '\n';
      ++unusable;
    }
  if (unusable > 0)
    return 2;
  return session.run();
}
