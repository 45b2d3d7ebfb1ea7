// The service's log (logging/event_log): both line formats, escaping of
// whatever bytes an event carries, and one whole line per event under
// concurrency.

#include "logging/event_log.hpp"

#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include <algorithm>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace videostreams;
namespace json = boost::json;

namespace {

/// 2026-01-02T03:04:05.678Z
constexpr std::int64_t some_time_ms = 1767323045678;

json::object parse_line(const std::string& line) {
  INFO("line: " << line);
  REQUIRE(!line.empty());
  REQUIRE(line.back() == '\n');
  REQUIRE(std::count(line.begin(), line.end(), '\n') == 1);
  json::error_code ec;
  auto v = json::parse(line, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(v.is_object());
  return v.as_object();
}

std::string json_line(const log_event& e, std::string_view node = "n1") {
  return format_log_line(log_format::json, node, some_time_ms, e);
}

std::string text_line(const log_event& e, std::string_view node = "n1") {
  return format_log_line(log_format::text, node, some_time_ms, e);
}

} // namespace

TEST_CASE("a JSON line carries time, level, node, event, message and fields",
          "[unit]") {
  log_event e{log_level::warn, "shard_taken", "took 2 shards (0, 5)\n",
              {{"shards", std::vector<std::uint32_t>{0, 5}},
               {"epochs", std::vector<std::int64_t>{12, -1}},
               {"peer", "n3"},
               {"count", 42},
               {"big", std::uint64_t{1} << 40},
               {"ratio", 0.25},
               {"whole", 2.0},
               {"ok", true},
               {"none", std::vector<std::int64_t>{}}}};
  auto o = parse_line(json_line(e));
  CHECK(o.at("ts") == "2026-01-02T03:04:05.678Z");
  CHECK(o.at("level") == "warn");
  CHECK(o.at("node") == "n1");
  CHECK(o.at("event") == "shard_taken");
  CHECK(o.at("msg") == "took 2 shards (0, 5)"); // trailing newline trimmed
  CHECK(o.at("shards") == json::array{0, 5});
  CHECK(o.at("epochs") == json::array{12, -1});
  CHECK(o.at("peer") == "n3");
  CHECK(o.at("count") == 42);
  CHECK(o.at("big") == std::int64_t{1} << 40);
  CHECK(o.at("ratio").as_double() == 0.25);
  CHECK(o.at("whole") == 2);
  CHECK(o.at("ok") == true);
  CHECK(o.at("none") == json::array{});
  // The fixed keys come first, in this order, so lines read alike.
  auto line = json_line(e);
  CHECK(line.rfind(R"({"ts":"2026-01-02T03:04:05.678Z","level":"warn",)"
                   R"("node":"n1","event":"shard_taken","msg":)",
                   0)
        == 0);
  CHECK(parse_line(json_line({log_level::error, "x", "m", {}})).at("level")
        == "error");
  CHECK(parse_line(json_line({log_level::info, "x", "m", {}})).at("level")
        == "info");
}

TEST_CASE("JSON strings are escaped: quotes, backslashes, control "
          "characters, and bytes that are not UTF-8",
          "[unit]") {
  struct sample {
    std::string raw;
    std::string decoded; // what a JSON parser reads back
  };
  const std::vector<sample> samples{
    {R"(say "hi")", R"(say "hi")"},
    {R"(C:\path\)", R"(C:\path\)"},
    {"a\nb\rc\td\be\ff", "a\nb\rc\td\be\ff"},
    {std::string{"nul\0x", 5}, std::string{"nul\0x", 5}},
    {"\x01\x1f\x7f", "\x01\x1f\x7f"},
    {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac "
                                                  "\xf0\x9f\x98\x80"},
    // Not UTF-8: a stray continuation byte, a truncated sequence, an
    // overlong '/', a surrogate, bytes never used, a code point above
    // U+10FFFF. Each bad byte becomes U+FFFD.
    {"a\x80z", "a\xef\xbf\xbdz"},
    {"\xe2\x82", "\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xff\xfe", "\xef\xbf\xbd\xef\xbf\xbd"},
    {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"", ""},
  };
  for (auto& x : samples) {
    INFO("raw: " << x.raw);
    // In the message (not trimmed when nothing trails), a value, the node
    // id and the event name alike.
    log_event e{log_level::info, x.raw, x.raw + "|", {{"path", x.raw}}};
    auto o = parse_line(json_line(e, x.raw));
    CHECK(o.at("msg").as_string() == x.decoded + "|");
    CHECK(o.at("path").as_string() == x.decoded);
    CHECK(o.at("node").as_string() == x.decoded);
    CHECK(o.at("event").as_string() == x.decoded);
    CHECK(json::parse(json_quote(x.raw)).as_string() == x.decoded);
  }
  CHECK(json_quote("\x01") == R"("\u0001")");
  CHECK(json_quote("\x7f") == R"("\u007F")");
}

TEST_CASE("any bytes make one valid JSON line", "[unit]") {
  std::mt19937 gen{20240501};
  std::uniform_int_distribution<int> byte{0, 255};
  std::uniform_int_distribution<int> length{0, 40};
  for (int i = 0; i < 3000; ++i) {
    std::string raw;
    for (int n = length(gen); n > 0; --n)
      raw += static_cast<char>(byte(gen));
    log_event e{log_level::info, "request", raw, {{"path", raw}}};
    auto o = parse_line(json_line(e));
    // Valid UTF-8 that ends in no white space comes back as it was.
    auto p = o.at("path").as_string();
    bool utf8 = true;
    try {
      json::serialize(json::value{raw}); // does not check UTF-8
      json::error_code ec;
      json::parse(json::serialize(json::value{raw}), ec);
      utf8 = !ec;
    } catch (...) {
      utf8 = false;
    }
    if (utf8)
      CHECK(std::string_view{p} == raw);
    auto text = text_line(e);
    CHECK(std::count(text.begin(), text.end(), '\n') == 1);
    CHECK(text.back() == '\n');
  }
}

TEST_CASE("a text line: time, level, the message, then event, node and "
          "fields as key=value",
          "[unit]") {
  log_event e{log_level::info, "start",
              "listening on 127.0.0.1:8080, operations on off, mode "
              "in-memory (no database), options: defaults",
              {{"port", 8080}, {"mode", "in-memory"}, {"ops_port", -1}}};
  CHECK(text_line(e)
        == "2026-01-02T03:04:05.678Z INFO videostreams: listening on "
           "127.0.0.1:8080, operations on off, mode in-memory (no database), "
           "options: defaults | event=start node=n1 port=8080 "
           "mode=in-memory ops_port=-1\n");
  log_event w{log_level::warn, "database_down",
              "the database is unreachable: server closed\nthe connection\n",
              {{"reason", "a \"quoted\" = \\ value"},
               {"empty", ""},
               {"shards", std::vector<int>{3, 4}},
               {"fine", "n2"},
               {"ok", false},
               {"seconds", 1.5}}};
  CHECK(text_line(w)
        == "2026-01-02T03:04:05.678Z WARN videostreams: the database is "
           "unreachable: server closed\\nthe connection | "
           "event=database_down node=n1 "
           R"(reason="a \"quoted\" = \\ value" empty="" shards=3,4 )"
           "fine=n2 ok=false seconds=1.5\n");
  log_event x{log_level::error, "start_failed", "bad \x01 byte \xff",
              {{"path", "/a b"}}};
  CHECK(text_line(x)
        == "2026-01-02T03:04:05.678Z ERROR videostreams: bad \\x01 byte "
           "\\xFF | event=start_failed node=n1 path=\"/a b\"\n");
}

