//! The one Redis client every feature shares (webhook merge and outbox,
//! remembered presence infos, the fleet view): a lazy, reconnecting
//! connection, a deadline on every call, and the reply helpers.
//!
//! Every call is bounded by `DEADLINE` (and the connection by its own connect
//! and response timeouts): during an outage a request is refused at once
//! rather than held until Redis returns.

use redis::{
    RedisError, RedisResult, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use std::{future::Future, time::Duration};

/// The longest any one Redis call may take, connecting included.
pub const DEADLINE: Duration = Duration::from_millis(1_000);

/// `fut`, or a timeout error once `DEADLINE` has passed.
pub async fn bounded<T>(fut: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
    tokio::time::timeout(DEADLINE, fut).await.unwrap_or_else(|_| {
        Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from redis within {} ms", DEADLINE.as_millis()),
        )))
    })
}

/// A lazy connection (made on the first call, so a Redis that is down at start
/// delays nothing), reconnecting once per call within the deadline.
pub fn connect(url: &str) -> anyhow::Result<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(DEADLINE / 2))
        .set_response_timeout(Some(DEADLINE))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(DEADLINE / 4);
    Ok(ConnectionManager::new_lazy_with_config(redis::Client::open(url)?, config)?)
}

/// A script reply's array (anything else: empty).
pub fn items(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

/// A script reply's string, if it is one.
pub fn string(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// A script reply's integer (anything else: 0).
pub fn int(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        _ => 0,
    }
}
