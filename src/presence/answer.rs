//! The other apps' members in a bridged channel's authorization answer.

use crate::{metrics::Metrics, pusher::PresenceMember, state::Live, webhooks::Webhooks};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Bytes of member lists one answer may still carry (`presence.max_answer_bytes`,
/// shared by a batch's channels).
pub struct Budget(AtomicUsize);

impl Budget {
    pub fn new(bytes: usize) -> Self {
        Self(AtomicUsize::new(bytes))
    }
}

/// Who is being answered: the request's config, stores and client.
pub struct Answering<'a> {
    pub live: &'a Live,
    pub webhooks: &'a Webhooks,
    pub metrics: &'a Metrics,
    pub client: std::net::IpAddr,
    /// The app the authorization is for.
    pub via: &'a str,
    pub budget: &'a Budget,
}

impl Answering<'_> {
    /// The other apps' members of bridged `channel`, remembering `m`'s info. A
    /// list with members costs one more `[rate_limit]` token (a batch naming
    /// many big rooms pays for them), and the answer's lists stay within the
    /// budget: once one does not fit, the rest of the answer's channels are
    /// authorized without theirs (and none is read).
    pub async fn list(&self, channel: &str, m: &PresenceMember<'_>) -> Option<Value> {
        let info = serde_json::to_string(&m.user_info).unwrap_or_else(|_| "null".into());
        let settings = &self.live.settings;
        let others: Vec<String> = settings.apps.keys().filter(|a| a.as_str() != self.via).cloned().collect();
        let room = self.budget.0.load(Relaxed) > 0;
        let listed = if room { super::MAX_LISTED } else { 0 };
        let member = (m.user_id.as_ref(), info.as_str());
        let lists = super::members(
            self.webhooks,
            self.metrics,
            channel,
            member,
            self.via,
            &others,
            listed,
            &settings.presence,
        )
        .await;
        let omitted = |why| self.webhooks.bridge.omitted(self.metrics, why);
        if !room {
            omitted("answer_size");
        }
        let lists = lists?;
        if lists.iter().any(|(_, users)| !users.is_empty())
            && let Some(limiter) = &self.live.rate_limiter
            && !limiter.allow(self.client)
        {
            omitted("rate_limited");
            return None;
        }
        let size = super::list_size(&lists);
        if self.budget.0.fetch_update(Relaxed, Relaxed, |left| left.checked_sub(size)).is_err() {
            self.budget.0.store(0, Relaxed);
            omitted("answer_size");
            return None;
        }
        Some(super::to_json(lists))
    }
}
