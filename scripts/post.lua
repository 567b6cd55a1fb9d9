-- wrk script: POST a small evaluation submission as JSON.
-- Usage: wrk -t1 -c64 -d10s --latency -s scripts/post.lua http://127.0.0.1:PORT/evaluations
wrk.method = "POST"
wrk.body = '{"eval_id":"load-1","code":"print(1)","language":"python"}'
wrk.headers["Content-Type"] = "application/json"
