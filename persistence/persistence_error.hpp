#pragma once

#include <cstdint>
#include <string>

#include "caf/atom.hpp"
#include "caf/error.hpp"
#include "caf/make_message.hpp"

namespace videostreams {

/// What can go wrong talking to PostgreSQL.
enum class persistence_error : std::uint8_t {
  none = 0,
  /// The database cannot be reached (connection refused or lost).
  unreachable,
  /// A statement failed (constraint, syntax, serialization...).
  statement,
  /// The schema is not what this binary expects.
  schema,
  /// The write was refused: another node owns the shard now (a newer
  /// epoch). This node must stop serving that shard.
  fenced,
  /// The backlog of unwritten changes is full (the database has been
  /// unreachable for a while); the change was not taken.
  backlog_full,
  /// The commit holding a change was not confirmed in time; it may still
  /// land, so the caller must undo what it depends on.
  commit_timeout,
  /// A statement gave up waiting for a lock (`lock_timeout`, SQLSTATE
  /// 55P03): someone else holds it; nothing was changed.
  lock_timeout,
  /// The server canceled the statement (SQLSTATE 57014): its
  /// `statement_timeout` passed, or an operator canceled it; its
  /// transaction was rolled back.
  canceled,
};

/// Renders a `persistence_error`.
std::string to_string(persistence_error x);

/// True if `err` is the persistence error `x` (not merely the same code in
/// another category).
inline bool is(const caf::error& err, persistence_error x) {
  return err.category() == caf::atom("pg")
         && err.code() == static_cast<std::uint8_t>(x);
}

/// Makes a CAF error of `x` with a human-readable `detail`.
inline caf::error make_error(persistence_error x, std::string detail) {
  return caf::error{static_cast<std::uint8_t>(x), caf::atom("pg"),
                    caf::make_message(std::move(detail))};
}

} // namespace videostreams

namespace videostreams {

/// A one-line description of an error made by `make_error` above (or any
/// other CAF error), for logs and the `db` commands.
std::string describe(const caf::error& err);

} // namespace videostreams
