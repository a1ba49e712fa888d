//! The buffer in Redis: a Stream per channel (`<prefix>:recovery:<channel>`),
//! trimmed to the window and the per-channel cap on every write, expiring two
//! windows after its last write. A position is `r:<stream id>`. The highest
//! id trimmed is kept beside the stream, so a reader from before it is told
//! of the gap; an event Redis could not take leaves a gap marker on its
//! channel once Redis is back.

use super::{
    ChannelRead, Event,
    buffer::{GAP_EVICTED, GAP_UNKNOWN},
    config::RecoverySettings,
};
use crate::redis_client::{Conn, bounded, items, string};
use redis::{RedisResult, Script, Value};
use std::{collections::HashSet, sync::Mutex};

/// A reader across this missed writes during a Redis outage.
pub const GAP_OUTAGE: &str = "buffer_outage";
/// Channels whose gap marker waits for Redis to come back.
const MAX_PENDING_GAPS: usize = 10_000;

const NOW: &str =
    "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// Compares two stream ids (`<ms>-<seq>`; ms fits a Lua number exactly).
const CMP: &str = r#"
local function id(s)
  local d = string.find(s, '-', 1, true)
  return tonumber(string.sub(s, 1, d - 1)), tonumber(string.sub(s, d + 1))
end
local function above(a, b)
  local am, as = id(a)
  local bm, bs = id(b)
  return am > bm or (am == bm and as > bs)
end
"#;

