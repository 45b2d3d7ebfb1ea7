#include "persistence/pg_connection.hpp"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <string_view>

#include <poll.h>
#include <sys/socket.h>

#include <libpq-fe.h>

#include "caf/sec.hpp"

#include "persistence/persistence_error.hpp"

namespace videostreams {

namespace {

/// libpq's message without its trailing newline.
std::string trimmed(std::string msg) {
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' '))
    msg.pop_back();
  return msg;
}

/// The parameters as libpq takes them (pointers into `params`).
std::vector<const char*> c_strings(const std::vector<std::string>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (auto& p : params)
    values.push_back(p.c_str());
  return values;
}

using steady = std::chrono::steady_clock;

/// `after` from now; no deadline (the latest time point) for zero.
steady::time_point deadline_after(std::chrono::milliseconds after) {
  return after.count() > 0 ? steady::now() + after : steady::time_point::max();
}

/// Waits until `fd` is ready for `events`; false once `deadline` passed.
/// An error on the socket, or no socket, counts as ready: the next libpq
/// call reports it.
bool wait_for(int fd, short events, steady::time_point deadline) {
  for (;;) {
    int wait_ms = -1;
    if (deadline != steady::time_point::max()) {
      auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline
                                                               - steady::now())
                    .count();
      if (left <= 0)
        return false;
      wait_ms = static_cast<int>(std::min<long long>(left, INT_MAX));
    }
    if (fd < 0)
      return true;
    pollfd p{fd, events, 0};
    auto n = ::poll(&p, 1, wait_ms);
    if (n > 0 || (n < 0 && errno != EINTR))
      return true;
  }
}

/// The DSN's `connect_timeout` (seconds; zero or less waits for good, as
/// libpq's own does), else 10 s. libpq applies it only to blocking
/// connects, which `open` does not use.
std::chrono::milliseconds configured_connect_timeout(pg_conn* conn) {
  std::chrono::milliseconds result{std::chrono::seconds{10}};
  if (auto* options = PQconninfo(conn)) {
    for (auto* o = options; o->keyword != nullptr; ++o)
      if (std::string_view{o->keyword} == "connect_timeout" && o->val != nullptr
          && *o->val != '\0')
        result = std::chrono::seconds{std::max(0, std::atoi(o->val))};
    PQconninfoFree(options);
  }
  return result;
}

/// Opens a connection to `dsn`, giving up after `timeout` (zero: the DSN's
/// `connect_timeout`, else 10 s). Looking up a host name is not bounded.
caf::expected<pg_conn*> open(const std::string& dsn,
                             std::chrono::milliseconds timeout) {
  // Over TCP, a connection that a network or a failover left dangling is
  // found dead while idle (keepalive probes unanswered for 25 s) or with
  // data unacknowledged for 30 s, instead of after TCP's quarter of an
  // hour; the next statement on it then fails at once, and is retried on a
  // new connection. The DSN is expanded in place of `dbname`, after these
  // defaults, so its own settings win.
  const char* keywords[] = {"keepalives_idle", "keepalives_interval",
                            "keepalives_count", "tcp_user_timeout", "dbname",
                            nullptr};
  const char* values[] = {"10", "5", "3", "30000", dsn.c_str(), nullptr};
  auto conn = PQconnectStartParams(keywords, values, 1);
  if (conn == nullptr)
    return make_error(persistence_error::unreachable,
                      "cannot start a connection (out of memory)");
  if (timeout.count() == 0)
    timeout = configured_connect_timeout(conn);
  auto deadline = deadline_after(timeout);
  // As libpq's documentation says: poll as if the last answer was WRITING.
  auto status = PGRES_POLLING_WRITING;
  while (PQstatus(conn) != CONNECTION_BAD && status != PGRES_POLLING_OK
         && status != PGRES_POLLING_FAILED) {
    short events = status == PGRES_POLLING_READING ? POLLIN : POLLOUT;
    if (!wait_for(PQsocket(conn), events, deadline)) {
      PQfinish(conn);
      return make_error(persistence_error::unreachable,
                        "no connection to the database within "
                          + std::to_string(timeout.count()) + " ms");
    }
    status = PQconnectPoll(conn);
  }
  if (PQstatus(conn) != CONNECTION_OK) {
    auto msg = trimmed(PQerrorMessage(conn));
    PQfinish(conn);
    return make_error(persistence_error::unreachable, msg);
  }
  // NOTICEs ("relation already exists, skipping") are not for our logs.
  PQsetNoticeProcessor(conn, [](void*, const char*) {}, nullptr);
  return conn;
}

