#pragma once

#include <cstddef>
#include <string_view>

namespace videostreams {

/// A file embedded into the binary at build time (`add_served_files` in
/// cmake/ServedFiles.cmake) and served as it is.
struct served_file {
  /// Where it is served, e.g. "/ui/index.html".
  std::string_view path;
  std::string_view content_type;
  /// A strong entity tag, quotes included: a digest of `body`.
  std::string_view etag;
  std::string_view body;
};

/// The files of one `add_served_files` list.
struct served_file_table {
  const served_file* files = nullptr;
  std::size_t count = 0;

  /// The file served at `path`, or null.
  const served_file* find(std::string_view path) const noexcept;

  const served_file* begin() const noexcept {
    return files;
  }

  const served_file* end() const noexcept {
    return files + count;
  }
};

/// The files the service serves (the list in http/CMakeLists.txt): the
/// operator page under /ui/ and the OpenAPI description.
extern const served_file_table served_files;

/// Whether an `If-None-Match` header value names `etag` (a quoted strong
/// tag): true for "*" or a list that holds the tag, compared weakly as RFC
/// 9110 §13.1.2 asks (a `W/` prefix is ignored).
bool etag_matches(std::string_view if_none_match,
                  std::string_view etag) noexcept;

} // namespace videostreams
