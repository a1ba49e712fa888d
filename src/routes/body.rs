use crate::error::AuthError;
use actix_web::{HttpRequest, web};
use std::time::Duration;

/// Reads the body with a size cap (413) and a deadline (408), refusing early
/// when Content-Length already says it is too large.
pub async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    deadline: Duration,
) -> Result<web::Bytes, AuthError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(AuthError::BodyTooLarge(limit));
    }
    match tokio::time::timeout(deadline, payload.to_bytes_limited(limit)).await {
        Err(_) => Err(AuthError::BodyTimeout),
        Ok(Err(_)) => Err(AuthError::BodyTooLarge(limit)),
        Ok(Ok(Err(e))) => {
            Err(crate::auth_request::RequestError::Malformed(format!("cannot read the body: {e}")).into())
        }
        Ok(Ok(Ok(bytes))) => Ok(bytes),
    }
}