caf::error not_connected() {
  return make_error(persistence_error::unreachable,
                    "not connected to the database");
}

} // namespace

pg_rows::pg_rows(pg_result* res) : res_(res) {
  // Nothing else to do.
}

pg_rows::~pg_rows() {
  if (res_ != nullptr)
    PQclear(res_);
}

pg_rows::pg_rows(pg_rows&& other) noexcept : res_(other.res_) {
  other.res_ = nullptr;
}

pg_rows& pg_rows::operator=(pg_rows&& other) noexcept {
  std::swap(res_, other.res_);
  return *this;
}

int pg_rows::size() const noexcept {
  return res_ == nullptr ? 0 : PQntuples(res_);
}

std::string pg_rows::at(int row, int col) const {
  if (PQgetisnull(res_, row, col))
    return {};
  return {PQgetvalue(res_, row, col),
          static_cast<std::size_t>(PQgetlength(res_, row, col))};
}

bool pg_rows::is_null(int row, int col) const noexcept {
  return PQgetisnull(res_, row, col) != 0;
}

void pg_abort_handle::abort() {
  std::lock_guard<std::mutex> guard{mtx_};
  aborted_ = true;
  if (socket_ >= 0)
    ::shutdown(socket_, SHUT_RDWR);
}

bool pg_abort_handle::aborted() {
  std::lock_guard<std::mutex> guard{mtx_};
  return aborted_;
}

void pg_abort_handle::reset(int socket) {
  std::lock_guard<std::mutex> guard{mtx_};
  socket_ = socket;
  if (aborted_ && socket_ >= 0)
    ::shutdown(socket_, SHUT_RDWR); // aborted while it connected
}

pg_connection::pg_connection(pg_conn* conn, std::string dsn,
                             pg_timeouts timeouts)
  : conn_(conn),
    dsn_(std::move(dsn)),
    timeouts_(timeouts),
    abort_handle_(std::make_shared<pg_abort_handle>()) {
  abort_handle_->reset(PQsocket(conn_));
}

caf::expected<pg_connection> pg_connection::connect(const std::string& dsn,
                                                    pg_timeouts timeouts) {
  auto conn = open(dsn, timeouts.connect);
  if (!conn)
    return std::move(conn.error());
  pg_connection result{*conn, dsn, timeouts};
  if (auto ready = result.set_up_session(); !ready)
    return std::move(ready.error());
  return result;
}

pg_connection::~pg_connection() {
  if (abort_handle_)
    abort_handle_->reset(-1);
  if (conn_ != nullptr)
    PQfinish(conn_);
}

pg_connection::pg_connection(pg_connection&& other) noexcept
  : conn_(other.conn_),
    dsn_(std::move(other.dsn_)),
    timeouts_(other.timeouts_),
    prepared_(std::move(other.prepared_)),
    session_setup_(std::move(other.session_setup_)),
    abort_handle_(std::move(other.abort_handle_)) {
  other.conn_ = nullptr;
}

pg_connection& pg_connection::operator=(pg_connection&& other) noexcept {
  std::swap(conn_, other.conn_);
  std::swap(dsn_, other.dsn_);
  std::swap(timeouts_, other.timeouts_);
  std::swap(prepared_, other.prepared_);
  std::swap(session_setup_, other.session_setup_);
  std::swap(abort_handle_, other.abort_handle_);
  return *this;
}

int pg_connection::socket() const noexcept {
  return conn_ == nullptr ? -1 : PQsocket(conn_);
}

void pg_connection::drop() noexcept {
  prepared_.clear();
  if (conn_ == nullptr)
    return;
  abort_handle_->reset(-1);
  PQfinish(conn_);
  conn_ = nullptr;
}

bool pg_connection::reset() {
  drop();
  if (abort_handle_->aborted())
    return false;
  auto conn = open(dsn_, timeouts_.connect);
  if (!conn)
    return false;
  conn_ = *conn;
  abort_handle_->reset(PQsocket(conn_));
  return static_cast<bool>(set_up_session());
}

caf::expected<void> pg_connection::set_up_session() {
  if (timeouts_.answer.count() > 0)
    if (auto done = exec("SET statement_timeout = "
                         + std::to_string(timeouts_.answer.count()));
        !done)
      return done.error();
  if (!session_setup_.empty())
    if (auto done = exec(session_setup_); !done)
      return done.error();
  return caf::unit;
}

