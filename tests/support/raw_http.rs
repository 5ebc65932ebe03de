//! One HTTP/1.1 message off a raw socket, for tests that must speak HTTP by
//! hand (a browser's page server, clients that misbehave on purpose).

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

pub struct Message {
    /// The start line and headers, as sent.
    pub head: String,
    /// The body its `Content-Length` announced.
    pub body: String,
}

/// Reads one message; None when the peer closed before a whole one arrived.
pub async fn read_message(conn: &mut TcpStream) -> Option<Message> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        read_more(conn, &mut buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        read_more(conn, &mut buf).await?;
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    Some(Message { head, body })
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match conn.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}
