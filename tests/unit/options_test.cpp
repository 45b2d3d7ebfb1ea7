#include "app/options.hpp"

#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <utility>
#include <vector>

using namespace videostreams;

namespace {

struct fake_env {
  std::map<std::string, std::string> vars;
  const char* operator()(const char* name) const {
    auto i = vars.find(name);
    return i == vars.end() ? nullptr : i->second.c_str();
  }
};

parsed_options parse_ok(std::vector<std::string> args, fake_env env = {}) {
  auto result = parse_options(args, env);
  if (auto err = std::get_if<std::string>(&result))
    FAIL("unexpected error: " << *err);
  return std::get<parsed_options>(result);
}

std::string parse_error(std::vector<std::string> args, fake_env env = {}) {
  auto result = parse_options(args, env);
  REQUIRE(std::holds_alternative<std::string>(result));
  return std::get<std::string>(result);
}

} // namespace

TEST_CASE("defaults hold without arguments", "[unit]") {
  auto p = parse_ok({});
  CHECK(p.values.port == 8080);
  CHECK(p.values.max_streams == 3);
  CHECK(p.values.shards == 128);
  CHECK(p.values.passivate_after == std::chrono::seconds{30});
  CHECK(p.values.request_timeout == std::chrono::seconds{2});
  CHECK(p.changed.empty());
  CHECK_FALSE(p.help);
}

TEST_CASE("flags set options and are reported as changed", "[unit]") {
  auto p = parse_ok({"--port=9000", "--max-streams=5",
                     "--passivate-after=250ms", "--request-timeout=1m"});
  CHECK(p.values.port == 9000);
  CHECK(p.values.max_streams == 5);
  CHECK(p.values.passivate_after == std::chrono::milliseconds{250});
  CHECK(p.values.request_timeout == std::chrono::minutes{1});
  CHECK(p.changed
        == std::vector<std::string>{"--port=9000", "--max-streams=5",
                                    "--passivate-after=250ms",
                                    "--request-timeout=1m"});
}

TEST_CASE("a value equal to the default is not reported as changed",
          "[unit]") {
  CHECK(parse_ok({"--request-timeout=2000ms"}).changed.empty());
}

TEST_CASE("environment variables set options, flags win", "[unit]") {
  fake_env env{{{"VIDEOSTREAMS_MAX_STREAMS", "7"},
                {"VIDEOSTREAMS_PORT", "9100"},
                {"VIDEOSTREAMS_PASSIVATE_AFTER", "5"}}};
  auto p = parse_ok({"--port=9200"}, env);
  CHECK(p.values.max_streams == 7);
  CHECK(p.values.port == 9200);
  CHECK(p.values.passivate_after == std::chrono::seconds{5});
}

TEST_CASE("bad options are rejected with a message naming them", "[unit]") {
  CHECK_THAT(parse_error({"--nope=1"}), Catch::Contains("--nope"));
  CHECK_THAT(parse_error({"--port=abc"}), Catch::Contains("--port"));
  CHECK_THAT(parse_error({"--port=65536"}), Catch::Contains("--port"));
  CHECK_THAT(parse_error({"--port"}), Catch::Contains("needs a value"));
  CHECK_THAT(parse_error({"--max-streams=-1"}),
             Catch::Contains("--max-streams"));
  CHECK_THAT(parse_error({"--max-streams=1001"}),
             Catch::Contains("--max-streams"));
  CHECK_THAT(parse_error({"--shards=0"}), Catch::Contains("--shards"));
  CHECK_THAT(parse_error({"--passivate-after=soon"}),
             Catch::Contains("--passivate-after"));
  CHECK_THAT(parse_error({"--request-timeout=0ms"}),
             Catch::Contains("--request-timeout"));
  CHECK_THAT(parse_error({"positional"}), Catch::Contains("positional"));
  fake_env env{{{"VIDEOSTREAMS_SHARDS", "many"}}};
  CHECK_THAT(parse_error({}, env), Catch::Contains("VIDEOSTREAMS_SHARDS"));
}

