-- wrk script: signed Pusher webhooks from a file of pre-signed requests
-- (WEBHOOKS: one "key<TAB>signature<TAB>body" a line; bench/replicas.py writes it),
-- each of THREADS threads taking its own share of them, in order: wrk's Lua has
-- no HMAC, and a webhook repeated within the replay window is acknowledged without
-- being applied, so every request must be another body (the file holds more
-- than a run sends).
local lines = {}
for line in io.lines(os.getenv("WEBHOOKS")) do
  local key, sig, body = line:match("^([^\t]+)\t([^\t]+)\t(.+)$")
  lines[#lines + 1] = { key = key, sig = sig, body = body }
end

local thread_counter = 0
function setup(thread)
  thread:set("tid", thread_counter)
  thread_counter = thread_counter + 1
end

local path = os.getenv("WRK_PATH") or "/webhooks"
local n = nil
function request()
  if n == nil then n = tid * math.floor(#lines / tonumber(os.getenv("THREADS") or "2")) end
  n = n % #lines + 1
  local w = lines[n]
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/json",
    ["X-Pusher-Key"] = w.key,
    ["X-Pusher-Signature"] = w.sig,
  }, w.body)
end