TEST_CASE("the names of the log formats (--log-format) and levels",
          "[unit]") {
  CHECK(parse_log_format("text") == log_format::text);
  CHECK(parse_log_format("json") == log_format::json);
  CHECK_FALSE(parse_log_format("JSON"));
  CHECK_FALSE(parse_log_format(""));
  CHECK(level_name(log_level::warn) == "warn");
}

TEST_CASE("an event log writes each event as one whole line, whatever the "
          "threads",
          "[unit]") {
  // The sink appends a byte at a time to a string it does not lock: lines
  // of different threads would mix (or the string break) if the log did
  // not hold its lock around the sink.
  std::string out;
  event_log log{log_format::json, "n9", [&out](std::string_view line) {
                  for (char c : line) {
                    out += c;
                    if (c == ',')
                      std::this_thread::yield();
                  }
                }};
  CHECK(log.format() == log_format::json);
  CHECK(log.node_id() == "n9");
  constexpr int threads = 8;
  constexpr int lines = 300;
  std::vector<std::thread> writers;
  for (int t = 0; t < threads; ++t)
    writers.emplace_back([&log, t] {
      for (int i = 0; i < lines; ++i)
        log.info("request", "line " + std::to_string(i),
                 {{"thread", t}, {"i", i}, {"path", "/x,y,z"}});
    });
  for (auto& w : writers)
    w.join();
  std::vector<int> next(threads, 0);
  std::size_t count = 0;
  for (std::size_t at = 0; at < out.size();) {
    auto eol = out.find('\n', at);
    REQUIRE(eol != std::string::npos);
    auto o = parse_line(out.substr(at, eol + 1 - at));
    at = eol + 1;
    ++count;
    CHECK(o.at("node") == "n9");
    auto t = o.at("thread").as_int64();
    REQUIRE(t >= 0);
    REQUIRE(t < threads);
    // Each thread's lines in its own order.
    CHECK(o.at("i").as_int64() == next[t]++);
  }
  CHECK(count == threads * lines);
}

TEST_CASE("host_port writes an IPv6 address in brackets, as a URL does, and "
          "anything else as it is",
          "[unit]") {
  CHECK(host_port("::1", 8080) == "[::1]:8080");
  CHECK(host_port("fd00::7:1", 4370) == "[fd00::7:1]:4370");
  CHECK(host_port("127.0.0.3", 0) == "127.0.0.3:0");
  CHECK(host_port("videostreams-0.videostreams", 9090)
        == "videostreams-0.videostreams:9090");
}
