-- wrk script: pusher-js-style form posts, half private, half presence channels.
-- Every request has its own socket id and channel, so no two are "identical"
-- (coalescing never kicks in: this measures the full path).
local thread_counter = 0
function setup(thread)
  thread:set("tid", thread_counter)
  thread_counter = thread_counter + 1
end

local n = 0
function request()
  n = n + 1
  local prefix = (n % 2 == 0) and "presence-bench-" or "private-bench-"
  local body = "socket_id=" .. n .. "." .. tid .. "&channel_name=" .. prefix .. tid .. "-" .. n
  return wrk.format("POST", "/auth/new", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Cookie"] = "session=bench-user",
  }, body)
end
