#pragma once

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "caf/expected.hpp"

struct pg_conn;
struct pg_result;

namespace videostreams {

/// The rows of a finished statement, owned (PQclear on destruction).
class pg_rows {
public:
  explicit pg_rows(pg_result* res);
  ~pg_rows();
  pg_rows(pg_rows&& other) noexcept;
  pg_rows& operator=(pg_rows&& other) noexcept;
  pg_rows(const pg_rows&) = delete;
  pg_rows& operator=(const pg_rows&) = delete;

  int size() const noexcept;

  /// The text of row `row`, column `col`; empty for NULL.
  std::string at(int row, int col) const;

  bool is_null(int row, int col) const noexcept;

private:
  pg_result* res_;
};

/// One libpq connection. Blocking: use it only from a detached actor or a
/// command-line tool, never from an HTTP or scheduler thread.
class pg_connection {
public:
  /// Connects to `dsn` (a libpq connection string or URI).
  static caf::expected<pg_connection> connect(const std::string& dsn);

  ~pg_connection();
  pg_connection(pg_connection&& other) noexcept;
  pg_connection& operator=(pg_connection&& other) noexcept;
  pg_connection(const pg_connection&) = delete;
  pg_connection& operator=(const pg_connection&) = delete;

  /// Reconnects with the original parameters (after a lost connection);
  /// true when the connection is usable again (its session setup ran).
  bool reset();

  /// Runs `sql` now and again at the start of every new session (after
  /// `reset`): session settings that every statement relies on.
  caf::expected<void> set_session_setup(std::string sql);

  /// Runs one or more statements without parameters.
  caf::expected<pg_rows> exec(const std::string& sql);

  /// Runs one statement with text parameters ($1, $2, ...).
  caf::expected<pg_rows> exec(const std::string& sql,
                              const std::vector<std::string>& params);

  /// Runs one statement with text parameters as the prepared statement
  /// `name`, preparing `sql` under that name on first use on this session
  /// (again after `reset`). Saves parsing and planning on every call.
  caf::expected<pg_rows> exec_prepared(const std::string& name,
                                       const std::string& sql,
                                       const std::vector<std::string>& params);

private:
  explicit pg_connection(pg_conn* conn) noexcept : conn_(conn) {
    // Nothing else to do.
  }

  caf::expected<pg_rows> check(pg_result* res);

  pg_conn* conn_;

  /// Names prepared on the current session.
  std::set<std::string> prepared_;

  /// Run at the start of every session.
  std::string session_setup_;
};

} // namespace videostreams
