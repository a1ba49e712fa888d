-- wrk script: GET /client-config as a browser that already holds its random id
-- (the pusher_dual_auth_rid cookie), another client on every request: the
-- service hashes each id into its bucket (nothing to reuse between requests).
-- WRK_PATH sets the path (client_config.py points it at nginx's static file for
-- the floor; the cookie is then ignored).
local thread_counter = 0
function setup(thread)
  thread:set("tid", thread_counter)
  thread_counter = thread_counter + 1
end

local path = os.getenv("WRK_PATH") or "/client-config"
local n = 0
function request()
  n = n + 1
  -- 32 characters, as the service's own ids (a UUID's hex).
  local id = string.format("be%06d%024d", tid, n)
  return wrk.format("GET", path, { ["Cookie"] = "pusher_dual_auth_rid=" .. id })
end
