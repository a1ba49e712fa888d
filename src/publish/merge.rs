//! Merging the target apps' answers into one, pure: channel lists united with
//! counts summed, a channel occupied if it is on any app, presence users
//! united by id (a user connected through both apps counts once).

use serde_json::{Map, Value, json};

fn add_counts(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Value::Number(a)), Value::Number(b)) => {
                *into.get_mut(k).unwrap() = json!(a.as_u64().unwrap_or(0) + b.as_u64().unwrap_or(0));
            }
            (Some(Value::Bool(a)), Value::Bool(b)) => *a = *a || *b,
            (None, _) => {
                into.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
}

/// `{"channels":{name:{counts}}}` bodies → one, with counts summed.
pub fn channels(bodies: &[Value]) -> Option<Value> {
    let mut channels = Map::new();
    let mut any = false;
    for b in bodies {
        if let Some(Value::Object(cs)) = b.get("channels") {
            any = true;
            for (name, info) in cs {
                let entry = channels.entry(name.clone()).or_insert_with(|| json!({}));
                if let (Value::Object(into), Value::Object(from)) = (entry, info) {
                    add_counts(into, from);
                }
            }
        }
    }
    any.then(|| json!({ "channels": channels }))
}

/// `{"users":[{"id":…}]}` bodies → one, each id once.
pub fn users(bodies: &[Value]) -> Value {
    let mut seen = std::collections::BTreeSet::new();
    let users: Vec<Value> = bodies
        .iter()
        .filter_map(|b| b.get("users")?.as_array().cloned())
        .flatten()
        .filter(|u| seen.insert(u.get("id").map(Value::to_string).unwrap_or_default()))
        .collect();
    json!({ "users": users })
}

/// One channel's info objects → one, with counts summed and flags or-ed.
pub fn one_channel(bodies: &[Value]) -> Value {
    let mut one = Map::new();
    for b in bodies {
        if let Value::Object(o) = b {
            add_counts(&mut one, o);
        }
    }
    Value::Object(one)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_lists_are_united_with_counts_summed() {
        let a = json!({"channels": {"presence-a": {"user_count": 2}, "private-x": {}}});
        let b = json!({"channels": {"presence-a": {"user_count": 3}, "private-y": {}}});
        assert_eq!(
            channels(&[a, b]).unwrap(),
            json!({"channels": {"presence-a": {"user_count": 5}, "private-x": {}, "private-y": {}}})
        );
    }

    #[test]
    fn users_are_united_by_id_and_one_channel_is_summed() {
        let a = json!({"users": [{"id": "1"}, {"id": "2"}]});
        let b = json!({"users": [{"id": "2"}, {"id": "3"}]});
        assert_eq!(users(&[a, b]), json!({"users": [{"id": "1"}, {"id": "2"}, {"id": "3"}]}));
        let a = json!({"occupied": false, "subscription_count": 1});
        let b = json!({"occupied": true, "subscription_count": 2});
        assert_eq!(one_channel(&[a, b]), json!({"occupied": true, "subscription_count": 3}));
    }
}