TEST_CASE("the help text (--help) lists every option with its variable and "
          "default",
          "[unit]") {
  CHECK(parse_ok({"--help"}).help);
  auto text = help_text();
  for (auto name : {"port", "bind", "max-streams", "shards",
                    "passivate-after", "request-timeout", "http-threads",
                    "actor-threads", "keep-alive-timeout",
                    "keep-alive-max-requests", "default-ttl", "min-ttl",
                    "max-ttl", "legacy-stream-ttl", "admin-token",
                    "database-url", "durability", "flush-interval",
                    "write-backlog", "fold-min-changes", "node-id",
                    "advertise-host", "cluster-port", "lease-ttl",
                    "ops-port", "http-max-threads", "max-connections",
                    "read-timeout", "write-timeout", "shutdown-timeout",
                    "log-format",
                    "access-log"}) {
    INFO(name);
    CHECK_THAT(text, Catch::Contains(std::string{"--"} + name + "="));
  }
  CHECK_THAT(text, Catch::Contains("VIDEOSTREAMS_MAX_STREAMS"));
  CHECK_THAT(text, Catch::Contains("--max-streams=3"));
}

TEST_CASE("lease options are checked against each other", "[unit]") {
  auto p = parse_ok({"--min-ttl=1", "--default-ttl=10", "--max-ttl=20",
                     "--legacy-stream-ttl=300"});
  CHECK(p.values.min_ttl_seconds == 1);
  CHECK(p.values.default_ttl_seconds == 10);
  CHECK(p.values.max_ttl_seconds == 20);
  CHECK(p.values.legacy_stream_ttl_seconds == 300);
  CHECK_THAT(parse_error({"--min-ttl=30", "--max-ttl=20"}),
             Catch::Contains("--min-ttl"));
  CHECK_THAT(parse_error({"--default-ttl=4000"}),
             Catch::Contains("--default-ttl"));
}

TEST_CASE("the legacy stream TTL (--legacy-stream-ttl): 6 h by default, "
          "a duration in whole seconds, 0 = never expires",
          "[unit]") {
  CHECK(parse_ok({}).values.legacy_stream_ttl_seconds == 21600);
  CHECK(parse_ok({"--legacy-stream-ttl=6h"}).changed.empty());
  CHECK(parse_ok({"--legacy-stream-ttl=21600"}).changed.empty());
  for (auto& [text, seconds] : std::vector<std::pair<std::string, int>>{
         {"0", 0},
         {"0s", 0},
         {"0h", 0},
         {"3", 3},
         {"3s", 3},
         {"2000ms", 2},
         {"90m", 5400},
         {"1h", 3600},
         {"8760h", 31536000}}) {
    INFO(text);
    auto p = parse_ok({"--legacy-stream-ttl=" + text});
    CHECK(p.values.legacy_stream_ttl_seconds
          == static_cast<std::uint32_t>(seconds));
  }
  CHECK(parse_ok({"--legacy-stream-ttl=0"}).changed
        == std::vector<std::string>{"--legacy-stream-ttl=0"});
  CHECK(parse_ok({"--legacy-stream-ttl=90m"}).changed
        == std::vector<std::string>{"--legacy-stream-ttl=90m"});
  CHECK(parse_ok({"--legacy-stream-ttl=61"}).changed
        == std::vector<std::string>{"--legacy-stream-ttl=61s"});
  fake_env env{{{"VIDEOSTREAMS_LEGACY_STREAM_TTL", "2h"}}};
  CHECK(parse_ok({}, env).values.legacy_stream_ttl_seconds == 7200);
  for (auto bad : {"-1", "-1h", "1500ms", "1.5h", "h", "6 h", "6d", "8761h",
                   "31536001", "soon", ""}) {
    INFO(bad);
    CHECK_THAT(parse_error({std::string{"--legacy-stream-ttl="} + bad}),
               Catch::Contains("--legacy-stream-ttl")
                 && Catch::Contains("whole seconds"));
  }
  CHECK_THAT(help_text(), Catch::Contains("--legacy-stream-ttl=6h"));
}

TEST_CASE("the admin token is never echoed", "[unit]") {
  fake_env env{{{"VIDEOSTREAMS_ADMIN_TOKEN", "hunter2"}}};
  auto p = parse_ok({}, env);
  CHECK(p.values.admin_token == "hunter2");
  CHECK(p.changed == std::vector<std::string>{"--admin-token=***"});
}

