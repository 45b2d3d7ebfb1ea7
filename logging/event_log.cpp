#include "logging/event_log.hpp"

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>

#include <unistd.h>

#include "actors/clock.hpp"

namespace videostreams {

namespace {

/// The length of the valid UTF-8 sequence at the start of `x` (1 to 4), or
/// 0 when its first byte starts none (a stray or overlong byte, a
/// surrogate, a truncated sequence).
std::size_t utf8_sequence(std::string_view x) noexcept {
  auto byte = [&x](std::size_t i) {
    return i < x.size() ? static_cast<unsigned char>(x[i]) : 0u;
  };
  auto cont = [&byte](std::size_t i) { return (byte(i) & 0xC0u) == 0x80u; };
  auto b0 = byte(0);
  if (b0 < 0x80)
    return 1;
  if (b0 >= 0xC2 && b0 <= 0xDF)
    return cont(1) ? 2 : 0;
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    auto b1 = byte(1);
    bool ok = b0 == 0xE0   ? b1 >= 0xA0 && b1 <= 0xBF
              : b0 == 0xED ? b1 >= 0x80 && b1 <= 0x9F
                           : cont(1);
    return ok && cont(2) ? 3 : 0;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    auto b1 = byte(1);
    bool ok = b0 == 0xF0   ? b1 >= 0x90 && b1 <= 0xBF
              : b0 == 0xF4 ? b1 >= 0x80 && b1 <= 0x8F
                           : cont(1);
    return ok && cont(2) && cont(3) ? 4 : 0;
  }
  return 0;
}

void append_hex_escape(std::string& out, const char* prefix, unsigned value,
                       int digits) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "%s%0*X", prefix, digits, value);
  out += buf;
}

/// `x` escaped for the text format: control characters and bytes that are
/// not UTF-8 as `\n`, `\r`, `\t` or `\xHH`, a backslash doubled, and (in a
/// quoted value) `"` as `\"`.
void append_text_escaped(std::string& out, std::string_view x, bool quoted) {
  for (std::size_t i = 0; i < x.size();) {
    auto c = static_cast<unsigned char>(x[i]);
    auto n = utf8_sequence(x.substr(i));
    if (n > 1) {
      out.append(x.data() + i, n);
      i += n;
      continue;
    }
    ++i;
    if (n == 0 || c < 0x20 || c == 0x7F) {
      switch (c) {
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default: append_hex_escape(out, "\\x", c, 2);
      }
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c == '"' && quoted) {
      out += "\\\"";
    } else {
      out += static_cast<char>(c);
    }
  }
}

/// A logfmt value needs quotes when it is empty or holds a space, a quote,
/// an '=', a backslash or anything but printable ASCII.
bool needs_quotes(std::string_view x) noexcept {
  if (x.empty())
    return true;
  for (char ch : x) {
    auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7F || c == '"' || c == '=' || c == '\\')
      return true;
  }
  return false;
}

void append_json_escaped(std::string& out, std::string_view x) {
  out += '"';
  for (std::size_t i = 0; i < x.size();) {
    auto c = static_cast<unsigned char>(x[i]);
    auto n = utf8_sequence(x.substr(i));
    if (n == 0) {
      out += "\\ufffd"; // not UTF-8: a JSON string holds characters only
      ++i;
      continue;
    }
    if (n > 1) {
      out.append(x.data() + i, n);
      i += n;
      continue;
    }
    ++i;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20 || c == 0x7F)
          append_hex_escape(out, "\\u", c, 4);
        else
          out += static_cast<char>(c);
    }
  }
  out += '"';
}

/// A number as it is written in both formats: integers as integers, others
/// with up to 6 decimals (trailing zeros dropped); not finite: null.
std::string number_text(double x) {
  if (!std::isfinite(x))
    return "null";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.6f", x);
  std::string out{buf};
  while (!out.empty() && out.back() == '0')
    out.pop_back();
  if (!out.empty() && out.back() == '.')
    out.pop_back();
  if (out == "-0")
    out = "0";
  return out;
}

/// The message without trailing white space (libpq's end in a newline).
std::string_view trimmed(std::string_view x) noexcept {
  while (!x.empty()
         && (x.back() == '\n' || x.back() == '\r' || x.back() == ' '
             || x.back() == '\t'))
    x.remove_suffix(1);
  return x;
}

