#pragma once

// Checks of a Prometheus text exposition (format 0.0.4), shared by the
// unit and black-box tiers: every family declared with `# TYPE` shows at
// least one sample, every sample belongs to a declared family, no series
// appears twice, and every value is a number.

#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace videostreams::testing {

/// What is wrong with an exposition: families without a sample, samples
/// without a family, repeated series, unreadable lines.
struct exposition_report {
  /// Family name -> its type, as `# TYPE` declared it.
  std::map<std::string, std::string> families;
  /// Family name -> its samples, in order (name with labels, value).
  std::map<std::string, std::vector<std::pair<std::string, double>>> samples;
  std::vector<std::string> problems;

  bool ok() const noexcept {
    return problems.empty();
  }

  /// The problems, a line each (for a test's INFO).
  std::string problems_text() const {
    std::string out;
    for (auto& p : problems)
      out += p + "\n";
    return out;
  }

  /// The value of the series `series` (name and labels, exactly as
  /// exposed); -1 when absent.
  double value(const std::string& series) const {
    for (auto& [family, list] : samples)
      for (auto& [s, v] : list)
        if (s == series)
          return v;
    return -1;
  }
};

inline exposition_report check_exposition(const std::string& text) {
  exposition_report r;
  std::set<std::string> seen;
  std::istringstream in{text};
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty())
      continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      std::istringstream words{line.substr(7)};
      std::string name, type;
      words >> name >> type;
      if (name.empty() || type.empty() || r.families.count(name) > 0)
        r.problems.push_back("bad or repeated TYPE line: " + line);
      r.families[name] = type;
      continue;
    }
    if (line[0] == '#')
      continue;
    auto brace = line.find('{');
    auto space = line.rfind(' ');
    if (space == std::string::npos) {
      r.problems.push_back("no value: " + line);
      continue;
    }
    auto series = line.substr(0, space);
    auto name = line.substr(0, std::min(brace, space));
    auto value_text = line.substr(space + 1);
    char* end = nullptr;
    double value = std::strtod(value_text.c_str(), &end);
    if (value_text.empty() || *end != '\0')
      r.problems.push_back("not a number: " + line);
    if (!seen.insert(series).second)
      r.problems.push_back("repeated series: " + series);
    std::string family = name;
    if (r.families.count(family) == 0) {
      for (auto suffix : {"_bucket", "_sum", "_count"}) {
        std::string s{suffix};
        if (name.size() > s.size()
            && name.compare(name.size() - s.size(), s.size(), s) == 0) {
          auto base = name.substr(0, name.size() - s.size());
          auto i = r.families.find(base);
          if (i != r.families.end() && i->second == "histogram")
            family = base;
        }
      }
    }
    if (r.families.count(family) == 0) {
      r.problems.push_back("a sample of no declared family: " + line);
      continue;
    }
    r.samples[family].emplace_back(series, value);
  }
  for (auto& [name, type] : r.families)
    if (r.samples.count(name) == 0)
      r.problems.push_back("family without a sample: " + name + " ("
                           + type + ")");
  return r;
}

} // namespace videostreams::testing
