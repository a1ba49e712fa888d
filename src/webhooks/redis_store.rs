//! Webhook merge state and outbox in Redis, for several replicas.
//!
//! A whole webhook is applied by one Lua script: the replay check, every
//! event's set update *and* the queueing of the events to forward, and the
//! replay mark, in one atomic step. So a webhook acknowledged to Pusher is
//! durably queued; two replicas receiving the two apps' webhooks for one
//! channel cannot both (or neither) forward the transition; and a call cut off
//! by the deadline either did nothing or did everything (a retry then finds
//! the replay mark and is acknowledged, not applied twice).
//! Delivery moves up to a batch of items to this replica's own processing
//! list in one call, and empties it once the host accepted them all.
//! At-least-once, with nothing stranded: a move
//! whose answer was lost (Redis died mid-call) is undone by returning this
//! replica's list to the outbox before the next one, and each replica keeps a
//! lease (`LEASE`) so the others re-queue what a crashed one left behind.
//! Every call is bounded (`redis_client::bounded`).

use super::MemberChange;
use crate::redis_client::{Conn, bounded, connect, int, string};
use crate::webhooks::config::ReplicaAcks;
use redis::{AsyncCommands, RedisResult, Script};
use serde_json::Value;
use std::{collections::HashMap, time::Duration};
/// How long a replica's processing list is its own without a heartbeat.
pub const LEASE: Duration = Duration::from_secs(30);