std::string text_line(std::string_view node_id, std::int64_t wall_ms,
                      const log_event& event) {
  std::string out;
  out.reserve(128 + event.message.size());
  out += rfc3339(wall_ms);
  out += event.level == log_level::info   ? " INFO "
         : event.level == log_level::warn ? " WARN "
                                          : " ERROR ";
  out += "videostreams: ";
  append_text_escaped(out, trimmed(event.message), false);
  auto pair = [&out](std::string_view name, std::string_view value) {
    out += ' ';
    out += name;
    out += '=';
    if (needs_quotes(value)) {
      out += '"';
      append_text_escaped(out, value, true);
      out += '"';
    } else {
      out += value;
    }
  };
  out += " |";
  pair("event", event.name);
  pair("node", node_id);
  for (auto& f : event.fields) {
    std::string value;
    if (auto s = std::get_if<std::string>(&f.value)) {
      pair(f.name, *s);
      continue;
    }
    if (auto i = std::get_if<std::int64_t>(&f.value))
      value = std::to_string(*i);
    else if (auto d = std::get_if<double>(&f.value))
      value = number_text(*d);
    else if (auto b = std::get_if<bool>(&f.value))
      value = *b ? "true" : "false";
    else if (auto v = std::get_if<std::vector<std::int64_t>>(&f.value))
      for (std::size_t k = 0; k < v->size(); ++k)
        value += (k == 0 ? "" : ",") + std::to_string((*v)[k]);
    pair(f.name, value);
  }
  out += '\n';
  return out;
}

std::string json_line(std::string_view node_id, std::int64_t wall_ms,
                      const log_event& event) {
  std::string out;
  out.reserve(160 + event.message.size());
  auto key = [&out](std::string_view name) {
    out += ',';
    append_json_escaped(out, name);
    out += ':';
  };
  out += "{\"ts\":\"";
  out += rfc3339(wall_ms);
  out += "\",\"level\":\"";
  out += level_name(event.level);
  out += '"';
  key("node");
  append_json_escaped(out, node_id);
  key("event");
  append_json_escaped(out, event.name);
  key("msg");
  append_json_escaped(out, trimmed(event.message));
  for (auto& f : event.fields) {
    key(f.name);
    if (auto s = std::get_if<std::string>(&f.value)) {
      append_json_escaped(out, *s);
    } else if (auto i = std::get_if<std::int64_t>(&f.value)) {
      out += std::to_string(*i);
    } else if (auto d = std::get_if<double>(&f.value)) {
      out += number_text(*d);
    } else if (auto b = std::get_if<bool>(&f.value)) {
      out += *b ? "true" : "false";
    } else if (auto v = std::get_if<std::vector<std::int64_t>>(&f.value)) {
      out += '[';
      for (std::size_t k = 0; k < v->size(); ++k)
        out += (k == 0 ? "" : ",") + std::to_string((*v)[k]);
      out += ']';
    }
  }
  out += "}\n";
  return out;
}

} // namespace

std::string_view level_name(log_level x) noexcept {
  switch (x) {
    case log_level::info:
      return "info";
    case log_level::warn:
      return "warn";
    case log_level::error:
      return "error";
  }
  return "info";
}

std::optional<log_format> parse_log_format(std::string_view x) noexcept {
  if (x == "text")
    return log_format::text;
  if (x == "json")
    return log_format::json;
  return std::nullopt;
}

std::string host_port(std::string_view host, int port) {
  std::string result;
  if (host.find(':') != std::string_view::npos)
    result.append("[").append(host).append("]");
  else
    result.append(host);
  return result + ":" + std::to_string(port);
}

std::string json_quote(std::string_view x) {
  std::string out;
  append_json_escaped(out, x);
  return out;
}

std::string format_log_line(log_format format, std::string_view node_id,
                            std::int64_t wall_ms, const log_event& event) {
  return format == log_format::json ? json_line(node_id, wall_ms, event)
                                    : text_line(node_id, wall_ms, event);
}

void write_to_stderr(std::string_view line) noexcept {
  while (!line.empty()) {
    auto n = ::write(STDERR_FILENO, line.data(), line.size());
    if (n > 0) {
      line.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    return;
  }
}

event_log::event_log(log_format format, std::string node_id, sink out)
  : format_(format), node_id_(std::move(node_id)), out_(std::move(out)) {
  if (!out_)
    out_ = write_to_stderr;
}

void event_log::write(log_level level, std::string_view event,
                      std::string message,
                      std::vector<log_field> fields) const noexcept {
  try {
    auto wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
    auto line = format_log_line(
      format_, node_id_, wall_ms,
      log_event{level, event, std::move(message), std::move(fields)});
    std::lock_guard<std::mutex> guard{mtx_};
    out_(line);
  } catch (...) {
    // Out of memory, or a sink that threw: the line is lost, the caller
    // goes on.
  }
}

} // namespace videostreams
