#include "persistence/persistence_error.hpp"

#include "caf/atom.hpp"

namespace videostreams {

std::string to_string(persistence_error x) {
  switch (x) {
    case persistence_error::none:
      return "none";
    case persistence_error::unreachable:
      return "database unreachable";
    case persistence_error::statement:
      return "statement failed";
    case persistence_error::schema:
      return "schema mismatch";
    case persistence_error::fenced:
      return "fenced: the shard has a newer owner";
    case persistence_error::backlog_full:
      return "write-behind backlog full";
    case persistence_error::commit_timeout:
      return "commit not confirmed in time";
    case persistence_error::lock_timeout:
      return "gave up waiting for a lock";
    case persistence_error::canceled:
      return "statement canceled by the server";
  }
  return "unknown";
}

std::string describe(const caf::error& err) {
  if (err.category() != caf::atom("pg"))
    return to_string(err);
  auto result = to_string(static_cast<persistence_error>(err.code()));
  auto& ctx = err.context();
  if (ctx.size() == 1 && ctx.match_element<std::string>(0))
    result += ": " + ctx.get_as<std::string>(0);
  return result;
}

} // namespace videostreams