TEST_CASE("database options: DATABASE_URL, durability, secrets masked",
          "[unit]") {
  fake_env env{{{"DATABASE_URL", "postgresql://u:pw@db/x"}}};
  auto p = parse_ok({"--durability=async", "--flush-interval=5ms"}, env);
  CHECK(p.values.database_url == "postgresql://u:pw@db/x");
  CHECK_FALSE(p.values.sync_durability);
  CHECK(p.values.flush_interval == std::chrono::milliseconds{5});
  for (auto& x : p.changed)
    CHECK_THAT(x, !Catch::Contains("pw"));
  CHECK(parse_ok({}).values.sync_durability);
  CHECK(parse_ok({}).values.flush_interval == std::chrono::milliseconds{1});
  CHECK(parse_ok({"--flush-interval=0"}).values.flush_interval
        == std::chrono::milliseconds{0});
  CHECK_THAT(parse_error({"--durability=maybe"}),
             Catch::Contains("--durability"));
  fake_env both{{{"DATABASE_URL", "a"}, {"VIDEOSTREAMS_DATABASE_URL", "b"}}};
  CHECK(parse_ok({}, both).values.database_url == "b");
}

TEST_CASE("cluster options: node id, advertised host, cluster port, lease "
          "TTL",
          "[unit]") {
  auto d = parse_ok({});
  CHECK(d.values.node_id.empty()); // the host name
  CHECK(d.values.advertise_host.empty());
  CHECK(d.values.cluster_port == 4370);
  CHECK(d.values.lease_ttl == std::chrono::seconds{5});
  fake_env env{{{"VIDEOSTREAMS_NODE_ID", "videostreams-2"},
                {"VIDEOSTREAMS_ADVERTISE_HOST", "10.1.2.3"},
                {"VIDEOSTREAMS_CLUSTER_PORT", "0"}}};
  auto p = parse_ok({"--lease-ttl=2500ms"}, env);
  CHECK(p.values.node_id == "videostreams-2");
  CHECK(p.values.advertise_host == "10.1.2.3");
  CHECK(p.values.cluster_port == 0);
  CHECK(p.values.lease_ttl == std::chrono::milliseconds{2500});
  CHECK(parse_ok({"--lease-ttl=7"}).values.lease_ttl
        == std::chrono::seconds{7}); // a bare number is seconds
  CHECK(parse_ok({"--lease-ttl=2s"}).values.lease_ttl
        == std::chrono::seconds{2});
  CHECK(parse_ok({"--lease-ttl=1m"}).values.lease_ttl
        == std::chrono::seconds{60});
  CHECK_THAT(parse_error({"--lease-ttl=1999ms"}),
             Catch::Contains("--lease-ttl"));
  CHECK_THAT(parse_error({"--lease-ttl=61s"}), Catch::Contains("--lease-ttl"));
  CHECK_THAT(parse_error({"--cluster-port=65536"}),
             Catch::Contains("--cluster-port"));
  CHECK_THAT(parse_error({"--node-id=a b"}), Catch::Contains("--node-id"));
  CHECK_THAT(parse_error({"--node-id=" + std::string(64, 'x')}),
             Catch::Contains("--node-id"));
  CHECK(parse_ok({"--node-id=" + std::string(63, 'x')}).values.node_id.size()
        == 63);
  CHECK_THAT(parse_error({"--advertise-host=a/b"}),
             Catch::Contains("--advertise-host"));
  CHECK(valid_node_id("n-1.a_b"));
  CHECK_FALSE(valid_node_id(""));
  CHECK_FALSE(valid_node_id("n\"1"));
}

TEST_CASE("log options: --log-format=text|json and the --access-log switch",
          "[unit]") {
  auto d = parse_ok({});
  CHECK_FALSE(d.values.json_logs);
  CHECK_FALSE(d.values.access_log);
  CHECK(parse_ok({"--log-format=json"}).values.json_logs);
  CHECK_FALSE(parse_ok({"--log-format=text"}).values.json_logs);
  CHECK_THAT(parse_error({"--log-format=xml"}),
             Catch::Contains("--log-format"));
  CHECK_THAT(parse_error({"--log-format"}), Catch::Contains("--log-format"));
  // A switch: alone it is on; it takes on/off and their synonyms.
  CHECK(parse_ok({"--access-log"}).values.access_log);
  for (auto on : {"on", "true", "yes", "1"})
    CHECK(parse_ok({std::string{"--access-log="} + on}).values.access_log);
  for (auto off : {"off", "false", "no", "0"})
    CHECK_FALSE(
      parse_ok({std::string{"--access-log="} + off}).values.access_log);
  CHECK_THAT(parse_error({"--access-log=maybe"}),
             Catch::Contains("--access-log"));
  fake_env env{{{"VIDEOSTREAMS_LOG_FORMAT", "json"},
                {"VIDEOSTREAMS_ACCESS_LOG", "on"}}};
  auto e = parse_ok({}, env);
  CHECK(e.values.json_logs);
  CHECK(e.values.access_log);
  CHECK_FALSE(parse_ok({"--access-log=off", "--log-format=text"}, env)
                .values.access_log);
  auto changed = parse_ok({"--access-log"}).changed;
  CHECK(changed == std::vector<std::string>{"--access-log=on"});
  CHECK_THAT(parse_error({"--access-log=on", "--log-format=csv"}),
             Catch::Contains("text or json"));
}

