//! Merging the webhooks of several apps into one stream, pure.
//!
//! A channel is occupied while it is occupied on any app: `channel_occupied`
//! goes out when the first app reports it, `channel_vacated` only when the last
//! one does. Presence members are merged per user id the same way. Events
//! without state (`client_event`, `subscription_count`, `cache_miss`, and any
//! unknown kind) pass through with `source_app` added.

use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};

#[derive(Debug, Default)]
pub struct MergeState {
    /// channel → apps where it is occupied
    occupied: HashMap<String, BTreeSet<String>>,
    /// (channel, user id) → apps where the member is present
    members: HashMap<(String, String), BTreeSet<String>>,
    /// (channel, app) → the user ids present on that app (the presence bridge's view).
    by_app: HashMap<(String, String), BTreeSet<String>>,
}

fn field<'a>(event: &'a Value, name: &str) -> Option<&'a str> {
    event.get(name).and_then(Value::as_str)
}

impl MergeState {
    /// Applies one event from `app`; returns what to forward (possibly nothing).
    pub fn apply(&mut self, app: &str, event: &Value) -> Option<Value> {
        self.apply_tracked(app, event).0
    }

    /// As `apply`, and whether the members present through `app` changed:
    /// `Some(true)` a user joined through it, `Some(false)` one left, `None`
    /// no change (a repeated join, a leave of someone not there, any other event).
    pub fn apply_tracked(&mut self, app: &str, event: &Value) -> (Option<Value>, Option<bool>) {
        let Some(name) = field(event, "name") else { return (None, None) };
        let channel = field(event, "channel").unwrap_or_default().to_owned();
        let forward = match name {
            "channel_occupied" => {
                let apps = self.occupied.entry(channel).or_default();
                let first = apps.is_empty();
                apps.insert(app.to_owned());
                first.then(|| event.clone())
            }
            "channel_vacated" => {
                let Some(apps) = self.occupied.get_mut(&channel) else { return (None, None) };
                if !apps.remove(app) {
                    return (None, None); // not occupied through this app: nothing changes
                }
                apps.is_empty().then(|| {
                    self.occupied.remove(&channel);
                    event.clone()
                })
            }
            "member_added" => {
                let Some(user) = field(event, "user_id").map(str::to_owned) else { return (None, None) };
                let moved =
                    self.by_app.entry((channel.clone(), app.to_owned())).or_default().insert(user.clone());
                let apps = self.members.entry((channel, user)).or_default();
                let first = apps.is_empty();
                apps.insert(app.to_owned());
                return (first.then(|| event.clone()), moved.then_some(true));
            }
            "member_removed" => {
                let Some(user) = field(event, "user_id") else { return (None, None) };
                let key = (channel, user.to_owned());
                let on_app = (key.0.clone(), app.to_owned());
                let mut moved = false;
                if let Some(users) = self.by_app.get_mut(&on_app) {
                    moved = users.remove(&key.1);
                    if users.is_empty() {
                        self.by_app.remove(&on_app);
                    }
                }
                let moved = moved.then_some(false);
                let Some(apps) = self.members.get_mut(&key) else { return (None, moved) };
                if !apps.remove(app) {
                    return (None, moved);
                }
                let last = apps.is_empty();
                if last {
                    self.members.remove(&key);
                }
                return (last.then(|| event.clone()), moved);
            }
            _ => {
                let mut e = event.clone();
                if let Some(o) = e.as_object_mut() {
                    o.insert("source_app".into(), json!(app));
                }
                Some(e)
            }
        };
        (forward, None)
    }

