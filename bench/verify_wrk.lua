-- bench/verify_wrk.lua - wrk requests for bench/verify_bench.py: POST /auth/verify.
--   wrk ... -s bench/verify_wrk.lua URL -- FILE
-- FILE: line 1 is the service account's bearer token; each further line is one prepared
-- request body (an API key and its checks, JSON on one line). Each request picks a random
-- body. done() prints one JSON line (requests/s, latency percentiles in us, errors).
local token, bodies = nil, {}
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  for l in io.lines(args[1]) do
    if token == nil then token = "Bearer " .. l else bodies[#bodies + 1] = l end
  end
  assert(token and #bodies > 0, "no rows in " .. args[1])
  math.randomseed(os.time() * 7919 + (tid or 0) * 104729)
end

function request()
  return wrk.format("POST", "/auth/verify",
    { ["Authorization"] = token, ["Content-Type"] = "application/json" },
    bodies[math.random(#bodies)])
end

function done(summary, latency, requests)
  local s = summary.duration / 1e6
  io.write(string.format(
    '{"requests":%d,"duration_s":%.2f,"rps":%.0f,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, s, summary.requests / s, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