caf::expected<void> pg_connection::set_session_setup(std::string sql) {
  session_setup_ = std::move(sql);
  if (auto done = exec(session_setup_); !done)
    return done.error();
  return caf::unit;
}

caf::expected<pg_rows> pg_connection::exec(const std::string& sql) {
  if (conn_ == nullptr)
    return not_connected();
  return answer(PQsendQuery(conn_, sql.c_str()) == 1,
                timeouts_.answer_wait());
}

caf::expected<pg_rows>
pg_connection::exec(const std::string& sql,
                    const std::vector<std::string>& params) {
  if (conn_ == nullptr)
    return not_connected();
  auto values = c_strings(params);
  return answer(PQsendQueryParams(conn_, sql.c_str(),
                                  static_cast<int>(params.size()), nullptr,
                                  values.data(), nullptr, nullptr, 0)
                  == 1,
                timeouts_.answer_wait());
}

caf::expected<pg_rows>
pg_connection::exec_prepared(const std::string& name, const std::string& sql,
                             const std::vector<std::string>& params) {
  if (conn_ == nullptr)
    return not_connected();
  if (prepared_.count(name) == 0) {
    auto done = answer(PQsendPrepare(conn_, name.c_str(), sql.c_str(),
                                     static_cast<int>(params.size()), nullptr)
                         == 1,
                       timeouts_.answer_wait());
    if (!done)
      return done.error();
    prepared_.insert(name);
  }
  auto values = c_strings(params);
  auto res = await_answer(PQsendQueryPrepared(conn_, name.c_str(),
                                              static_cast<int>(params.size()),
                                              values.data(), nullptr, nullptr,
                                              0)
                            == 1,
                          timeouts_.answer_wait());
  if (!res)
    return res.error();
  // 26000: the session lost the statement (a pooler switched sessions, or
  // someone ran DEALLOCATE): prepare it again next time.
  if (auto* state = *res ? PQresultErrorField(*res, PG_DIAG_SQLSTATE) : nullptr;
      state != nullptr && std::string_view{state} == "26000")
    prepared_.erase(name);
  return check(*res);
}

bool pg_connection::answers_within(std::chrono::milliseconds bound) {
  if (conn_ != nullptr && answer(PQsendQuery(conn_, "SELECT 1") == 1, bound))
    return true;
  drop();
  return false;
}

caf::expected<pg_rows> pg_connection::answer(bool sent,
                                             std::chrono::milliseconds bound) {
  auto res = await_answer(sent, bound);
  if (!res)
    return res.error();
  return check(*res);
}

caf::expected<pg_result*>
pg_connection::await_answer(bool sent, std::chrono::milliseconds bound) {
  if (!sent)
    return nullptr;
  auto deadline = deadline_after(bound);
  pg_result* kept = nullptr;
  for (;;) {
    while (PQisBusy(conn_) == 1) {
      if (!wait_for(PQsocket(conn_), POLLIN, deadline)) {
        if (kept != nullptr)
          PQclear(kept);
        drop();
        return make_error(persistence_error::unreachable,
                          "no answer from the database within "
                            + std::to_string(bound.count())
                            + " ms; the connection was closed");
      }
      if (PQconsumeInput(conn_) == 0)
        break; // a lost connection: PQgetResult says so
    }
    auto* res = PQgetResult(conn_);
    if (res == nullptr)
      break;
    // As PQexec: the last result, though an error stays the answer.
    if (kept != nullptr && PQresultStatus(kept) == PGRES_FATAL_ERROR) {
      PQclear(res);
    } else {
      if (kept != nullptr)
        PQclear(kept);
      kept = res;
    }
  }
  return kept;
}

caf::expected<pg_rows> pg_connection::check(pg_result* res) {
  pg_rows rows{res};
  auto status = res == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(res);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
    return rows;
  if (conn_ == nullptr)
    return not_connected();
  auto msg = trimmed(res != nullptr ? PQresultErrorMessage(res)
                                    : PQerrorMessage(conn_));
  auto code = PQstatus(conn_) == CONNECTION_OK ? persistence_error::statement
                                                : persistence_error::unreachable;
  if (auto* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
      state != nullptr) {
    if (std::string_view{state} == "55P03")
      code = persistence_error::lock_timeout;
    else if (std::string_view{state} == "57014")
      code = persistence_error::canceled;
  }
  return make_error(code, msg);
}

} // namespace videostreams
