-- wrk script: the mixed legacy workload. Each request picks a random user
-- among USERS (default 100,000) and starts or ends a stream for it, half
-- and half, so counts stay below the limit and both paths are exercised.
local users = tonumber(os.getenv("USERS") or "100000")

function setup(thread)
  thread:set("seed", math.random(1, 1000000))
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
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d " ..
    "connect_errors=%d read_errors=%d write_errors=%d status_errors=%d " ..
    "timeouts=%d\n",
    summary.requests, summary.duration,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
