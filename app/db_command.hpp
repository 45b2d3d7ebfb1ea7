#pragma once

#include <functional>
#include <string>
#include <vector>

namespace videostreams {

/// `videostreams db migrate|rollback|seed|status|reshard [--shards=N]
/// [--database-url=URL]`:
/// manages the schema of the database named by `--database-url`, else
/// `VIDEOSTREAMS_DATABASE_URL`, else `DATABASE_URL`. `args` are the words
/// after "db". Prints what it did on stdout, errors on stderr; returns the
/// process exit code (0 done, 1 the database failed, 2 bad usage).
/// The usage of the `db` commands (also part of `--help`).
const char* db_usage();

int run_db_command(const std::vector<std::string>& args,
                   const std::function<const char*(const char*)>& getenv);

} // namespace videostreams
