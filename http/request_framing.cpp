#include "http/request_framing.hpp"

#include <cstdint>

namespace videostreams {

namespace {

using state = request_frame::state;

/// Empty lines skipped before a request line, at most.
constexpr std::size_t max_leading_empty_lines = 4;

/// A chunk-size line (size and extensions), at most.
constexpr std::size_t max_chunk_line_bytes = 256;

request_frame refuse(int status, std::string_view reason) {
  request_frame f;
  f.what = state::refused;
  f.status = status;
  f.reason = reason;
  return f;
}

/// RFC 9110 §5.6.2 `tchar`.
bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
    return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*':
    case '+': case '-': case '.': case '^': case '_': case '`': case '|':
    case '~':
      return true;
    default:
      return false;
  }
}

bool is_token(std::string_view s) {
  if (s.empty())
    return false;
  for (char c : s)
    if (!is_tchar(c))
      return false;
  return true;
}

/// A control character other than HTAB (RFC 9110 §5.5: never in a value).
bool is_ctl(char c) {
  auto u = static_cast<unsigned char>(c);
  return (u < 0x20 && c != '\t') || u == 0x7f;
}

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size())
    return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i]))
      return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = lower(c);
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

/// The methods whose requests carry no body: cpp-httplib would leave one
/// unread, and it would run as the next request.
bool is_bodyless(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS"
         || method == "TRACE" || method == "CONNECT";
}

/// The methods cpp-httplib parses (RFC 9110's and PATCH); it answers any
/// other with a bare 400.
bool is_known_method(std::string_view method) {
  for (std::string_view known : {"GET", "HEAD", "POST", "PUT", "DELETE",
                                  "CONNECT", "OPTIONS", "TRACE", "PATCH"})
    if (method == known)
      return true;
  return false;
}

/// What the request line and the header fields say about the framing.
struct header_facts {
  std::string_view method;
  bool http10 = false;
  bool has_length = false;
  std::uint64_t length = 0;
  bool chunked = false;
  bool encoded = false; // a Content-Encoding other than identity
  bool multipart = false; // a multipart Content-Type
  bool has_range = false;
  bool unknown_method = false;
  bool expects_continue = false;
  std::size_t fields = 0;
};

/// Checks the request line; 0 if it is fine, else the refusal's status.
request_frame check_request_line(std::string_view line,
                                 const framing_limits& limits,
                                 header_facts& facts) {
  auto sp1 = line.find(' ');
  auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos
      || line.find(' ', sp2 + 1) != std::string_view::npos)
    return refuse(400, "the request line is not 'METHOD target HTTP/1.1'");
  auto method = line.substr(0, sp1);
  auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  auto version = line.substr(sp2 + 1);
  if (!is_token(method))
    return refuse(400, "the method is not a token");
  // (Methods are case-sensitive: "get" is not one either.)
  facts.unknown_method = !is_known_method(method);
  if (target.size() > limits.max_target_bytes)
    return refuse(414, "the request target is too long");
  if (target.empty())
    return refuse(400, "the request target is empty");
  for (char c : target) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f)
      return refuse(400, "the request target holds a byte that must be "
                         "percent-encoded");
  }
  auto path = target.substr(0, target.find_first_of("?#"));
  for (std::size_t i = 0; i + 2 < path.size(); ++i)
    if (path[i] == '%' && path[i + 1] == '2' && lower(path[i + 2]) == 'f')
      return refuse(400, "the path holds an encoded '/' (%2F)");
  if (version == "HTTP/1.0")
    facts.http10 = true;
  else if (version != "HTTP/1.1")
    return refuse(400, "the version is neither HTTP/1.1 nor HTTP/1.0");
  facts.method = method;
  return {};
}

/// Checks one header field line (without its CRLF).
request_frame check_field(std::string_view line, const framing_limits& limits,
                          header_facts& facts) {
  if (++facts.fields > limits.max_header_fields)
    return refuse(431, "too many header fields");
  if (line.front() == ' ' || line.front() == '\t')
    return refuse(400, "a header field is folded over lines");
  auto colon = line.find(':');
  if (colon == std::string_view::npos || !is_token(line.substr(0, colon)))
    return refuse(400, "a header field has no valid name before its ':'");
  auto name = line.substr(0, colon);
  auto raw_value = line.substr(colon + 1);
  for (char c : raw_value)
    if (is_ctl(c))
      return refuse(400, "a header field value holds a control character");
  auto value = trim(raw_value);
  if (iequals(name, "Content-Length")) {
    if (value.empty()
        || value.find_first_not_of("0123456789") != std::string_view::npos)
      return refuse(400, "Content-Length is not a decimal number of bytes");
    // Leading zeros are fine; a value past the body limit is refused as
    // soon as it gets there (so it cannot overflow).
    std::uint64_t n = 0;
    for (char c : value) {
      n = n * 10 + static_cast<std::uint64_t>(c - '0');
      if (n > limits.max_body_bytes)
        return refuse(413, "the body is too large");
    }
    if (facts.has_length && n != facts.length)
      return refuse(400, "Content-Length values differ");
    facts.has_length = true;
    facts.length = n;
  } else if (iequals(name, "Transfer-Encoding")) {
    if (facts.chunked || !iequals(value, "chunked"))
      return refuse(400, "Transfer-Encoding may only be 'chunked', once");
    facts.chunked = true;
  } else if (iequals(name, "Content-Encoding")) {
    if (!iequals(value, "identity"))
      facts.encoded = true;
  } else if (iequals(name, "Content-Type")) {
    facts.multipart = starts_with_ignoring_case(value, "multipart/");
  } else if (iequals(name, "Range")) {
    facts.has_range = true;
  } else if (iequals(name, "Expect")) {
    facts.expects_continue = iequals(value, "100-continue");
  }
  return {};
}

