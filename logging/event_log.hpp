#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

namespace videostreams {

/// How bad an event is.
enum class log_level : unsigned char { info, warn, error };

/// "info", "warn" or "error".
std::string_view level_name(log_level x) noexcept;

/// How log lines are written (`--log-format`).
enum class log_format : unsigned char {
  /// For people: the time, the level, "videostreams: " and the message,
  /// then ` | ` and the event and its fields as logfmt (`key=value`).
  text,
  /// One JSON object per line: `ts`, `level`, `node`, `event`, `msg`, then
  /// the event's fields.
  json,
};

/// Parses "text" or "json".
std::optional<log_format> parse_log_format(std::string_view x) noexcept;

/// One field of an event: a name (snake_case, never one of `ts`, `level`,
/// `node`, `event`, `msg`) and a value.
struct log_field {
  /// A list of integers (shards, epochs) is a JSON array, and in the text
  /// format the numbers joined by commas.
  using value_type = std::variant<std::string, std::int64_t, double, bool,
                                  std::vector<std::int64_t>>;

  log_field(std::string name, std::string value)
    : name(std::move(name)), value(std::move(value)) {
    // Nothing else to do.
  }
  log_field(std::string name, std::string_view value)
    : name(std::move(name)), value(std::string{value}) {
    // Nothing else to do.
  }
  log_field(std::string name, const char* value)
    : name(std::move(name)), value(std::string{value}) {
    // Nothing else to do.
  }
  log_field(std::string name, bool value)
    : name(std::move(name)), value(value) {
    // Nothing else to do.
  }
  log_field(std::string name, double value)
    : name(std::move(name)), value(value) {
    // Nothing else to do.
  }
  template <class Integer,
            class = std::enable_if_t<std::is_integral_v<Integer>
                                     && !std::is_same_v<Integer, bool>>>
  log_field(std::string name, Integer value)
    : name(std::move(name)), value(static_cast<std::int64_t>(value)) {
    // Nothing else to do.
  }
  template <class Integer>
  log_field(std::string name, const std::vector<Integer>& values)
    : name(std::move(name)),
      value(std::vector<std::int64_t>(values.begin(), values.end())) {
    // Nothing else to do.
  }

  std::string name;
  value_type value;
};

/// One event, as it becomes one line.
struct log_event {
  log_level level = log_level::info;
  /// What happened, snake_case: "start", "shard_taken", "request", ...
  std::string_view name;
  /// The same in words, for people.
  std::string message;
  std::vector<log_field> fields;
};

/// Renders `event` as one line (ending in '\n') in `format`, for node
/// `node_id` at `wall_ms` (milliseconds since the Unix epoch, shown as RFC
/// 3339 UTC). Pure. Whatever bytes the message or the values hold, the line
/// is one line: in JSON every string is escaped (control characters as
/// `\uXXXX`, bytes that are not UTF-8 as U+FFFD), so the line is valid JSON;
/// in text control characters are escaped (`\n`, `\xHH`) and values that
/// need it are quoted.
std::string format_log_line(log_format format, std::string_view node_id,
                            std::int64_t wall_ms, const log_event& event);

/// "HOST:PORT" as a message shows an address, with an IPv6 address in
/// brackets ("[::1]:8080"), as a URL writes it.
std::string host_port(std::string_view host, int port);

/// `x` as a JSON string, quotes included (see `format_log_line`).
std::string json_quote(std::string_view x);

/// The service's one log: writes each event as one line, with one `write`
/// to its sink, under a lock (lines of different threads never mix).
/// Thread-safe. Every component that reports an event gets a pointer to
/// the node's log; none writes to stderr itself.
class event_log {
public:
  /// Where lines go: one call per line.
  using sink = std::function<void(std::string_view line)>;

  /// A log of node `node_id`, writing to `out` (default: stderr, one
  /// `write(2)` per line).
  event_log(log_format format, std::string node_id, sink out = {});

  event_log(const event_log&) = delete;
  event_log& operator=(const event_log&) = delete;

  log_format format() const noexcept {
    return format_;
  }

  const std::string& node_id() const noexcept {
    return node_id_;
  }

  /// Writes one event now. Never throws (a line that cannot be written is
  /// lost).
  void write(log_level level, std::string_view event, std::string message,
             std::vector<log_field> fields = {}) const noexcept;

  void info(std::string_view event, std::string message,
            std::vector<log_field> fields = {}) const noexcept {
    write(log_level::info, event, std::move(message), std::move(fields));
  }

  void warn(std::string_view event, std::string message,
            std::vector<log_field> fields = {}) const noexcept {
    write(log_level::warn, event, std::move(message), std::move(fields));
  }

  void error(std::string_view event, std::string message,
             std::vector<log_field> fields = {}) const noexcept {
    write(log_level::error, event, std::move(message), std::move(fields));
  }

private:
  log_format format_;
  std::string node_id_;
  sink out_;
  mutable std::mutex mtx_;
};

/// Writes all of `line` to standard error with as few `write` calls as the
/// kernel allows (one, for a line that fits the pipe); gives up on an error.
void write_to_stderr(std::string_view line) noexcept;

} // namespace videostreams
