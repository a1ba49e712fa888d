//! The presence bridge: during a move, members of a bridged presence channel
//! (`[presence] bridge`) on one app are shown to the members on the others.
//!
//! Each app's webhooks say who joined and left through it (the merge state
//! keeps who is present through which app); every real change of that (not a
//! repeated join, nor a leave of someone not there) is published, through the
//! REST API of each other app where the channel has subscribers, as an event
//! of our own (`EVENT`) on the same channel (`publisher`). The JS helper merges
//! those into the channel's members, so app code sees one list. A client
//! learns the other apps' current members in its authorization answer
//! (`presence_bridge`): only someone the host lets into the channel learns its
//! members, as with Pusher's own member list.
//! Changes carry the source webhook's `time_ms` and their place in it (`seq`):
//! replicas publish concurrently, and the helper keeps the latest per member.
//!
//! The feature's parts: `config` (`[presence]`), `infos` and `redis_infos`
//! (the remembered member infos, bounded alike in memory and in Redis, kept
//! by the webhook merge store so a `member_removed` forgets in the same step),
//! `queue` (the bounded changes to publish) and `publisher` (its task).

pub(crate) mod answer;
pub(crate) mod config;
pub(crate) mod infos;
pub(crate) mod publisher;
pub(crate) mod queue;
pub(crate) mod redis_infos;

use crate::{metrics::Metrics, presence::infos::BridgeSnapshot};
use serde_json::Value;

/// The event name: no app publishes it (pusher-js hands it to the helper's merge).
pub const EVENT: &str = "dual-auth:presence";
/// Members of one app listed in an authorization answer: Pusher's own limit
/// per presence channel, so a list is never longer than one app's real one.
pub const MAX_LISTED: usize = 100;

/// For a bridged channel's authorization: remembers `member`'s info (user id,
/// info JSON) as authorized through `via`, and unless `listed` is 0 reads the
/// other apps' members (at most `listed` each). None when not listed, or when
/// Redis cannot answer (the channel is authorized anyway: the members come
/// with their next changes).
#[allow(clippy::too_many_arguments)]
pub async fn members(
    webhooks: &crate::webhooks::Webhooks,
    metrics: &Metrics,
    channel: &str,
    member: (&str, &str),
    via: &str,
    others: &[String],
    listed: usize,
    limits: &crate::config::PresenceSettings,
) -> Option<BridgeSnapshot> {
    match webhooks.bridge_join(channel, member, via, others, listed, limits).await {
        Ok((lists, evicted)) => {
            webhooks.bridge.evicted(metrics, evicted);
            lists
        }
        Err(e) => {
            tracing::warn!(error = %e, "presence bridge: members not read (redis)");
            None
        }
    }
}

/// About the bytes `lists` take in an answer (as `to_json` writes them).
pub fn list_size(lists: &BridgeSnapshot) -> usize {
    let member = |(u, info): &(String, Option<String>)| u.len() + info.as_ref().map_or(4, String::len) + 4;
    lists.iter().map(|(app, users)| app.len() + 6 + users.iter().map(member).sum::<usize>()).sum()
}

/// `{"<app>": {"<user_id>": <user_info or null>, …}, …}`
pub fn to_json(lists: BridgeSnapshot) -> Value {
    let info = |i: Option<String>| i.and_then(|i| serde_json::from_str(&i).ok()).unwrap_or(Value::Null);
    Value::Object(
        lists
            .into_iter()
            .map(|(app, users)| (app, Value::Object(users.into_iter().map(|(u, i)| (u, info(i))).collect())))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_size_estimate_covers_the_json_written() {
        let lists = vec![
            ("old".to_owned(), vec![("u1".to_owned(), Some(r#"{"name":"One"}"#.to_owned()))]),
            ("new".to_owned(), vec![("u2".to_owned(), None), ("u3".to_owned(), Some("{}".to_owned()))]),
            ("third".to_owned(), vec![]),
        ];
        let written = super::to_json(lists.clone()).to_string().len();
        let estimate = super::list_size(&lists);
        assert!(estimate >= written && estimate <= written + 32, "{estimate} vs {written}");
    }
}
