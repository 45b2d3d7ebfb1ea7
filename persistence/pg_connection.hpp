#pragma once

#include <chrono>
#include <memory>
#include <mutex>
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

/// Ends a connection for good, from any thread (the connection's own
/// thread may be blocked in a statement): it shuts the connection's socket
/// down, so a wait ends at once with `unreachable` however silent the
/// server is (asking the server to cancel would need it to answer), and the
/// connection connects no more. The server rolls back what had not
/// committed once it notices. For stopping: the process must not wait for
/// a statement that may never end, nor for a retry after it.
class pg_abort_handle {
public:
  void abort();

  bool aborted();

private:
  friend class pg_connection;

  /// Sets the socket (after a (re)connect, on the owner's thread); -1 when
  /// the connection is gone, before the socket is closed.
  void reset(int socket);

  std::mutex mtx_;
  int socket_ = -1;
  bool aborted_ = false;
};

/// How long a connection waits for the server. The server's own bound on a
/// statement (`statement_timeout`) cannot help when the server does not
/// answer at all (a network that drops packets, a failover that left the
/// old connections dangling): this side then needs a bound of its own.
struct pg_timeouts {
  /// A connection attempt (connect or reset), all of the DSN's hosts
  /// together. Zero: the DSN's `connect_timeout`, else 10 s.
  std::chrono::milliseconds connect{0};

  /// The longest a statement may take. The server cancels it then
  /// (`statement_timeout`, set at the start of every session); a server
  /// that has not answered by then is given up on: the connection is
  /// closed (the statement may or may not have run), the call fails
  /// `unreachable`, and `reset` connects afresh. Zero: no bound.
  std::chrono::milliseconds answer{0};

  /// How much longer than `answer` this side waits before it gives up on
  /// the server, so that a server that answers gets to say that it
  /// canceled the statement (its transaction rolled back), rather than
  /// leave it unknown whether a commit landed.
  std::chrono::milliseconds answer_grace{0};

  /// How long this side waits for the answer to a statement: zero (no
  /// bound) without `answer`.
  std::chrono::milliseconds answer_wait() const noexcept {
    return answer.count() > 0 ? answer + answer_grace : answer;
  }
};

/// One libpq connection. Blocking: use it only from a detached actor or a
/// command-line tool, never from an HTTP or scheduler thread.
class pg_connection {
public:
  /// Connects to `dsn` (a libpq connection string or URI), waiting for the
  /// server at most as long as `timeouts` say, so that neither a reconnect
  /// to a vanished host nor a statement to a silent one waits for good.
  static caf::expected<pg_connection> connect(const std::string& dsn,
                                              pg_timeouts timeouts = {});

  ~pg_connection();
  pg_connection(pg_connection&& other) noexcept;
  pg_connection& operator=(pg_connection&& other) noexcept;
  pg_connection(const pg_connection&) = delete;
  pg_connection& operator=(const pg_connection&) = delete;

  /// Closes the connection and connects afresh with the original
  /// parameters (after a lost connection); true when the connection is
  /// usable again (its session set up). False once aborted.
  bool reset();

  /// Runs `sql` now and again at the start of every new session (after
  /// `reset`): session settings that every statement relies on.
  caf::expected<void> set_session_setup(std::string sql);

  /// True when the server answers a trivial statement within `bound`;
  /// otherwise the connection is closed (`reset` connects afresh). Before
  /// work that waits long for its answer, on a connection that may have
  /// been left dangling while idle.
  bool answers_within(std::chrono::milliseconds bound);

  /// The connection's socket (to check its options); -1 while not
  /// connected.
  int socket() const noexcept;

  /// What another thread may use to end this connection's wait.
  std::shared_ptr<pg_abort_handle> abort_handle() const noexcept {
    return abort_handle_;
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
  pg_connection(pg_conn* conn, std::string dsn, pg_timeouts timeouts);

  /// Waits for the answer to the statement just sent (`sent`: the PQsend
  /// call succeeded), at most `bound` (zero: no bound): its result (null
  /// when none came, as after a lost connection), or an error when it timed
  /// out.
  caf::expected<pg_result*> await_answer(bool sent,
                                         std::chrono::milliseconds bound);

  /// `await_answer`, checked.
  caf::expected<pg_rows> answer(bool sent, std::chrono::milliseconds bound);

  /// Closes the connection; statements fail `unreachable` until `reset`.
  void drop() noexcept;

  /// Sets up a new session: the statement timeout, then `session_setup_`.
  caf::expected<void> set_up_session();

  caf::expected<pg_rows> check(pg_result* res);

  /// Null while not connected (after a failed reset or a drop).
  pg_conn* conn_;

  std::string dsn_;

  pg_timeouts timeouts_;

  /// Names prepared on the current session.
  std::set<std::string> prepared_;

  /// Run at the start of every session.
  std::string session_setup_;

  std::shared_ptr<pg_abort_handle> abort_handle_;
};

} // namespace videostreams