TEST_CASE("the database URL's origin is known, and --database-url= (empty) "
          "runs in memory",
          "[unit]") {
  CHECK(parse_ok({}).values.database_url_origin.empty());
  fake_env env{{{"DATABASE_URL", "postgresql://other-app/db"}}};
  auto from_env = parse_ok({}, env);
  CHECK(from_env.values.database_url == "postgresql://other-app/db");
  CHECK(from_env.values.database_url_origin == "DATABASE_URL");
  fake_env own{{{"DATABASE_URL", "a"}, {"VIDEOSTREAMS_DATABASE_URL", "b"}}};
  CHECK(parse_ok({}, own).values.database_url_origin
        == "VIDEOSTREAMS_DATABASE_URL");
  auto flag = parse_ok({"--database-url=postgresql://x/y"}, env);
  CHECK(flag.values.database_url_origin == "--database-url");
  // An empty --database-url overrides DATABASE_URL: in memory.
  auto none = parse_ok({"--database-url="}, env);
  CHECK(none.values.database_url.empty());
  CHECK(none.values.database_url_origin.empty());
  // So does an empty VIDEOSTREAMS_DATABASE_URL (the `db` commands read the
  // environment through the same function: they then have no database).
  fake_env emptied{{{"DATABASE_URL", "a"}, {"VIDEOSTREAMS_DATABASE_URL", ""}}};
  CHECK(parse_ok({}, emptied).values.database_url.empty());
  auto named = database_url_from_environment(emptied);
  CHECK(named.url.empty());
  CHECK(named.origin == "VIDEOSTREAMS_DATABASE_URL");
  CHECK(database_url_from_environment(env).origin == "DATABASE_URL");
  CHECK(database_url_from_environment(fake_env{}).origin.empty());
}

TEST_CASE("the help text names the db commands and how to run in memory",
          "[unit]") {
  auto text = help_text();
  for (auto verb : {"migrate", "rollback", "seed", "status", "reshard"}) {
    INFO(verb);
    CHECK_THAT(text, Catch::Contains(std::string{"  "} + verb + " "));
  }
  CHECK_THAT(text, Catch::Contains("videostreams db migrate|rollback|seed|"
                                   "status"));
  CHECK_THAT(text, Catch::Contains("--database-url= (empty) runs in memory"));
}

TEST_CASE("the node id in force is --node-id, else the host name", "[unit]") {
  options opts;
  opts.node_id = "n7";
  CHECK(effective_node_id(opts) == "n7");
  opts.node_id.clear();
  CHECK_FALSE(effective_node_id(opts).empty());
}

