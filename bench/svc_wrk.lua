-- bench/svc_wrk.lua - wrk requests for bench/svc_bench.sh.
--   wrk ... -s bench/svc_wrk.lua URL -- MODE FILE TAG
-- MODE get:  GET /agent_api_keys/{id}                  FILE lines: key_id TAB token
--      list: GET /agent_api_keys?agent_id=..&limit=50  FILE lines: agent_id TAB token
--      post: POST /agent_api_keys (unique names)       FILE lines: agent_id TAB token
-- TAG makes POST names unique across runs. Each request picks a random line; done()
-- prints one JSON line (requests/s, latency percentiles in us, status errors); done() runs
-- in wrk's main Lua state, which never saw init()'s arguments, so the caller adds the mode.
local mode, rows, tag, counter = "get", {}, "t", 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  mode, tag = args[1], args[3] or "t"
  for l in io.lines(args[2]) do
    local id, tok = l:match("^(%S+)%s+(%S+)$")
    if id then rows[#rows + 1] = { id, "Bearer " .. tok } end
  end
  assert(#rows > 0, "no rows in " .. args[2])
  math.randomseed(os.time() * 7919 + (tid or 0) * 104729)
end

function request()
  local r = rows[math.random(#rows)]
  if mode == "get" then
    return wrk.format("GET", "/agent_api_keys/" .. r[1], { ["Authorization"] = r[2] })
  elseif mode == "list" then
    return wrk.format("GET", "/agent_api_keys?agent_id=" .. r[1] .. "&limit=50",
      { ["Authorization"] = r[2] })
  else
    counter = counter + 1
    local body = string.format('{"agent_id":"%s","name":"bench-%s-%d-%d","api_key_type":"external"}',
      r[1], tag, tid or 0, counter)
    return wrk.format("POST", "/agent_api_keys",
      { ["Authorization"] = r[2], ["Content-Type"] = "application/json" }, body)
  end
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