const APPLY_WEBHOOK: &str = r#"
-- KEYS[1] replay mark, KEYS[2] outbox; per event i (from 0): KEYS[3+2i] set, KEYS[4+2i] per-app index ('' = none)
-- ARGV[1] replay mark ttl ms, ARGV[2] app, ARGV[3] key prefix, ARGV[4] now ms, ARGV[5] every app (a,b,…);
-- per event i: ARGV[6+4i] mode (add|remove|push; join|leave: a member of a bridged channel), ARGV[7+4i]
-- index member, ARGV[8+4i] item, ARGV[9+4i] channel (join|leave).
-- Returns {queued, {member changes (on_member_change)}}, or {-1} for a repeat.
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end
local P, now, every = ARGV[3], tonumber(ARGV[4]), ARGV[5]
local queued, changes = 0, {}
for i = 0, (#ARGV - 5) / 4 - 1 do
  local set, index = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
  local mode, member, item = ARGV[6 + 4 * i], ARGV[7 + 4 * i], ARGV[8 + 4 * i]
  if mode == 'push' then
    redis.call('RPUSH', KEYS[2], item)
    queued = queued + 1
  else
    -- add: forwarded when the first app occupies it; remove: when the last one leaves
    local adding = mode == 'add' or mode == 'join'
    local op, transition = 'SREM', 0
    if adding then op, transition = 'SADD', 1 end
    local changed = redis.call(op, set, ARGV[2])
    local moved = 0
    if index ~= '' then moved = redis.call(op, index, member) end
    local merged = changed == 1 and redis.call('SCARD', set) == transition
    if merged then
      redis.call('RPUSH', KEYS[2], item)
      queued = queued + 1
    end
    -- Only a real change of who is present through this app is told to the other apps.
    if moved == 1 and (mode == 'join' or mode == 'leave') then
      on_member_change(P, i, ARGV[9 + 4 * i], member, adding, merged, now, every, changes)
    end
  end
end
redis.call('SET', KEYS[1], 1, 'PX', ARGV[1])
return {queued, changes}
"#;

/// KEYS[1] outbox, KEYS[2] processing; ARGV[1] at most this many. The items moved, in order.
const TAKE: &str = r#"
local moved = {}
for _ = 1, tonumber(ARGV[1]) do
  local item = redis.call('LMOVE', KEYS[1], KEYS[2], 'LEFT', 'RIGHT')
  if not item then break end
  moved[#moved + 1] = item
end
return moved
"#;

pub struct RedisStore {
    conn: Conn,
    /// `replica_acks`: writes that must reach replicas before they count.
    acks: ReplicaAcks,
    prefix: String,
    script: Script,
    /// Moves up to ARGV[1] items from the outbox to processing (`TAKE`).
    take: Script,
    /// Remembers a bridged member's info (`redis_infos`).
    pub(super) remember: Script,
    /// This process, for its processing list and lease.
    replica: String,
}

/// One change the webhook script reported, {event i, info or nil, {apps}}, with its event's channel and user.
fn member_change(events: &[Value], reply: redis::Value) -> Option<MemberChange> {
    let redis::Value::Array(parts) = reply else { return None };
    let mut parts = parts.into_iter();
    let seq = usize::try_from(int(&parts.next()?)).ok()?;
    let info = parts.next().and_then(string);
    let subscribed = match parts.next() {
        Some(redis::Value::Array(apps)) => apps.into_iter().filter_map(string).collect(),
        _ => Vec::new(),
    };
    let event = events.get(seq)?;
    let field = |name: &str| event.get(name).and_then(Value::as_str).map(str::to_owned);
    let present = field("name")? == "member_added";
    Some(MemberChange { seq, channel: field("channel")?, user: field("user_id")?, present, info, subscribed })
}

impl RedisStore {
    /// Connects lazily (on the first call), so a Redis that is down at start
    /// delays nothing; reconnects are tried once per call, within the deadline.
    pub fn new(url: &str, prefix: &str, acks: ReplicaAcks) -> anyhow::Result<Self> {
        Ok(Self {
            conn: connect(url)?,
            acks,
            prefix: prefix.to_owned(),
            script: Script::new(
                &(crate::presence::redis_infos::library()
                    + crate::presence::redis_infos::ON_MEMBER_CHANGE
                    + APPLY_WEBHOOK),
            ),
            take: Script::new(TAKE),
            remember: crate::presence::redis_infos::remember_script(),
            replica: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    pub(super) fn conn(&self) -> Conn {
        self.conn.clone()
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    fn outbox(&self) -> String {
        format!("{}:outbox", self.prefix)
    }
    fn processing(&self) -> String {
        format!("{}:processing:{}", self.prefix, self.replica)
    }
    fn lease(&self, replica: &str) -> String {
        format!("{}:replica:{replica}", self.prefix)
    }

    /// An outbox item carries the event and the `time_ms` of its source webhook.
    fn item(event: &Value, time_ms: u64) -> String {
        serde_json::json!({"time_ms": time_ms, "event": event}).to_string()
    }

    /// `(time_ms, event)` of an outbox item (items queued by older versions are bare events).
    pub fn unwrap_item(item: &str) -> (u64, Value) {
        let v: Value = serde_json::from_str(item).unwrap_or(Value::Null);
        match (v.get("time_ms").and_then(Value::as_u64), v.get("event")) {
            (Some(t), Some(e)) => (t, e.clone()),
            _ => (crate::outbound::now_ms(), v),
        }
    }

    /// Applies one verified webhook (`digest` of its app and body) unless it was
    /// applied within the window (on any replica; remembered for `mark_ttl_ms`):
    /// `None` for a repeat, else how many transitions were queued to forward and
    /// the changes of bridged channels' members through `app`. All of it, or nothing.
    pub async fn apply_webhook(
        &self,
        app: &str,
        digest: &[u8; 32],
        events: &[Value],
        time_ms: u64,
        mark_ttl_ms: u64,
        bridged: super::Bridged<'_>,
    ) -> RedisResult<Option<(usize, Vec<MemberChange>)>> {
        let presence = bridged.presence;
        let p = &self.prefix;
        let mut keys = vec![format!("{p}:seen:{}", hex::encode(digest)), self.outbox()];
        let mut args = vec![mark_ttl_ms.max(1).to_string(), app.to_owned(), p.clone()];
        args.extend([crate::outbound::now_ms().to_string(), bridged.apps.join(",")]);
        for event in events {
            let name = event.get("name").and_then(Value::as_str).unwrap_or_default();
            let channel = event.get("channel").and_then(Value::as_str).unwrap_or_default();
            let user = event.get("user_id").and_then(Value::as_str);
            let (mode, set, index, member) = match (name, user) {
                ("channel_occupied", _) => {
                    ("add", format!("{p}:occ:{channel}"), format!("{p}:occ-by-app:{app}"), channel)
                }
                ("channel_vacated", _) => {
                    ("remove", format!("{p}:occ:{channel}"), format!("{p}:occ-by-app:{app}"), channel)
                }
                // The per-app index is the presence bridge's view: who is present through which app.
                ("member_added", Some(u)) => {
                    let mode = if presence.bridged(channel) { "join" } else { "add" };
                    (mode, format!("{p}:mem:{channel}:{u}"), format!("{p}:members:{channel}:{app}"), u)
                }
                ("member_removed", Some(u)) => {
                    let mode = if presence.bridged(channel) { "leave" } else { "remove" };
                    (mode, format!("{p}:mem:{channel}:{u}"), format!("{p}:members:{channel}:{app}"), u)
                }
                _ => {
                    // Not a transition: forwarded as it came, saying which app sent it.
                    let mut e = event.clone();
                    if let Some(o) = e.as_object_mut() {
                        o.insert("source_app".into(), app.into());
                    }
                    keys.extend([String::new(), String::new()]);
                    args.extend(["push".into(), String::new(), Self::item(&e, time_ms), String::new()]);
                    continue;
                }
            };
            keys.extend([set, index]);
            args.extend([mode.to_owned(), member.to_owned(), Self::item(event, time_ms), channel.to_owned()]);
        }
        let reply = self.run(&self.script, &keys, &args).await?;
        let mut reply = match reply {
            redis::Value::Array(items) => items.into_iter(),
            _ => Vec::new().into_iter(),
        };
        let queued = reply.next().as_ref().map_or(-1, int);
        if queued < 0 {
            return Ok(None);
        }
        let changes = match reply.next() {
            Some(redis::Value::Array(changes)) => {
                changes.into_iter().filter_map(|c| member_change(events, c)).collect()
            }
            _ => Vec::new(),
        };
        Ok(Some((queued as usize, changes)))
    }

    /// Seeds one app's occupied channels and presence members (start-up reconcile).
    pub async fn seed(
        &self,
        app: &str,
        channels: &[String],
        members: &[(String, String)],
    ) -> RedisResult<()> {
        let p = &self.prefix;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for channel in channels {
            pipe.sadd(format!("{p}:occ:{channel}"), app).ignore();
            pipe.sadd(format!("{p}:occ-by-app:{app}"), channel).ignore();
        }
        for (channel, user_id) in members {
            pipe.sadd(format!("{p}:mem:{channel}:{user_id}"), app).ignore();
            pipe.sadd(format!("{p}:members:{channel}:{app}"), user_id).ignore();
        }
        bounded(pipe.query_async::<()>(&mut self.conn())).await
    }

    /// The channels occupied on `app`.
    pub async fn occupied_on(&self, app: &str) -> RedisResult<Vec<String>> {
        bounded(self.conn().smembers(format!("{}:occ-by-app:{app}", self.prefix))).await
    }

    /// The members present in `channel` through `app`.
    pub async fn members_on(&self, channel: &str, app: &str) -> RedisResult<Vec<String>> {
        bounded(self.conn().smembers(format!("{}:members:{channel}:{app}", self.prefix))).await
    }

    pub async fn occupied_counts(&self, apps: &[String]) -> RedisResult<HashMap<String, usize>> {
        let mut pipe = redis::pipe();
        for app in apps {
            pipe.scard(format!("{}:occ-by-app:{app}", self.prefix));
        }
        let counts: Vec<usize> = bounded(pipe.query_async(&mut self.conn())).await?;
        Ok(apps.iter().cloned().zip(counts).collect())
    }

    /// Up to `max` queued events, oldest first, moved to processing in one call
    /// (one round trip however many: a backlog drains in batches). Not the
    /// blocking BLMOVE: the connection is multiplexed, and a blocked command
    /// would stall the others. Processing is empty before (each batch is
    /// `done` before the next, or swept back after an error), so it then holds
    /// exactly this batch.
    pub async fn next_batch(&self, max: usize) -> RedisResult<Vec<String>> {
        let reply = self.run(&self.take, &[self.outbox(), self.processing()], &[max.to_string()]).await?;
        Ok(crate::redis_client::items(reply).into_iter().filter_map(string).collect())
    }

    /// The batch taken last was delivered: processing is emptied (idempotent, so
    /// it is retried until Redis takes it).
    pub async fn done(&self) -> RedisResult<()> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.processing());
        if self.acks.replicas > 0 {
            return self.replicated(&cmd).await.map(drop);
        }
        bounded(cmd.query_async::<()>(&mut self.conn())).await
    }

    /// `script` on `keys` and `args`: its reply, once `replica_acks` replicas have
    /// its writes, if set (loaded first if Redis does not know it).
    async fn run(&self, script: &Script, keys: &[String], args: &[String]) -> RedisResult<redis::Value> {
        if self.acks.replicas == 0 {
            let mut invocation = script.prepare_invoke();
            for k in keys {
                invocation.key(k);
            }
            for a in args {
                invocation.arg(a);
            }
            return bounded(invocation.invoke_async(&mut self.conn())).await;
        }
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash()).arg(keys.len()).arg(keys).arg(args);
        match self.replicated(&cmd).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                bounded(script.prepare_invoke().load_async(&mut self.conn())).await?;
                self.replicated(&cmd).await
            }
            other => other,
        }
    }

    /// `cmd`'s reply once `WAIT` says its write reached `replica_acks` replicas;
    /// else an error (the write may be on the primary only: not acknowledged).
    /// One pipeline on one connection: a reconnect between the two would make
    /// `WAIT` answer for a connection that wrote nothing.
    async fn replicated(&self, cmd: &redis::Cmd) -> RedisResult<redis::Value> {
        let ReplicaAcks { replicas, timeout } = self.acks;
        let mut pipe = redis::pipe();
        pipe.add_command(cmd.clone()).cmd("WAIT").arg(replicas).arg(timeout.as_millis() as u64);
        let (reply, acked): (redis::Value, u32) = bounded(pipe.query_async(&mut self.conn())).await?;
        if acked < replicas {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "write not acknowledged by enough replicas",
                format!("{acked} of {replicas} within {} ms", timeout.as_millis()),
            )));
        }
        Ok(reply)
    }

    /// Renews this replica's lease on its processing list.
    pub async fn heartbeat(&self) -> RedisResult<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.lease(&self.replica)).arg(1).arg("PX").arg(LEASE.as_millis() as u64);
        bounded(cmd.query_async::<()>(&mut self.conn())).await
    }

    /// Returns this replica's processing list to the outbox head, in order.
    /// Called only while it delivers nothing: what is there was stranded by a
    /// move whose answer was lost.
    pub async fn requeue_own(&self) -> RedisResult<usize> {
        self.requeue(&self.processing()).await
    }

    /// Re-queues what replicas whose lease ran out (crashed, killed) left in
    /// their processing lists, and the shared list of versions before leases.
    pub async fn requeue_orphans(&self) -> RedisResult<usize> {
        let pattern = format!("{}:processing*", self.prefix);
        let mut keys: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(100);
            let (next, batch): (u64, Vec<String>) = bounded(cmd.query_async(&mut self.conn())).await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut moved = 0;
        for key in keys {
            let owner = key.strip_prefix(&format!("{}:processing:", self.prefix));
            let alive = match owner {
                Some(replica) if replica == self.replica => true,
                Some(replica) => bounded(self.conn().exists(self.lease(replica))).await?,
                None => false, // the shared list of older versions
            };
            if !alive {
                moved += self.requeue(&key).await?;
            }
        }
        Ok(moved)
    }

    async fn requeue(&self, list: &str) -> RedisResult<usize> {
        let mut moved = 0;
        loop {
            let mut cmd = redis::cmd("LMOVE");
            cmd.arg(list).arg(self.outbox()).arg("RIGHT").arg("LEFT");
            let item: Option<String> = bounded(cmd.query_async(&mut self.conn())).await?;
            if item.is_none() {
                return Ok(moved);
            }
            moved += 1;
        }
    }
}
