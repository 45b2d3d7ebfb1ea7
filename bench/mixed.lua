-- wrk script: the mixed legacy workload. Each request picks a random user
-- among USERS (default 100,000) and starts or ends a stream for it, half
-- and half, so counts stay below the limit and both paths are exercised.
-- An end for a user with nothing to close is the original API's 400 (docs/
-- api.md): an expected answer, not an error. wrk counts every status above
-- 399 as an error, so this script counts the unexpected ones itself.
-- bench_legacy_load (bench/legacy_load.cpp) sends the same requests from
-- one thread to several nodes (bench/cluster).
local users = tonumber(os.getenv("USERS") or "100000")
local threads = {}

function setup(thread)
  thread:set("seed", math.random(1, 1000000))
  table.insert(threads, thread)
end

unexpected = 0

function response(status, headers, body)
  if status ~= 200 and not (status == 400 and
      (body:find("no active streams to close for user", 1, true) or
       body:find("user_id not present in the database", 1, true))) then
    unexpected = unexpected + 1
  end
end

function init(args)
  math.randomseed(seed)
end

function request()
  local user = math.random(0, users - 1)
  if math.random() < 0.5 then
    return wrk.format("GET", "/api/startstream/" .. user)
  end
  return wrk.format("GET", "/api/endstream/" .. user)
end

function done(summary, latency, requests)
  local e = summary.errors
  local status_errors = 0
  for _, t in ipairs(threads) do
    status_errors = status_errors + t:get("unexpected")
  end
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d " ..
    "connect_errors=%d read_errors=%d write_errors=%d status_errors=%d " ..
    "timeouts=%d\n",
    summary.requests, summary.duration,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, status_errors, e.timeout))
end
