#include "cluster_harness.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <unistd.h>

#include "actors/shard_map.hpp"

namespace videostreams::cluster_testing {

using namespace blackbox;

test_node::test_node(int n, const std::string& dsn,
                     std::vector<std::string> extra)
  : test_node(n, "n" + std::to_string(n), dsn, std::move(extra)) {
  // Nothing else to do.
}

test_node::test_node(int n, std::string id, const std::string& dsn,
                     std::vector<std::string> extra)
  : test_node("127.0.0." + std::to_string(n), std::move(id), dsn,
              std::move(extra)) {
  // Nothing else to do.
}

test_node::test_node(const std::string& host, std::string id,
                     const std::string& dsn, std::vector<std::string> extra)
  : id_(std::move(id)) {
  for (auto& x : extra)
    if (x.rfind("--admin-token=", 0) == 0)
      admin_token_ = x.substr(14);
  extra.push_back("--database-url=" + dsn);
  extra.push_back("--node-id=" + id_);
  process_ = std::make_unique<service_process>(
    std::move(extra), environment{}, true, host);
}

test_node::~test_node() {
  auto dir = std::getenv("VIDEOSTREAMS_TEST_NODE_LOGS");
  if (dir == nullptr || *dir == '\0')
    return; // the process stops itself
  process_->stop();
  std::ofstream{std::string{dir} + "/" + std::to_string(::getpid()) + "-" + id_
                + "-" + std::to_string(process_->port()) + ".log"}
    << process_->stderr_text();
}

three_nodes::three_nodes(const std::vector<std::string>& args)
  : n2(2, d.dsn, args), n3(3, d.dsn, args), n4(4, d.dsn, args) {
  REQUIRE(wait_converged({&n2, &n3, &n4}));
}

std::unique_ptr<httplib::Client> test_node::client(bool keep_alive) const {
  return make_client(host(), port(), keep_alive);
}

std::optional<json::object> test_node::view() const {
  auto cli = client(false);
  httplib::Headers auth;
  if (!admin_token_.empty())
    auth.emplace("Authorization", "Bearer " + admin_token_);
  auto r = send(*cli, "GET", "/api/cluster", std::nullopt, auth);
  if (r.status != 200)
    return std::nullopt;
  return json::parse(r.body).as_object();
}

std::optional<double> test_node::metric(std::string_view series) const {
  auto cli = client(false);
  return metric_value(scrape(*cli), series);
}

std::vector<std::string> owners(const json::object& view) {
  std::vector<std::string> result;
  for (auto& s : view.at("shards").as_array()) {
    auto& owner = s.at("owner");
    result.push_back(owner.is_null() ? std::string{}
                                     : std::string{owner.as_string()});
  }
  return result;
}

bool converged(const std::vector<const test_node*>& nodes) {
  std::set<std::string> ids;
  for (auto* n : nodes)
    ids.insert(n->id());
  std::optional<std::vector<std::string>> agreed;
  for (auto* n : nodes) {
    auto cli = n->client(false);
    if (get(*cli, "/readyz").status != 200)
      return false;
    auto v = n->view();
    if (!v)
      return false;
    std::set<std::string> members;
    for (auto& m : v->at("members").as_array()) {
      if (m.at("status") != "up")
        return false;
      members.insert(std::string{m.at("nodeId").as_string()});
    }
    if (members != ids)
      return false;
    for (auto& s : v->at("shards").as_array())
      if (s.at("state") != "serving")
        return false;
    auto o = owners(*v);
    for (auto& owner : o)
      if (ids.count(owner) == 0)
        return false;
    if (agreed && *agreed != o)
      return false;
    agreed = std::move(o);
  }
  return true;
}

bool wait_converged(const std::vector<const test_node*>& nodes,
                    std::chrono::seconds limit) {
  return eventually([&] { return converged(nodes); }, limit);
}

std::vector<std::uint64_t> users_owned_by(const json::object& view,
                                          const std::string& owner,
                                          std::size_t count,
                                          std::uint64_t from) {
  auto o = owners(view);
  // Without a shard of its own there is no such user: say so, rather than
  // search for good.
  if (std::find(o.begin(), o.end(), owner) == o.end())
    throw std::runtime_error("users_owned_by: " + owner
                             + " owns no shard in this view");
  auto shards = static_cast<std::uint32_t>(o.size());
  std::vector<std::uint64_t> result;
  for (auto user = from; result.size() < count; ++user)
    if (o[shard_of(user, shards)] == owner)
      result.push_back(user);
  return result;
}

std::optional<std::multiset<std::string>>
sessions_of(httplib::Client& cli, std::uint64_t user) {
  auto r = get(cli, "/api/v2/users/" + std::to_string(user) + "/streams");
  if (r.status != 200)
    return std::nullopt;
  std::multiset<std::string> result;
  auto listed = json::parse(r.body);
  for (auto& s : listed.at("sessions").as_array()) {
    auto& id = s.at("sessionId");
    result.insert(id.is_null() ? std::string{} : std::string{id.as_string()});
  }
  return result;
}

session_players::session_players(std::vector<target> targets,
                                 std::uint64_t first_user,
                                 std::size_t threads,
                                 std::size_t users_per_thread)
  : targets_(std::move(targets)),
    first_user_(first_user),
    threads_(threads),
    users_per_thread_(users_per_thread) {
  // Nothing else to do.
}

session_players::~session_players() {
  stop();
}

void session_players::start() {
  running_ = true;
  for (std::size_t i = 0; i < threads_; ++i)
    workers_.emplace_back([this, i] { play(i); });
}

void session_players::stop() {
  running_ = false;
  for (auto& w : workers_)
    w.join();
  workers_.clear();
}

std::vector<std::string> session_players::failures() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return failures_;
}

