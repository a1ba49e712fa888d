//! The fleet's Lua scripts: each is one atomic step, so replicas flushing,
//! sampling and reporting at once never see (or leave) half an update.
//! Keys are derived from the prefix inside the scripts (standalone Redis or a
//! primary, as for the webhook state; not Redis Cluster).

/// One replica's flush: its row in the replica list always; then, once per
/// `seq` (a retried flush whose first answer was lost is not counted twice),
/// the signed counts per app, the last webhook per app (the latest wins), and
/// the client-build counts per 5-minute bucket, ranked by decayed volume.
///
/// Ranking: a group's score is log2 of its volume with a one-hour half-life,
/// kept in log space so it never overflows: n auths at time t add 2^(t/H)·n.
/// Past MAX groups the lowest-scored one other than the group just counted
/// moves into "other" (counts kept, name dropped): a newcomer always gets a
/// place, and only the quietest names make room, as in `client_stats`.
/// Once per bucket, counts older than a day and replicas unseen for an hour go.
///
/// ARGV: prefix, replica id, seq, now ms, replica row (JSON), max groups,
/// bucket ms, day buckets, half-life ms, replica ttl ms, n signed, n webhooks,
/// then n signed (app, count) pairs, n webhook (app, ms) pairs, and
/// (group, app, count) triples to the end.
pub const FLUSH: &str = r#"
local p, replica = ARGV[1], ARGV[2]
local seq, now = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_groups, bucket_ms, day_buckets = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local half_life, replica_ttl = tonumber(ARGV[9]), tonumber(ARGV[10])
local n_signed, n_hooks = tonumber(ARGV[11]), tonumber(ARGV[12])
redis.call('HSET', p .. ':replicas', replica, ARGV[5])

local seq_key = p .. ':seq:' .. replica
if tonumber(redis.call('GET', seq_key) or '0') >= seq then return 0 end
redis.call('SET', seq_key, seq, 'PX', 86400000)

local i = 13
for _ = 1, n_signed do
  redis.call('HINCRBY', p .. ':signed', ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, n_hooks do
  local key, app, at = p .. ':last_webhook', ARGV[i], tonumber(ARGV[i + 1])
  if tonumber(redis.call('HGET', key, app) or '0') < at then redis.call('HSET', key, app, at) end
  i = i + 2
end

local zset, seen, other = p .. ':builds', p .. ':builds:seen', p .. ':build:other'
local bucket = math.floor(now / bucket_ms)
local log2 = math.log(2)
local function evict(group)
  local counts = redis.call('HGETALL', p .. ':build:' .. group)
  for k = 1, #counts, 2 do redis.call('HINCRBY', other, counts[k], counts[k + 1]) end
  local at = tonumber(redis.call('HGET', seen, group) or '0')
  if tonumber(redis.call('HGET', seen, 'other') or '0') < at then redis.call('HSET', seen, 'other', at) end
  redis.call('DEL', p .. ':build:' .. group)
  redis.call('ZREM', zset, group)
  redis.call('HDEL', seen, group)
end
while i + 2 <= #ARGV do
  local group, app, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local field = app .. ':' .. bucket
  if group == 'other' then
    redis.call('HINCRBY', other, field, n)
  else
    local x = now / half_life + math.log(n) / log2
    local old = redis.call('ZSCORE', zset, group)
    if old then
      old = tonumber(old)
      local hi, lo = math.max(old, x), math.min(old, x)
      x = hi + math.log(1 + 2 ^ (lo - hi)) / log2
    end
    redis.call('ZADD', zset, x, group)
    redis.call('HINCRBY', p .. ':build:' .. group, field, n)
    -- One at a time, as in client_stats: the quietest other than this one makes room.
    if redis.call('ZCARD', zset) > max_groups then
      local lowest = redis.call('ZRANGE', zset, 0, 1)
      evict(lowest[1] == group and lowest[2] or lowest[1])
    end
  end
  redis.call('HSET', seen, group, now)
end

if tonumber(redis.call('GET', p .. ':pruned') or '0') < bucket then
  redis.call('SET', p .. ':pruned', bucket)
  local groups = redis.call('ZRANGE', zset, 0, -1)
  table.insert(groups, 'other')
  for _, group in ipairs(groups) do
    local key = p .. ':build:' .. group
    for _, field in ipairs(redis.call('HKEYS', key)) do
      local b = tonumber(string.match(field, ':(%d+)$') or '0')
      if b + day_buckets <= bucket then redis.call('HDEL', key, field) end
    end
    if redis.call('EXISTS', key) == 0 then
      redis.call('ZREM', zset, group)
      redis.call('HDEL', seen, group)
    end
  end
  local rows = redis.call('HGETALL', p .. ':replicas')
  for k = 1, #rows, 2 do
    local ok, row = pcall(cjson.decode, rows[k + 1])
    if not ok or type(row) ~= 'table' or tonumber(row.last_seen_ms or 0) + replica_ttl < now then
      redis.call('HDEL', p .. ':replicas', rows[k])
    end
  end
end
return 1
"#;

/// One history sample for the fleet, by whichever replica comes first in each
/// interval (the others find the slot taken), and the drain clock: the old
/// app is quiet from the first sample whose signed count equals the previous
/// one's and whose occupancy is zero, until one that is not.
///
/// ARGV: prefix, now ms, minimum gap ms, max samples, sample (JSON),
/// old app ('' = none), its signed count, its occupied channels.
/// Returns 1 if the sample was recorded, 0 if another replica's was.
pub const SAMPLE: &str = r#"
local p, now, gap, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local old, signed, occupied = ARGV[6], ARGV[7], tonumber(ARGV[8])
if now - tonumber(redis.call('GET', p .. ':sample_t') or '0') < gap then return 0 end
redis.call('SET', p .. ':sample_t', now)
redis.call('RPUSH', p .. ':samples', ARGV[5])
redis.call('LTRIM', p .. ':samples', -max, -1)
local drain = p .. ':drain'
if old == '' then
  redis.call('DEL', drain)
  return 1
end
local mark = old .. '=' .. signed
local prev = redis.call('HGET', drain, 'mark')
local busy = occupied > 0 or (prev and prev ~= mark)
redis.call('HSET', drain, 'mark', mark)
if busy then
  redis.call('HDEL', drain, 'quiet_since')
else
  redis.call('HSETNX', drain, 'quiet_since', now)
end
return 1
"#;

/// Merges one replica's reading of an app's REST channel list into the
/// fleet's: the newest reading (or failure) wins; corrections add up.
///
/// ARGV: key, app, at ms, listed ('' = the read failed), error, corrected
/// occupied, corrected vacated.
pub const REST: &str = r#"
local key, app, at = ARGV[1], ARGV[2], tonumber(ARGV[3])
local view = {}
local stored = redis.call('HGET', key, app)
if stored then
  local ok, v = pcall(cjson.decode, stored)
  if ok and type(v) == 'table' then view = v end
end
local newest = tonumber(view.at_ms or 0) <= at
if newest then
  view.at_ms = at
  if ARGV[4] ~= '' then
    view.checked_ms, view.listed, view.error = at, tonumber(ARGV[4]), nil
  else
    view.error = ARGV[5]
  end
end
local occ, vac = tonumber(ARGV[6]), tonumber(ARGV[7])
if occ + vac > 0 then
  view.corrected_occupied = tonumber(view.corrected_occupied or 0) + occ
  view.corrected_vacated = tonumber(view.corrected_vacated or 0) + vac
  if tonumber(view.last_correction_ms or 0) < at then view.last_correction_ms = at end
end
redis.call('HSET', key, app, cjson.encode(view))
return 1
"#;
