//! Remembered member infos in Redis: the memory mode's `infos`, done inside
//! Lua scripts, so every replica applies the same bounds in one atomic step.
//! Keys under the prefix (a channel name has no `:`, so `<c>:<u>` splits at its first):
//!
//! - `minfo:<c>` hash user → info JSON (what older versions read and write)
//! - `minfo-at:<c>` zset user → ms remembered (the channel's oldest first)
//! - `minfo-in:<c>` set: users whose join was seen since their info was remembered
//! - `minfo-app:<c>` hash app → ms of the last authorization through it (kept a minute)
//! - `minfo-user:<u>` zset channel → ms (the user's oldest first)
//! - `minfo-all` zset `<c>:<u>` → ms (everyone's oldest first)

use super::{
    BridgeSnapshot,
    infos::{EXPIRED_PER_CALL, Evicted, RECENT_AUTH_MS, TTL_MS, VICTIM_CANDIDATES},
};
use crate::config::PresenceSettings;
use crate::redis_client::{Conn, bounded, int, items, string};
use redis::{RedisResult, Script, Value};

/// Functions the scripts share (`P` is the key prefix).
pub fn library() -> String {
    format!(
        r#"
local TTL, RECENT, CANDIDATES, EXPIRED = {TTL_MS}, {RECENT_AUTH_MS}, {VICTIM_CANDIDATES}, {EXPIRED_PER_CALL}
local function forget(P, c, u)
  local h = P .. ':minfo:' .. c
  redis.call('HDEL', h, u)
  redis.call('ZREM', P .. ':minfo-at:' .. c, u)
  redis.call('SREM', P .. ':minfo-in:' .. c, u)
  redis.call('ZREM', P .. ':minfo-user:' .. u, c)
  redis.call('ZREM', P .. ':minfo-all', c .. ':' .. u)
  if redis.call('EXISTS', h) == 0 then
    redis.call('DEL', P .. ':minfo-at:' .. c, P .. ':minfo-in:' .. c, P .. ':minfo-app:' .. c)
  end
end
local function forget_entry(P, entry)
  local at = string.find(entry, ':', 1, true)
  forget(P, string.sub(entry, 1, at - 1), string.sub(entry, at + 1))
end
"#
    )
}

/// Remembers one member's info within the bounds (as `Infos::remember`), and
/// reads who is present through each app with their infos.
/// ARGV 1 prefix, 2 channel, 3 user, 4 info, 5 app authorized through, 6 now
/// ms, 7 per channel, 8 per user, 9 in total, 10 members listed per app (0: no
/// lists), 11.. the apps to list. Returns {{evicted per channel, per user, in
/// total}, {{users}, {infos}} per app}.
const REMEMBER: &str = r#"
local P, c, u, info, app = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local now, per_channel, per_user, total, listed =
  tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local all, h = P .. ':minfo-all', P .. ':minfo:' .. c
local at, uk, apps = P .. ':minfo-at:' .. c, P .. ':minfo-user:' .. u, P .. ':minfo-app:' .. c
for _, e in ipairs(redis.call('ZRANGEBYSCORE', all, '-inf', now - TTL, 'LIMIT', 0, EXPIRED)) do
  forget_entry(P, e)
end
local evicted = {0, 0, 0}
if redis.call('HEXISTS', h, u) == 0 then
  while redis.call('ZCARD', uk) >= per_user do
    forget(P, redis.call('ZRANGE', uk, 0, 0)[1], u)
    evicted[2] = evicted[2] + 1
  end
  while redis.call('HLEN', h) >= per_channel do
    local victim
    if redis.call('ZCARD', at) < redis.call('HLEN', h) then
      -- Written by an older version (no time kept): those go first.
      for _, v in ipairs(redis.call('HKEYS', h)) do
        if not redis.call('ZSCORE', at, v) then victim = v break end
      end
    else
      -- Of the oldest few, one present through no app if there is one.
      local oldest = redis.call('ZRANGE', at, 0, CANDIDATES - 1)
      victim = oldest[1]
      for _, v in ipairs(oldest) do
        if redis.call('EXISTS', P .. ':mem:' .. c .. ':' .. v) == 0 then victim = v break end
      end
    end
    forget(P, c, victim)
    evicted[1] = evicted[1] + 1
  end
  while redis.call('ZCARD', all) >= total do
    forget_entry(P, redis.call('ZRANGE', all, 0, 0)[1])
    evicted[3] = evicted[3] + 1
  end
