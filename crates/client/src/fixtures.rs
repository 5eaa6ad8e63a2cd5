//! A scripted HTTP/1.1 server for unit tests: it answers each connection with
//! the next canned response, records what it was sent, and closes the
//! connection. Tests then assert each request's method, target, headers and
//! body, and what the client made of the answer.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::Client;

pub(crate) const TOKEN: &str = "sf_test_token_aaaaaaaaaaaaaaaa";

/// One request as the server saw it.
#[derive(Debug)]
pub(crate) struct Recorded {
    pub method: String,
    /// Path and query, as sent (still percent-encoded).
    pub target: String,
    headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(header_name, _)| header_name.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// One answer to play.
pub(crate) struct Canned {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Canned {
    pub fn json(status: u16, value: serde_json::Value) -> Canned {
        Canned {
            status,
            content_type: "application/json",
            body: value.to_string().into_bytes(),
        }
    }

    pub fn bytes(status: u16, content_type: &'static str, body: Vec<u8>) -> Canned {
        Canned {
            status,
            content_type,
            body,
        }
    }
}

/// Starts the server on port 0; the handle yields the recorded requests once
/// every canned answer has been played.
pub(crate) async fn serve(answers: Vec<Canned>) -> (String, JoinHandle<Vec<Recorded>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let base_url = format!("http://{}", listener.local_addr().expect("local addr"));
    let server = tokio::spawn(async move {
        let mut recorded = Vec::new();
        for answer in answers {
            let (mut stream, _) = listener.accept().await.expect("accept");
            recorded.push(read_request(&mut stream).await);
            let head = format!(
                "HTTP/1.1 {} X\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                answer.status,
                answer.content_type,
                answer.body.len()
            );
            stream.write_all(head.as_bytes()).await.expect("write");
            stream.write_all(&answer.body).await.expect("write");
            stream.shutdown().await.expect("shutdown");
        }
        recorded
    });
    (base_url, server)
}

/// A client for `base_url` with the test token and agent id `agent-7`.
pub(crate) fn client(base_url: &str) -> Client {
    Client::new(base_url, TOKEN)
        .expect("valid base url")
        .with_agent_id("agent-7")
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Recorded {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(pos) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break pos;
        }
        let mut piece = [0u8; 4096];
        let n_read = stream.read(&mut piece).await.expect("read");
        assert!(n_read > 0, "connection closed inside the request head");
        buffer.extend_from_slice(&piece[..n_read]);
    };
    let head = String::from_utf8(buffer[..head_end].to_vec()).expect("utf-8 head");
    let mut lines = head.split("\r\n");
    let request_line = lines.next().expect("request line");
    let mut parts = request_line.split(' ');
    let method = parts.next().expect("method").to_owned();
    let target = parts.next().expect("target").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let content_length: usize = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map_or(0, |(_, value)| value.parse().expect("numeric length"));
    let mut body = buffer[head_end + 4..].to_vec();
    while body.len() < content_length {
        let mut piece = vec![0u8; content_length - body.len()];
        let n_read = stream.read(&mut piece).await.expect("read");
        assert!(n_read > 0, "connection closed inside the request body");
        body.extend_from_slice(&piece[..n_read]);
    }
    Recorded {
        method,
        target,
        headers,
        body,
    }
}
