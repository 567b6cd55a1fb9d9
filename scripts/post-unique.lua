-- wrk script: POST evaluation submissions, each with its own eval_id.
-- Usage: wrk -t1 -c64 -d10s --latency -s scripts/post-unique.lua http://127.0.0.1:PORT/evaluations
-- PACE_MS=N makes each connection wait N ms between its requests, to hold a rate below
-- saturation (about connections / (N ms + latency)).
local counter = 0
local thread_id = tostring(math.random(1, 1000000000))
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  counter = counter + 1
  local body = '{"eval_id":"load-' .. thread_id .. '-' .. counter .. '","code":"print(1)","language":"python"}'
  return wrk.format(nil, nil, nil, body)
end

local pace = tonumber(os.getenv("PACE_MS") or "")
if pace then
  delay = function()
    return pace
  end
end