TEST_CASE("every bounded option takes its documented bounds and refuses one "
          "step past them",
          "[unit]") {
  struct bounds {
    const char* name;
    const char* lowest;      // accepted
    const char* below;       // refused, or nullptr when nothing is below
    const char* highest;     // accepted
    const char* above;       // refused
  };
  const std::vector<bounds> table{
    {"port", "0", "-1", "65535", "65536"},
    {"max-streams", "0", "-1", "1000", "1001"},
    {"shards", "1", "0", "65536", "65537"},
    {"passivate-after", "10ms", "9ms", "1440m", "86400001ms"},
    {"request-timeout", "1ms", "0ms", "1m", "60001ms"},
    {"ops-port", "-1", "-2", "65535", "65536"},
    {"http-threads", "1", "0", "4096", "4097"},
    {"http-max-threads", "1", "0", "16384", "16385"},
    {"max-connections", "1", "0", "1000000", "1000001"},
    {"actor-threads", "1", "0", "256", "257"},
    {"keep-alive-timeout", "1", "0", "3600", "3601"},
    {"keep-alive-max-requests", "1", "0", "1000000000", "1000000001"},
    {"read-timeout", "1s", "999ms", "5m", "300001ms"},
    {"write-timeout", "100ms", "99ms", "5m", "300001ms"},
    {"shutdown-timeout", "0", nullptr, "5m", "300001ms"},
    {"flush-interval", "0", nullptr, "10s", "10001ms"},
    {"write-backlog", "1000", "999", "100000000", "100000001"},
    {"fold-min-changes", "1", "0", "1000000000", "1000000001"},
    {"cluster-port", "0", "-1", "65535", "65536"},
    {"lease-ttl", "2s", "1999ms", "1m", "60001ms"},
  };
  for (auto& b : table) {
    auto flag = std::string{"--"} + b.name + "=";
    INFO(flag);
    for (auto ok : {b.lowest, b.highest}) {
      INFO(ok);
      parse_ok({flag + ok});
    }
    for (auto bad : {b.below, b.above}) {
      if (bad == nullptr)
        continue;
      INFO(bad);
      CHECK_THAT(parse_error({flag + bad}),
                 Catch::Contains(std::string{"--"} + b.name + "="));
    }
  }
  // The messages give the range, durations in the unit they are written in.
  CHECK_THAT(parse_error({"--read-timeout=999ms"}),
             Catch::Contains("from 1s to 5m"));
  CHECK_THAT(parse_error({"--flush-interval=11s"}),
             Catch::Contains("from 0s to 10s"));
  CHECK_THAT(parse_error({"--write-backlog=999"}),
             Catch::Contains("from 1000 to 100000000"));
  // A duration of 0 reads "0s", never "0m".
  CHECK(parse_ok({"--shutdown-timeout=0"}).changed
        == std::vector<std::string>{"--shutdown-timeout=0s"});
}

TEST_CASE("the lease TTLs may meet: --min-ttl, --default-ttl and --max-ttl "
          "may be equal",
          "[unit]") {
  // The default (60) equal to the smallest, then to the largest allowed.
  CHECK(parse_ok({"--min-ttl=60"}).values.min_ttl_seconds == 60);
  CHECK(parse_ok({"--max-ttl=60"}).values.max_ttl_seconds == 60);
  auto p = parse_ok({"--min-ttl=30", "--max-ttl=30", "--default-ttl=30"});
  CHECK(p.values.min_ttl_seconds == 30);
  CHECK(p.values.default_ttl_seconds == 30);
  CHECK(p.values.max_ttl_seconds == 30);
  // One past either end is refused.
  CHECK_THAT(parse_error({"--min-ttl=61"}), Catch::Contains("--default-ttl"));
  CHECK_THAT(parse_error({"--max-ttl=59"}), Catch::Contains("--default-ttl"));
  CHECK_THAT(parse_error({"--min-ttl=31", "--max-ttl=30",
                          "--default-ttl=30"}),
             Catch::Contains("--min-ttl=31 is above --max-ttl=30"));
}

TEST_CASE("the short flag -h asks for the help text as --help does",
          "[unit]") {
  CHECK(parse_ok({"-h"}).help);
  CHECK(parse_ok({"--port=0", "-h"}).help);
  CHECK_THAT(parse_error({"-x"}), Catch::Contains("-x"));
}

TEST_CASE("the admin token takes every character the help text names, and "
          "no other",
          "[unit]") {
  const std::string all = "ABCXYZabcxyz0189._~+/=-";
  CHECK(valid_admin_token(all));
  for (char c : all) {
    INFO(c);
    CHECK(valid_admin_token(std::string{"t"} + c));
  }
  fake_env env{{{"VIDEOSTREAMS_ADMIN_TOKEN", "a~b"}}};
  CHECK(parse_ok({}, env).values.admin_token == "a~b");
  for (auto bad : {" ", "%", ":", "\"", ",", ";", "\\", "@", "!", "\x7f"}) {
    INFO(bad);
    CHECK_FALSE(valid_admin_token(std::string{"t"} + bad));
    CHECK_THAT(parse_error({std::string{"--admin-token=t"} + bad}),
               Catch::Contains("--admin-token"));
  }
}