    /// Occupied channels per app.
    pub fn occupied_counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for apps in self.occupied.values() {
            for app in apps {
                *counts.entry(app.clone()).or_default() += 1;
            }
        }
        counts
    }

    /// The channels occupied on `app`.
    pub fn occupied_on(&self, app: &str) -> Vec<String> {
        self.occupied.iter().filter(|(_, apps)| apps.contains(app)).map(|(c, _)| c.clone()).collect()
    }

    /// Marks a channel occupied on `app` without emitting (start-up reconciliation).
    pub fn seed_occupied(&mut self, app: &str, channel: &str) {
        self.occupied.entry(channel.to_owned()).or_default().insert(app.to_owned());
    }

    /// Marks a presence member present on `app` without emitting (start-up reconciliation).
    pub fn seed_member(&mut self, app: &str, channel: &str, user_id: &str) {
        self.members.entry((channel.to_owned(), user_id.to_owned())).or_default().insert(app.to_owned());
        self.by_app.entry((channel.to_owned(), app.to_owned())).or_default().insert(user_id.to_owned());
    }

    /// The user ids present in `channel` through `app`, at most `limit`.
    pub fn members_on(&self, channel: &str, app: &str, limit: usize) -> Vec<String> {
        self.by_app
            .get(&(channel.to_owned(), app.to_owned()))
            .map(|u| u.iter().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    /// Whether any member is present in `channel` through `app`.
    pub fn has_members(&self, channel: &str, app: &str) -> bool {
        self.by_app.contains_key(&(channel.to_owned(), app.to_owned()))
    }

    /// The apps where `channel` is occupied.
    pub fn occupied_by(&self, channel: &str) -> impl Iterator<Item = &str> {
        self.occupied.get(channel).into_iter().flatten().map(String::as_str)
    }

    /// Whether `user_id` is present in `channel` through any app.
    pub fn is_member(&self, channel: &str, user_id: &str) -> bool {
        self.members.contains_key(&(channel.to_owned(), user_id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(name: &str, channel: &str) -> Value {
        json!({"name": name, "channel": channel})
    }

    #[test]
    fn a_channel_is_vacated_only_when_every_app_vacated_it() {
        let mut s = MergeState::default();
        assert!(s.apply("old", &ev("channel_occupied", "c")).is_some());
        assert!(s.apply("new", &ev("channel_occupied", "c")).is_none());
        assert!(s.apply("old", &ev("channel_vacated", "c")).is_none());
        assert_eq!(s.occupied_counts().get("new"), Some(&1));
        assert!(s.apply("new", &ev("channel_vacated", "c")).is_some());
        assert!(s.apply("new", &ev("channel_vacated", "c")).is_none(), "a repeat changes nothing");
        assert!(s.occupied_counts().is_empty());
    }

    #[test]
    fn members_are_merged_per_user_id() {
        let mut s = MergeState::default();
        let add = json!({"name": "member_added", "channel": "presence-r", "user_id": "42"});
        let rm = json!({"name": "member_removed", "channel": "presence-r", "user_id": "42"});
        assert!(s.apply("old", &add).is_some());
        assert!(s.apply("new", &add).is_none(), "present through either app counts once");
        assert_eq!(
            (s.members_on("presence-r", "old", 100), s.members_on("presence-r", "new", 100)),
            (vec!["42".to_owned()], vec!["42".to_owned()])
        );
        assert!(s.apply("new", &rm).is_none());
        assert_eq!(s.members_on("presence-r", "new", 100), Vec::<String>::new(), "per app");
        assert_eq!(s.members_on("presence-r", "old", 100), vec!["42".to_owned()]);
        assert_eq!(s.apply("old", &rm), Some(rm.clone()));
        assert!(!s.is_member("presence-r", "42"));
    }

    #[test]
    fn a_seeded_member_is_removed_by_a_later_webhook() {
        let mut s = MergeState::default();
        s.seed_member("old", "presence-r", "42");
        let rm = json!({"name": "member_removed", "channel": "presence-r", "user_id": "42"});
        assert_eq!(s.apply("old", &rm), Some(rm.clone()));
    }

    #[test]
    fn stateless_events_pass_through_with_the_source_app() {
        let mut s = MergeState::default();
        let e = json!({"name": "client_event", "channel": "private-a", "event": "client-x", "data": "{}", "socket_id": "1.1"});
        let out = s.apply("new", &e).unwrap();
        assert_eq!(out["source_app"], "new");
        assert_eq!(out["event"], "client-x");
    }
}
