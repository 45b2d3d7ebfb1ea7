#include "persistence/pg_connection.hpp"

#include <string_view>

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

pg_canceller::~pg_canceller() {
  reset(nullptr);
}

bool pg_canceller::cancel() {
  std::lock_guard<std::mutex> guard{mtx_};
  char errbuf[256];
  return cancel_ != nullptr && PQcancel(cancel_, errbuf, sizeof(errbuf)) == 1;
}

void pg_canceller::reset(pg_cancel* next) {
  std::lock_guard<std::mutex> guard{mtx_};
  if (cancel_ != nullptr)
    PQfreeCancel(cancel_);
  cancel_ = next;
}

caf::expected<pg_connection> pg_connection::connect(const std::string& dsn) {
  // The DSN is expanded in place of `dbname`, after our default, so its own
  // connect_timeout (if any) wins.
  const char* keywords[] = {"connect_timeout", "dbname", nullptr};
  const char* values[] = {"10", dsn.c_str(), nullptr};
  auto conn = PQconnectdbParams(keywords, values, 1);
  if (PQstatus(conn) != CONNECTION_OK) {
    auto msg = trimmed(PQerrorMessage(conn));
    PQfinish(conn);
    return make_error(persistence_error::unreachable, msg);
  }
  // NOTICEs ("relation already exists, skipping") are not for our logs.
  PQsetNoticeProcessor(conn, [](void*, const char*) {}, nullptr);
  pg_connection result{conn};
  result.canceller_ = std::make_shared<pg_canceller>();
  result.canceller_->reset(PQgetCancel(conn));
  return result;
}

pg_connection::~pg_connection() {
  if (canceller_)
    canceller_->reset(nullptr);
  if (conn_ != nullptr)
    PQfinish(conn_);
}

pg_connection::pg_connection(pg_connection&& other) noexcept
  : conn_(other.conn_),
    prepared_(std::move(other.prepared_)),
    session_setup_(std::move(other.session_setup_)),
    canceller_(std::move(other.canceller_)) {
  other.conn_ = nullptr;
}

pg_connection& pg_connection::operator=(pg_connection&& other) noexcept {
  std::swap(conn_, other.conn_);
  std::swap(prepared_, other.prepared_);
  std::swap(session_setup_, other.session_setup_);
  std::swap(canceller_, other.canceller_);
  return *this;
}

bool pg_connection::reset() {
  prepared_.clear();
  PQreset(conn_);
  canceller_->reset(PQgetCancel(conn_)); // the new session's key
  if (PQstatus(conn_) != CONNECTION_OK)
    return false;
  return session_setup_.empty() || static_cast<bool>(exec(session_setup_));
}

caf::expected<void> pg_connection::set_session_setup(std::string sql) {
  session_setup_ = std::move(sql);
  if (auto done = exec(session_setup_); !done)
    return done.error();
  return caf::unit;
}

caf::expected<pg_rows> pg_connection::exec(const std::string& sql) {
  return check(PQexec(conn_, sql.c_str()));
}

caf::expected<pg_rows>
pg_connection::exec(const std::string& sql,
                    const std::vector<std::string>& params) {
  auto values = c_strings(params);
  return check(PQexecParams(conn_, sql.c_str(), static_cast<int>(params.size()),
                            nullptr, values.data(), nullptr, nullptr, 0));
}

caf::expected<pg_rows>
pg_connection::exec_prepared(const std::string& name, const std::string& sql,
                             const std::vector<std::string>& params) {
  if (prepared_.count(name) == 0) {
    auto done = check(PQprepare(conn_, name.c_str(), sql.c_str(),
                                static_cast<int>(params.size()), nullptr));
    if (!done)
      return done.error();
    prepared_.insert(name);
  }
  auto values = c_strings(params);
  auto res = PQexecPrepared(conn_, name.c_str(),
                            static_cast<int>(params.size()), values.data(),
                            nullptr, nullptr, 0);
  // 26000: the session lost the statement (a pooler switched sessions, or
  // someone ran DEALLOCATE): prepare it again next time.
  if (auto* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
      state != nullptr && std::string_view{state} == "26000")
    prepared_.erase(name);
  return check(res);
}

caf::expected<pg_rows> pg_connection::check(pg_result* res) {
  pg_rows rows{res};
  auto status = res == nullptr ? PGRES_FATAL_ERROR : PQresultStatus(res);
  if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK)
    return rows;
  auto msg = trimmed(res != nullptr ? PQresultErrorMessage(res)
                                    : PQerrorMessage(conn_));
  auto code = PQstatus(conn_) == CONNECTION_OK ? persistence_error::statement
                                                : persistence_error::unreachable;
  if (auto* state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
      state != nullptr && std::string_view{state} == "55P03")
    code = persistence_error::lock_timeout;
  return make_error(code, msg);
}

} // namespace videostreams
