#pragma once

#include <string>

namespace videostreams {

/// Builds a PostgreSQL array literal, e.g. {1,2,3} or {"a","b"}, to pass
/// an array as one text parameter.
class array_literal {
public:
  /// Appends `element`, quoted and escaped if `quote`.
  void add(const std::string& element, bool quote) {
    text_ += text_.size() == 1 ? "" : ",";
    if (!quote) {
      text_ += element;
      return;
    }
    text_ += '"';
    for (char c : element) {
      if (c == '"' || c == '\\')
        text_ += '\\';
      text_ += c;
    }
    text_ += '"';
  }

  /// Appends a number.
  template <class T>
  void add(T value) {
    add(std::to_string(value), false);
  }

  /// Appends a boolean.
  void add(bool value) {
    add(value ? "t" : "f", false);
  }

  std::string str() const {
    return text_ + "}";
  }

private:
  std::string text_ = "{";
};

} // namespace videostreams