std::map<std::uint64_t, std::multiset<std::string>>
session_players::open() const {
  std::lock_guard<std::mutex> guard{mtx_};
  return open_;
}

void session_players::play(std::size_t index) {
  std::vector<std::unique_ptr<httplib::Client>> clients;
  for (auto& t : targets_)
    clients.push_back(make_client(t.host, t.port, true));
  auto first = first_user_ + index * users_per_thread_;
  std::map<std::uint64_t, std::vector<std::string>> mine;
  std::size_t next_target = index;
  std::uint64_t counter = 0;
  auto fail = [this](const std::string& what, const reply& r) {
    if (failure_count_++ >= recorded_failures)
      return;
    std::lock_guard<std::mutex> guard{mtx_};
    failures_.push_back(what + " -> " + std::to_string(r.status) + " "
                        + r.body + r.error);
  };
  while (running_) {
    auto user = first + (counter % users_per_thread_);
    auto& open = mine[user];
    auto& cli = *clients[next_target++ % clients.size()];
    auto base = "/api/v2/users/" + std::to_string(user) + "/streams";
    ++counter;
    if (open.size() < 2) {
      auto id = "p" + std::to_string(index) + "-" + std::to_string(counter);
      // The longest lease there is: the player heartbeats only its older
      // session, and on a busy machine a run outlasts the default TTL, so
      // that a stream still open at the end would otherwise expire while
      // the test reads the database.
      auto r = send(cli, "POST", base,
                    R"({"sessionId":")" + id + R"(","ttlSeconds":3600})");
      if (r.status == 201) {
        open.push_back(id);
        std::lock_guard<std::mutex> guard{mtx_};
        open_[user].insert(id);
      } else {
        fail("POST " + base + " " + id, r);
      }
    } else if (counter % 3 == 0) {
      auto r = send(cli, "PUT", base + "/" + open.front());
      if (r.status != 200)
        fail("PUT " + base + "/" + open.front(), r);
    } else {
      auto id = open.front();
      auto r = send(cli, "DELETE", base + "/" + id);
      if (r.status == 200) {
        open.erase(open.begin());
        std::lock_guard<std::mutex> guard{mtx_};
        open_[user].erase(open_[user].find(id));
      } else {
        fail("DELETE " + base + "/" + id, r);
      }
    }
    ++requests_;
  }
}

std::vector<std::string>
missing_streams(httplib::Client& cli,
                const std::map<std::uint64_t, std::multiset<std::string>>&
                  expected) {
  std::vector<std::string> result;
  for (auto& [user, sessions] : expected) {
    auto listed = sessions_of(cli, user);
    if (!listed) {
      result.push_back("user " + std::to_string(user) + ": no list");
      continue;
    }
    if (*listed != sessions)
      result.push_back("user " + std::to_string(user) + ": "
                       + std::to_string(listed->size()) + " listed, "
                       + std::to_string(sessions.size()) + " expected");
  }
  return result;
}

std::string why_unavailable(const std::vector<const test_node*>& nodes) {
  std::string out;
  for (auto* n : nodes) {
    auto cli = n->client(false);
    auto text = scrape(*cli);
    out += n->id() + ":";
    std::istringstream lines{text};
    std::string line;
    while (std::getline(lines, line)) {
      if (line.empty() || line[0] == '#')
        continue;
      for (auto name : {"lease_refusals", "held_timeouts", "forward_failures",
                        "forward_not_owner", "grant_failures", "shards_lost",
                        "persistence_fenced", "commit_timeouts"})
        if (line.find(name) != std::string::npos)
          out += " " + line.substr(line.find("videostreams_") + 13) + ";";
    }
    out += "\n";
  }
  return out;
}

int stored_streams(videostreams::testing::scratch_database& d,
                   std::uint64_t user) {
  return d.count("SELECT count(*) FROM stream_sessions WHERE user_id = "
                 + std::to_string(user));
}

} // namespace videostreams::cluster_testing
