#include "http/served_files.hpp"

namespace videostreams {

const served_file* served_file_table::find(std::string_view path) const
  noexcept {
  // A handful of files: a linear scan is as fast as anything else.
  for (auto& f : *this)
    if (f.path == path)
      return &f;
  return nullptr;
}

bool etag_matches(std::string_view if_none_match,
                  std::string_view etag) noexcept {
  // If-None-Match = "*" / #entity-tag; entity-tag = [ "W/" ] DQUOTE
  // *etagc DQUOTE, where etagc may be a comma: read tags, not fields.
  std::string_view rest = if_none_match;
  auto skip_separators = [&rest] {
    while (!rest.empty()
           && (rest.front() == ' ' || rest.front() == '\t'
               || rest.front() == ','))
      rest.remove_prefix(1);
  };
  for (skip_separators(); !rest.empty(); skip_separators()) {
    if (rest.front() == '*')
      return true;
    if (rest.substr(0, 2) == "W/")
      rest.remove_prefix(2);
    if (rest.empty() || rest.front() != '"')
      return false; // not a list of entity tags: nothing matches
    auto close = rest.find('"', 1);
    if (close == std::string_view::npos)
      return false;
    auto tag = rest.substr(0, close + 1);
    rest.remove_prefix(close + 1);
    if (!rest.empty() && rest.front() != ' ' && rest.front() != '\t'
        && rest.front() != ',')
      return false; // junk after a tag: not a list of entity tags
    if (tag == etag)
      return true;
  }
  return false;
}

} // namespace videostreams