end
redis.call('HSET', h, u, info)
redis.call('ZADD', at, now, u)
redis.call('SREM', P .. ':minfo-in:' .. c, u)
redis.call('ZADD', uk, now, c)
redis.call('ZADD', all, now, c .. ':' .. u)
redis.call('HSET', apps, app, now)
for _, k in ipairs({h, at, uk}) do redis.call('PEXPIRE', k, TTL) end
redis.call('PEXPIRE', apps, RECENT)
local lists = {}
if listed > 0 then
  for i = 11, #ARGV do
    local users = redis.call('SRANDMEMBER', P .. ':members:' .. c .. ':' .. ARGV[i], listed)
    local infos = {}
    if #users > 0 then infos = redis.call('HMGET', h, unpack(users)) end
    lists[#lists + 1] = {users, infos}
  end
end
return {evicted, lists}
"#;

pub fn remember_script() -> redis::Script {
    redis::Script::new(&(library() + REMEMBER))
}

/// For the webhook script: a bridged member's join or leave through one app
/// (`merged`: it left through every app). Marks a join of a remembered
/// member, forgets one that joined and left every app, and appends {event i,
/// info (joins), {apps of `every` (a,b,…) where the channel has subscribers
/// (occupied, or members present) or was just authorized through}}.
pub const ON_MEMBER_CHANGE: &str = r#"
local function on_member_change(P, i, c, u, adding, merged, now, every, changes)
  local h, joined = P .. ':minfo:' .. c, P .. ':minfo-in:' .. c
  local info = false
  if adding then
    info = redis.call('HGET', h, u)
    if info then
      redis.call('SADD', joined, u)
      redis.call('PEXPIRE', joined, TTL)
    end
  elseif merged and redis.call('SISMEMBER', joined, u) == 1 then
    forget(P, c, u)
  end
  local apps = {}
  for app in string.gmatch(every, '[^,]+') do
    local seen = tonumber(redis.call('HGET', P .. ':minfo-app:' .. c, app) or 0)
    if redis.call('SISMEMBER', P .. ':occ:' .. c, app) == 1 or seen >= now - RECENT
      or redis.call('EXISTS', P .. ':members:' .. c .. ':' .. app) == 1 then
      apps[#apps + 1] = app
    end
  end
  changes[#changes + 1] = {i, info, apps}
end
"#;

/// Where the remember script runs: the store's connection, key prefix and script.
pub struct Remember<'a> {
    pub conn: Conn,
    pub prefix: &'a str,
    pub script: &'a Script,
}

impl Remember<'_> {
    /// Remembers `member`'s info (user id, info JSON), authorized through
    /// `via`, within `limits`; and, unless `listed` is 0, reads at most
    /// `listed` members present through each of `apps` with their infos.
    /// One round trip.
    pub async fn bridge_join(
        mut self,
        channel: &str,
        (user, info): (&str, &str),
        via: &str,
        apps: &[String],
        listed: usize,
        limits: &PresenceSettings,
    ) -> RedisResult<(Option<BridgeSnapshot>, Evicted)> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(self.prefix).arg(channel).arg(user).arg(info).arg(via);
        invocation.arg(crate::outbound::now_ms()).arg(limits.max_infos_per_channel);
        invocation.arg(limits.max_channels_per_user).arg(limits.max_infos).arg(listed).arg(apps);
        let reply: Value = bounded(invocation.invoke_async(&mut self.conn)).await?;
        let mut reply = items(reply).into_iter();
        let evicted: Vec<i64> = items(reply.next().unwrap_or(Value::Nil)).iter().map(int).collect();
        let evicted = match evicted[..] {
            [channel, user, total] => {
                Evicted { channel: channel as u64, user: user as u64, total: total as u64 }
            }
            _ => Evicted::default(),
        };
        if listed == 0 {
            return Ok((None, evicted));
        }
        let lists = items(reply.next().unwrap_or(Value::Nil)).into_iter().map(|list| {
            let mut list = items(list).into_iter();
            let users = items(list.next().unwrap_or(Value::Nil)).into_iter().filter_map(string);
            let infos = items(list.next().unwrap_or(Value::Nil)).into_iter().map(string);
            users.zip(infos.chain(std::iter::repeat(None))).collect()
        });
        Ok((Some(apps.iter().cloned().zip(lists).collect()), evicted))
    }
}
