-- wrk: signed webhooks, each request another body. wrk's Lua has no HMAC, so
-- bench/webhooks.py writes them signed to WEBHOOKS, one a line:
-- X-Pusher-Key <tab> X-Pusher-Signature <tab> body. Thread k of WRK_THREADS
-- sends lines k, k + n, k + 2n, ... in order (the file keeps a channel's
-- events far apart, so 16 connections cannot reorder them).
-- Past its last line a thread sends GET /healthz, so no body is sent twice
-- (a repeat would be acknowledged and not applied: cheaper, not the path
-- measured); bench/webhooks.py sizes the file to outlast the run, or stops wrk
-- (SIGINT) once every webhook was answered. WEBHOOKS_CYCLE=1 cycles instead
-- (nginx, the floor, has no repeats to skip).
local counter = 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
end

function init(args)
  local threads = tonumber(os.getenv("WRK_THREADS"))
  reqs, n, i = {}, 0, 0
  for line in io.lines(os.getenv("WEBHOOKS")) do
    if i % threads == tid then
      local key, sig, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      reqs[#reqs + 1] = wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["X-Pusher-Key"] = key,
        ["X-Pusher-Signature"] = sig,
      }, body)
    end
    i = i + 1
  end
  idle = wrk.format("GET", "/healthz")
  cycle = os.getenv("WEBHOOKS_CYCLE") == "1"
end

function request()
  n = n + 1
  if cycle and n > #reqs then
    n = 1
  end
  return reqs[n] or idle
end
