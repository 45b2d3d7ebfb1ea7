#pragma once

#include <cstddef>
#include <string_view>

namespace videostreams {

/// What the edge accepts before cpp-httplib parses a request.
struct framing_limits {
  /// The request line and every header line with their CRLFs, at most
  /// (beyond: 431; a request line alone beyond `max_target_bytes`: 414).
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_target_bytes = 8 * 1024;
  std::size_t max_header_fields = 100;
  /// The body, decoded (the chunk data of a chunked body), at most
  /// (beyond: 413).
  std::size_t max_body_bytes = 16 * 1024;

  /// A chunked body on the wire (sizes, extensions and CRLFs included), at
  /// most (beyond: 413): one-byte chunks would otherwise make a body of
  /// the limit's size several times larger to read and hold.
  std::size_t max_chunked_wire_bytes() const noexcept {
    return 2 * max_body_bytes;
  }

  /// The most bytes one request can take on the wire: a connection that
  /// holds this many has either a whole request or a refused one.
  std::size_t max_request_bytes() const noexcept {
    return 2 * 4 /* leading empty lines */ + max_header_bytes
           + max_chunked_wire_bytes();
  }
};

/// Where the next request in a connection's bytes stands.
struct request_frame {
  enum class state {
    /// More bytes are needed.
    incomplete,
    /// `size` bytes (from the start of the input) hold one whole request.
    complete,
    /// The request is refused with `status` (400, 413, 414, 415, 431); its
    /// framing is unknowable or unsafe, so the connection must be closed.
    refused,
  };
  state what = state::incomplete;
  std::size_t size = 0;
  /// Empty lines before the request line, skipped (RFC 9112 §2.2): the
  /// request itself starts at `skip`.
  std::size_t skip = 0;
  int status = 0;
  /// Why it was refused, for the error answer's `detail`.
  std::string_view reason;
  /// Its header is complete (even if the body is not).
  bool header_complete = false;
  /// The header asks for `100 Continue` before the body is sent.
  bool expects_continue = false;
  /// An HTTP/1.0 request: the edge closes its connection after the answer.
  bool http10 = false;
  /// It has a Range field (which the edge takes out: answers are never
  /// partial, and cpp-httplib would refuse one it cannot parse).
  bool has_range = false;
  /// Its method is none that cpp-httplib parses (RFC 9110's and PATCH):
  /// the edge routes it itself.
  bool unknown_method = false;
};

/// Finds the end of the first request in `bytes`, checking its framing
/// strictly so that the edge and cpp-httplib (which parses the request
/// after this) cannot disagree about where it ends: CRLF line ends only,
/// no field without a name or with whitespace before its colon, no line
/// folding, no control characters in a field value, one Content-Length
/// value (digits only), no Content-Length beside Transfer-Encoding, which
/// may only be `chunked` (no trailers), no body on GET, HEAD or OPTIONS,
/// no Content-Encoding other than identity on a body (415), no multipart
/// body (415), no encoded `/` in the path. Pure: it reads `bytes` only, so
/// a connection calls it again with more bytes until it is no longer
/// incomplete.
request_frame frame_request(std::string_view bytes,
                            const framing_limits& limits);

/// Whether `s` begins with `prefix`, ASCII letters compared without case
/// (header names, media types).
bool starts_with_ignoring_case(std::string_view s, std::string_view prefix);

} // namespace videostreams
