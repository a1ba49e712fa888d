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
-- BENCH_USER_AGENT: a browser's User-Agent on every request (none by default,
-- as the recorded figures were measured).
local user_agent = os.getenv("BENCH_USER_AGENT")
local n = 0
function request()
  n = n + 1
  local prefix = (n % 2 == 0) and "presence-bench-" or "private-bench-"
  local body = "socket_id=" .. n .. "." .. tid .. "&channel_name=" .. prefix .. tid .. "-" .. n
  local headers = {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Cookie"] = "session=bench-" .. tid .. "-" .. n,
  }
  if user_agent then
    headers["User-Agent"] = user_agent
  end
  return wrk.format("POST", path, headers, body)
end