/// ARGV: prefix, max per channel, window ms, ttl ms, then for each event of
/// a publish (a batch's ten in one call): gap (1: a marker, not an event),
/// name, data, socket id ('' for none), how many channels, the channels.
/// Trims to the cap and the window, remembering the highest id trimmed
/// (`recovery-lost:<c>`: Redis's own `max-deleted-entry-id` does not count
/// trimming). Returns the id written on each channel, events in order.
const RECORD: &str = r#"
local P, maxlen, window, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local ids = {}
local at = 5
while at <= #ARGV do
local gap, name, data, sid, n = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], tonumber(ARGV[at + 4])
local first = at + 5
at = first + n
for i = first, at - 1 do
  local k, lk = P .. ':recovery:' .. ARGV[i], P .. ':recovery-lost:' .. ARGV[i]
  if gap == '1' then
    ids[#ids + 1] = redis.call('XADD', k, '*', 'g', '1')
  elseif sid == '' then
    ids[#ids + 1] = redis.call('XADD', k, '*', 'e', name, 'd', data)
  else
    ids[#ids + 1] = redis.call('XADD', k, '*', 'e', name, 'd', data, 's', sid)
  end
  local lost = nil
  local excess = redis.call('XLEN', k) - maxlen
  if excess > 0 then
    local old = redis.call('XRANGE', k, '-', '+', 'COUNT', excess)
    lost = old[#old][1]
  end
  local minid = tostring(now - window) .. '-0'
  -- XREVRANGE from below a stream's oldest entry walks the whole stream (Redis 7.0:
  -- 2.2 ms at 10,000 entries, on every write); the oldest entry, read forward, says
  -- at once whether anything is stale.
  local oldest = redis.call('XRANGE', k, '-', '+', 'COUNT', 1)
  if #oldest > 0 and above(minid, oldest[1][1]) then
    local stale = redis.call('XREVRANGE', k, '(' .. minid, '-', 'COUNT', 1)
    if #stale > 0 and (lost == nil or above(stale[1][1], lost)) then lost = stale[1][1] end
  end
  if lost then
    local prev = redis.call('GET', lk)
    if not prev or above(lost, prev) then redis.call('SET', lk, lost) end
    redis.call('XTRIM', k, 'MAXLEN', maxlen)
    redis.call('XTRIM', k, 'MINID', minid)
  end
  redis.call('PEXPIRE', k, ttl)
  if redis.call('EXISTS', lk) == 1 then redis.call('PEXPIRE', lk, ttl) end
end
end
return ids
"#;

/// ARGV: prefix, channel, since ('' for an anchor), count. Returns {last id,
/// highest trimmed id, entries, now ms, last id ever written}; an empty last
/// id: no stream. The last written may be above the last kept: an event taken
/// back (no app took it) whose id a reader may already have.
const READ: &str = r#"
local P, c, since, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k = P .. ':recovery:' .. c
local lost = redis.call('GET', P .. ':recovery-lost:' .. c) or '0-0'
if redis.call('EXISTS', k) == 0 then return {'', lost, {}, now, ''} end
local info = redis.call('XINFO', 'STREAM', k)
local written = ''
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then written = info[i + 1] end
end
local top = redis.call('XREVRANGE', k, '+', '-', 'COUNT', 1)
if #top == 0 then return {'', lost, {}, now, written} end
local last = top[1][1]
local entries = {}
if since ~= '' then entries = redis.call('XRANGE', k, '(' .. since, '+', 'COUNT', count) end
return {last, lost, entries, now, written}
"#;

/// ARGV: prefix, then channel and id pairs: the events taken back.
const FORGET: &str = r#"
for i = 2, #ARGV, 2 do redis.call('XDEL', ARGV[1] .. ':recovery:' .. ARGV[i], ARGV[i + 1]) end
return 0
"#;

pub struct Streams {
    conn: Conn,
    prefix: String,
    record: Script,
    read: Script,
    forget: Script,
    pending_gaps: Mutex<HashSet<String>>,
    burst: crate::burst::Burst,
}

/// A stream id (`<ms>-<seq>`), compared as Redis does.
fn id(s: &str) -> Option<(u64, u64)> {
    let (ms, seq) = s.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

impl Streams {
    pub fn new(url: &str, prefix: &str) -> anyhow::Result<Self> {
        Ok(Self {
            conn: crate::redis_client::connect(url)?,
            prefix: prefix.to_owned(),
            record: Script::new(&format!("{NOW}{CMP}{RECORD}")),
            read: Script::new(&format!("{NOW}{READ}")),
            forget: Script::new(FORGET),
            pending_gaps: Mutex::default(),
            burst: crate::burst::Burst::default(),
        })
    }

    /// One script call for all of `events` (an event None: a gap marker).
    async fn write(
        &self,
        events: &[(&[&str], Option<&Event>)],
        limits: &RecoverySettings,
    ) -> RedisResult<Vec<String>> {
        let window = limits.window.as_millis() as u64;
        let mut call = self.record.prepare_invoke();
        call.arg(&self.prefix).arg(limits.max_events_per_channel).arg(window).arg(window * 2);
        for (channels, event) in events {
            match event {
                Some(e) => call.arg("0").arg(&e.name).arg(&e.data).arg(e.socket_id.as_deref().unwrap_or("")),
                None => call.arg("1").arg("").arg("").arg(""),
            };
            call.arg(channels.len()).arg(*channels);
        }
        bounded(call.invoke_async(&mut self.conn.clone())).await
    }

    /// Keeps each of `events` on its channels, all in one round trip: the ids
    /// each got on its channels, or None (counted, and a gap marker on those
    /// channels for later readers once Redis is back).
    pub async fn record(
        &self,
        events: &[(Vec<&str>, &Event)],
        limits: &RecoverySettings,
    ) -> Option<Vec<Vec<String>>> {
        let pending: Vec<String> = self.pending_gaps.lock().unwrap().iter().cloned().collect();
        if !pending.is_empty() {
            let names: Vec<&str> = pending.iter().map(String::as_str).collect();
            if self.write(&[(&names, None)], limits).await.is_ok() {
                let mut gaps = self.pending_gaps.lock().unwrap();
                for name in &pending {
                    gaps.remove(name);
                }
            }
        }
        let calls: Vec<(&[&str], Option<&Event>)> =
            events.iter().map(|(c, e)| (c.as_slice(), Some(*e))).collect();
        match self.write(&calls, limits).await {
            Ok(ids) => {
                let mut ids = ids.into_iter();
                Some(events.iter().map(|(channels, _)| ids.by_ref().take(channels.len()).collect()).collect())
            }
            Err(e) => {
                let mut gaps = self.pending_gaps.lock().unwrap();
                for c in events.iter().flat_map(|(channels, _)| channels) {
                    if gaps.len() < MAX_PENDING_GAPS {
                        gaps.insert((*c).to_owned());
                    }
                }
                drop(gaps);
                if let Some(missed) = self.burst.hit(events.len() as u64) {
                    tracing::warn!(error = %e, missed, "recovery: events not buffered (redis); readers will be told of the gap");
                }
                None
            }
        }
    }

    /// Takes back events `record` kept (`(channel, id)`); an error leaves them.
    pub async fn forget(&self, kept: &[(String, String)]) {
        let mut call = self.forget.prepare_invoke();
        call.arg(&self.prefix);
        for (channel, id) in kept {
            call.arg(channel).arg(id);
        }
        if let Err(e) = bounded(call.invoke_async::<i64>(&mut self.conn.clone())).await {
            tracing::warn!(error = %e, "recovery: an event no app took could not be taken back (redis)");
        }
    }

    pub async fn read(
        &self,
        channel: &str,
        since: Option<&str>,
        limits: &RecoverySettings,
    ) -> RedisResult<ChannelRead> {
        let since_id = match since {
            None => None,
            Some(s) => match s.strip_prefix("r:").filter(|s| id(s).is_some()) {
                Some(s) => Some(s),
                // Not one of ours: a gap, and a position to go on from (an anchor's).
                None => {
                    let anchor = Box::pin(self.read(channel, None, limits)).await?;
                    return Ok(ChannelRead { gap: Some(GAP_UNKNOWN), ..anchor });
                }
            },
        };
        let mut call = self.read.prepare_invoke();
        call.arg(&self.prefix).arg(channel).arg(since_id.unwrap_or("")).arg(limits.max_events_per_channel);
        let reply: Value = bounded(call.invoke_async(&mut self.conn.clone())).await?;
        let mut reply = items(reply).into_iter();
        let last = reply.next().and_then(string).unwrap_or_default();
        let deleted = reply.next().and_then(string).unwrap_or_default();
        let entries = items(reply.next().unwrap_or(Value::Nil));
        let now = reply.next().map(|v| crate::redis_client::int(&v)).unwrap_or(0) as u64;
        let written = reply.next().and_then(string).unwrap_or_default();
        let window = limits.window.as_millis() as u64;
        let Some(since) = since_id else {
            // An anchor: the last id, or (no stream yet) just before now.
            let head = if last.is_empty() { format!("{}-0", now.saturating_sub(1)) } else { last };
            return Ok(ChannelRead { events: Vec::new(), position: format!("r:{head}"), gap: None });
        };
        let s = id(since).expect("checked above");
        if last.is_empty() {
            // Nothing kept: either nothing came since, or all of it is gone. Either
            // way the reader goes on from now (a later event's id is at least now).
            let trimmed = id(&deleted).is_some_and(|d| s < d);
            let gap = (trimmed || s.0 + window < now).then_some(GAP_EVICTED);
            let position = format!("r:{}-0", now.saturating_sub(1).max(s.0));
            return Ok(ChannelRead { events: Vec::new(), position, gap });
        }
        if id(&last).is_some_and(|l| s > l) {
            if id(&written).is_some_and(|w| s <= w) {
                // Past the last kept, but one of ours: an event taken back. Nothing new.
                return Ok(ChannelRead { events: Vec::new(), position: format!("r:{since}"), gap: None });
            }
            return Ok(ChannelRead {
                events: Vec::new(),
                position: format!("r:{last}"),
                gap: Some(GAP_UNKNOWN),
            });
        }
        let mut gap = id(&deleted).is_some_and(|d| s < d).then_some(GAP_EVICTED);
        let full = entries.len() >= limits.max_events_per_channel;
        let mut events = Vec::new();
        let mut position = last;
        for entry in entries {
            let mut entry = items(entry).into_iter();
            let entry_id = entry.next().and_then(string).unwrap_or_default();
            let fields = items(entry.next().unwrap_or(Value::Nil));
            let mut fields = fields.into_iter().filter_map(string);
            let (mut name, mut data, mut socket_id, mut marker) = (None, None, None, false);
            while let (Some(k), Some(v)) = (fields.next(), fields.next()) {
                match k.as_str() {
                    "e" => name = Some(v),
                    "d" => data = Some(v),
                    "s" => socket_id = Some(v),
                    "g" => marker = true,
                    _ => {}
                }
            }
            if full {
                position = entry_id.clone();
            }
            match (marker, name, data) {
                (true, ..) => gap = gap.or(Some(GAP_OUTAGE)),
                (false, Some(name), Some(data)) => {
                    events.push(Event { seq: 0, at_ms: 0, name, data, socket_id })
                }
                _ => {}
            }
        }
        Ok(ChannelRead { events, position: format!("r:{position}"), gap })
    }
}
