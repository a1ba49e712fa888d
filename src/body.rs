//! Reading a request body: one reader for every surface (auth, publish,
//! webhooks), so each has a size cap and the same deadline.

use actix_web::{HttpRequest, web};
use futures_util::StreamExt;
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("request body was not received in time")]
    Timeout,
    #[error("cannot read the body: {0}")]
    Read(String),
}

impl BodyError {
    /// Status and stable code, the same on every surface.
    pub fn status_and_code(&self) -> (actix_web::http::StatusCode, &'static str) {
        use actix_web::http::StatusCode;
        match self {
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::Timeout => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Self::Read(_) => (StatusCode::BAD_REQUEST, "malformed_body"),
        }
    }
}

/// Reads the body with a size cap and a deadline for the whole body, refusing
/// early when Content-Length already says it is too large. The buffer is sized
/// from Content-Length (capped), so a held body costs what it sent, not double.
pub async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    deadline: Duration,
) -> Result<web::Bytes, BodyError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let read = async {
        // The declared body come whole in its first chunk (a form post usually
        // does), taken as it is rather than copied.
        let mut whole: Option<web::Bytes> = None;
        let mut buf = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|e| BodyError::Read(e.to_string()))?;
            if let Some(first) = whole.take() {
                // More than declared (actix reads an Upgrade request to its end): as any other body.
                buf.reserve(first.len() + chunk.len());
                buf.extend_from_slice(&first);
            }
            if buf.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            if buf.is_empty() && declared == Some(chunk.len() as u64) {
                whole = Some(chunk);
                continue;
            }
            if buf.capacity() == 0 {
                buf.reserve(declared.map_or(chunk.len(), |len| len as usize));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(whole.unwrap_or_else(|| buf.freeze()))
    };
    let mut read = std::pin::pin!(read);
    // A body already here (a form post usually is) needs no timer. actix polls a
    // handler as soon as the head is parsed, before it hands over a body that came
    // in the same read: one turn back to it first, and the body is usually here.
    if let Some(done) = futures_util::FutureExt::now_or_never(read.as_mut()) {
        return done;
    }
    YieldOnce(false).await;
    if let Some(done) = futures_util::FutureExt::now_or_never(read.as_mut()) {
        return done;
    }
    tokio::time::timeout(deadline, read).await.map_err(|_| BodyError::Timeout)?
}

/// Pending once, woken at once: the connection's task runs its other work (the
/// body it has already read) and polls the handler again. Not tokio's
/// `yield_now`, which defers the wake-up past a poll of the I/O driver (a
/// syscall per request).
struct YieldOnce(bool);

impl std::future::Future for YieldOnce {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if std::mem::replace(&mut self.0, true) {
            return std::task::Poll::Ready(());
        }
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}
