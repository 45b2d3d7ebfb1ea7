// Prints the router's routes with their methods, one "METHOD /template" a
// line (e.g. "GET /api/startstream/:user_id"), read from the router's own
// table (http/routes.hpp: every `route` value, its template and its
// `allowed_methods`), for the openapi tier's check that the OpenAPI
// description, endpoints.json and the router list the same routes.
//
// Each template is also matched back (its parameters filled in): a
// template that `match_route` does not resolve to its own route is an
// error (exit 1), so the list cannot describe another router than the one
// that runs.

#include <cstdio>
#include <string>
#include <string_view>

#include "http/routes.hpp"

using namespace videostreams;

namespace {

/// The template with each ":param" segment replaced by a value.
std::string filled(std::string_view tmpl) {
  std::string out;
  std::size_t i = 0;
  while (i < tmpl.size()) {
    if (tmpl[i] == ':') {
      out += "1";
      while (i < tmpl.size() && tmpl[i] != '/')
        ++i;
    } else {
      out += tmpl[i++];
    }
  }
  return out;
}

} // namespace

int main() {
  int errors = 0;
  for (std::size_t i = 0; i < route_count; ++i) {
    auto r = static_cast<route>(i);
    if (r == route::unmatched)
      continue;
    auto tmpl = route_template(r);
    auto path = filled(tmpl);
    if (match_route(path).which != r) {
      std::fprintf(stderr, "list_routes: %s (as %s) does not match its own "
                           "route\n",
                   std::string{tmpl}.c_str(), path.c_str());
      ++errors;
    }
    auto methods = allowed_methods(r);
    while (!methods.empty()) {
      auto comma = methods.find(", ");
      auto m = methods.substr(0, comma);
      std::printf("%.*s %.*s\n", static_cast<int>(m.size()), m.data(),
                  static_cast<int>(tmpl.size()), tmpl.data());
      if (comma == std::string_view::npos)
        break;
      methods.remove_prefix(comma + 2);
    }
  }
  return errors == 0 ? 0 : 1;
}
