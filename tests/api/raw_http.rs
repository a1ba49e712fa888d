//! What the raw-socket hosts of these tests share: reading one HTTP/1.1
//! request (head and Content-Length body) off a connection, and its headers.
use tokio::io::{AsyncRead, AsyncReadExt};

/// The value of header `name` (any case) in a request head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Reads the next whole request from `conn` into `buf` and takes it out; its
/// head (request line and headers), or None once the peer closed or failed.
pub async fn next_request<R: AsyncRead + Unpin>(conn: &mut R, buf: &mut Vec<u8>) -> Option<String> {
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = header(&text[..end], "content-length").map_or(0, |v| v.parse().unwrap());
            if buf.len() >= end + 4 + len {
                buf.drain(..end + 4 + len);
                return Some(text[..end].to_owned());
            }
        }
        match conn.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
