#pragma once

#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "caf/expected.hpp"

struct pg_conn;
struct pg_result;
struct pg_cancel;

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

/// Cancels the statement running on a connection, from any thread (the
/// connection's own thread may be blocked in it). Follows the connection
/// across reconnects.
class pg_canceller {
public:
  ~pg_canceller();

  /// Asks the server to cancel what the connection runs now; true if the
  /// request was delivered (the statement then fails with an error).
  bool cancel();

private:
  friend class pg_connection;

  /// Replaces the cancel object (after a (re)connect, on the owner's
  /// thread); null when the connection is gone.
  void reset(pg_cancel* next);

  std::mutex mtx_;
  pg_cancel* cancel_ = nullptr;
};

/// One libpq connection. Blocking: use it only from a detached actor or a
/// command-line tool, never from an HTTP or scheduler thread.
class pg_connection {
public:
  /// Connects to `dsn` (a libpq connection string or URI). Unless `dsn`
  /// says otherwise, a connection attempt gives up after 10 s
  /// (`connect_timeout`), so a reconnect to a vanished host is bounded.
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

  /// What another thread may use to cancel this connection's statement.
  std::shared_ptr<pg_canceller> canceller() const noexcept {
    return canceller_;
  }

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

  std::shared_ptr<pg_canceller> canceller_;
};

} // namespace videostreams