/// Finds the end of a chunked body that starts at `at`.
request_frame frame_chunks(std::string_view in, std::size_t at,
                           const framing_limits& limits, request_frame f) {
  std::uint64_t body = 0;
  auto start = at;
  // Called where the bytes from `start` to `end` are all this body's.
  auto too_long = [&](std::size_t end) {
    return end - start > limits.max_chunked_wire_bytes();
  };
  constexpr std::string_view framing_too_large
    = "the chunked body's framing is too large (chunks too small)";
  for (;;) {
    if (too_long(at))
      return refuse(413, framing_too_large);
    auto lf = in.find('\n', at);
    if (lf == std::string_view::npos) {
      if (in.size() - at > max_chunk_line_bytes)
        return refuse(400, "a chunk-size line is too long");
      if (too_long(in.size()))
        return refuse(413, framing_too_large);
      return f;
    }
    if (lf == at || in[lf - 1] != '\r')
      return refuse(400, "a chunk-size line does not end with CRLF");
    if (lf - at > max_chunk_line_bytes)
      return refuse(400, "a chunk-size line is too long");
    auto line = in.substr(at, lf - 1 - at);
    std::size_t digits = 0;
    std::uint64_t size = 0;
    while (digits < line.size() && hex_value(line[digits]) >= 0) {
      // Leading zeros are fine (RFC 9112 §7.1); the value decides.
      size = size * 16 + static_cast<std::uint64_t>(hex_value(line[digits]));
      if (size > limits.max_body_bytes)
        return refuse(413, "the body is too large");
      ++digits;
    }
    if (digits == 0 || (digits < line.size() && line[digits] != ';'))
      return refuse(400, "a chunk size is not hexadecimal");
    for (char c : line.substr(digits))
      if (is_ctl(c))
        return refuse(400, "a chunk extension holds a control character");
    body += size;
    if (body > limits.max_body_bytes)
      return refuse(413, "the body is too large");
    at = lf + 1;
    if (size == 0) {
      if (in.size() < at + 2)
        return too_long(in.size()) ? refuse(413, framing_too_large) : f;
      if (in.substr(at, 2) != "\r\n")
        return refuse(400, "trailer fields are not accepted");
      f.what = state::complete;
      f.size = at + 2 - f.skip;
      return f;
    }
    if (in.size() < at + size + 2)
      return too_long(in.size()) ? refuse(413, framing_too_large) : f;
    if (in.substr(at + size, 2) != "\r\n")
      return refuse(400, "a chunk's data does not end with CRLF");
    at += size + 2;
  }
}

} // namespace

bool starts_with_ignoring_case(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size()
         && iequals(s.substr(0, prefix.size()), prefix);
}

request_frame frame_request(std::string_view in, const framing_limits& limits) {
  request_frame f;
  std::size_t p = 0;
  while (in.size() >= p + 2 && in[p] == '\r' && in[p + 1] == '\n') {
    if (p / 2 == max_leading_empty_lines)
      return refuse(400, "too many empty lines before the request");
    p += 2;
  }
  f.skip = p;
  header_facts facts;
  auto at = p;
  for (std::size_t line_no = 0;; ++line_no) {
    auto lf = in.find('\n', at);
    if (lf == std::string_view::npos) {
      // The line is incomplete: refuse at once what can only grow worse.
      if (in.size() - p > limits.max_header_bytes)
        return line_no == 0 ? refuse(414, "the request target is too long")
                            : refuse(431, "the header is too large");
      return f;
    }
    if (lf == at || in[lf - 1] != '\r')
      return refuse(400, "a header line does not end with CRLF");
    if (lf + 1 - p > limits.max_header_bytes)
      return line_no == 0 ? refuse(414, "the request target is too long")
                          : refuse(431, "the header is too large");
    auto line = in.substr(at, lf - 1 - at);
    at = lf + 1;
    if (line_no == 0) {
      if (auto refused = check_request_line(line, limits, facts);
          refused.what == state::refused)
        return refused;
    } else if (line.empty()) {
      break;
    } else if (auto refused = check_field(line, limits, facts);
               refused.what == state::refused) {
      return refused;
    }
  }
  if (facts.chunked && facts.has_length)
    return refuse(400, "both Content-Length and Transfer-Encoding");
  if (facts.chunked && facts.http10)
    return refuse(400, "Transfer-Encoding in an HTTP/1.0 request");
  bool has_body = facts.chunked || facts.length > 0;
  if (has_body && is_bodyless(facts.method))
    return refuse(400, "a body on a request whose method takes none");
  if (has_body && facts.encoded)
    return refuse(415, "Content-Encoding other than identity");
  if (has_body && facts.multipart)
    return refuse(415, "a multipart body (bodies are JSON)");
  if (facts.length > limits.max_body_bytes)
    return refuse(413, "the body is too large");
  f.header_complete = true;
  f.http10 = facts.http10;
  f.has_range = facts.has_range;
  f.unknown_method = facts.unknown_method;
  f.expects_continue = has_body && facts.expects_continue;
  if (facts.chunked)
    return frame_chunks(in, at, limits, f);
  if (in.size() - at < facts.length)
    return f;
  f.what = state::complete;
  f.size = at + facts.length - p;
  return f;
}

} // namespace videostreams
