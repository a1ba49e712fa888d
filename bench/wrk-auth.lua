-- wrk script: pusher-js-style form posts, half private, half presence channels.
-- Every request has its own socket id, channel and session cookie (another
-- user), so no two are "identical" (coalescing never kicks in: this measures
-- the full path). WRK_PATH sets the path (load.py points it at nginx's /check
-- for the one-exchange baseline).
local thread_counter = 0
function setup(thread)
  thread:set("tid", thread_counter)
  thread_counter = thread_counter + 1
end

local path = os.getenv("WRK_PATH") or "/auth/new"
local n = 0
function request()
  n = n + 1
  local prefix = (n % 2 == 0) and "presence-bench-" or "private-bench-"
  local body = "socket_id=" .. n .. "." .. tid .. "&channel_name=" .. prefix .. tid .. "-" .. n
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Cookie"] = "session=bench-" .. tid .. "-" .. n,
  }, body)
end
