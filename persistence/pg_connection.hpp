#pragma once

#include <memory>
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
  /// true when the connection is usable again.
  bool reset();

  /// Runs one or more statements without parameters.
  caf::expected<pg_rows> exec(const std::string& sql);

  /// Runs one statement with text parameters ($1, $2, ...).
  caf::expected<pg_rows> exec(const std::string& sql,
                              const std::vector<std::string>& params);

private:
  explicit pg_connection(pg_conn* conn) noexcept : conn_(conn) {
    // Nothing else to do.
  }

  caf::expected<pg_rows> check(pg_result* res);

  pg_conn* conn_;
};

} // namespace videostreams
