// Files embedded at build time (cmake/embed_files.cmake) and the entity-tag
// comparison of the 304 answers (http/served_files.hpp).

#include "http/served_files.hpp"

#include <catch2/catch.hpp>

#include <string>

using namespace videostreams;

namespace videostreams {
// Embedded by tests/unit/CMakeLists.txt from tests/unit/data.
extern const served_file_table served_file_fixtures;
} // namespace videostreams

TEST_CASE("embedded files keep every byte, a 256-byte file and an empty one",
          "[unit]") {
  auto* all = served_file_fixtures.find("/all_bytes.bin");
  REQUIRE(all != nullptr);
  REQUIRE(all->body.size() == 256);
  for (std::size_t i = 0; i < 256; ++i)
    REQUIRE(static_cast<unsigned char>(all->body[i]) == i);
  CHECK(all->content_type == "application/octet-stream");
  auto* empty = served_file_fixtures.find("/data/empty.txt");
  REQUIRE(empty != nullptr);
  CHECK(empty->body.empty());
  CHECK(empty->content_type == "text/plain; charset=utf-8");
  CHECK(served_file_fixtures.find("/nothing") == nullptr);
  CHECK(served_file_fixtures.find("/all_bytes.bi") == nullptr);
  CHECK(served_file_fixtures.count == 2);
}

TEST_CASE("an embedded file's ETag is a strong tag of its SHA-256", "[unit]") {
  // The first 128 bits of the files' SHA-256, in hex (sha256sum).
  CHECK(served_file_fixtures.find("/all_bytes.bin")->etag
        == "\"40aff2e9d2d8922e47afd4648e696749\"");
  CHECK(served_file_fixtures.find("/data/empty.txt")->etag
        == "\"e3b0c44298fc1c149afbf4c8996fb924\"");
}

TEST_CASE("the service's files: the operator page as HTML, the OpenAPI "
          "description as JSON",
          "[unit]") {
  auto* doc = served_files.find("/api/openapi.json");
  REQUIRE(doc != nullptr);
  CHECK(doc->content_type == "application/json; charset=utf-8");
  CHECK(doc->body.find("\"openapi\": \"3.0.") != std::string_view::npos);
  auto* page = served_files.find("/ui/index.html");
  REQUIRE(page != nullptr);
  CHECK(page->content_type == "text/html; charset=utf-8");
  CHECK(page->body.substr(0, 15) == "<!doctype html>");
  CHECK(page->etag.size() == 34);
  for (auto& f : served_files) {
    INFO(f.path);
    CHECK(f.path.front() == '/');
    CHECK(f.etag.front() == '"');
    CHECK(f.etag.back() == '"');
    CHECK(!f.body.empty());
  }
}

TEST_CASE("If-None-Match matches a listed tag, weakly, or *", "[unit]") {
  std::string tag = "\"abc123\"";
  CHECK(etag_matches("\"abc123\"", tag));
  CHECK(etag_matches("W/\"abc123\"", tag));
  CHECK(etag_matches("*", tag));
  CHECK(etag_matches("\"x\", \"abc123\"", tag));
  CHECK(etag_matches("\"x\",\"abc123\"", tag));
  CHECK(etag_matches("\"x\",W/\"abc123\" ", tag));
  CHECK(etag_matches("\"a,b\", \"abc123\"", tag)); // a comma inside a tag
  CHECK_FALSE(etag_matches("", tag));
  CHECK_FALSE(etag_matches("\"abc\"", tag));
  CHECK_FALSE(etag_matches("\"abc1234\"", tag));
  CHECK_FALSE(etag_matches("abc123", tag)); // not quoted
  CHECK_FALSE(etag_matches("\"abc123", tag));
  CHECK_FALSE(etag_matches("\"x,\"abc123\"", tag)); // "x," then junk
  CHECK_FALSE(etag_matches("w/\"abc123\"", tag)); // W/ is case-sensitive
}

TEST_CASE("If-None-Match that is no list of entity tags matches nothing",
          "[unit]") {
  std::string tag = "\"abc123\"";
  CHECK_FALSE(etag_matches("\"abc123\"x", tag));
  CHECK_FALSE(etag_matches("\"abc123\"W/", tag));
  CHECK_FALSE(etag_matches("\"x\"\"abc123\"", tag));
  CHECK_FALSE(etag_matches("W/", tag));
  CHECK_FALSE(etag_matches(",,, ", tag));
}
