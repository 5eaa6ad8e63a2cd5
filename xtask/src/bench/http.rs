//! The little HTTP the bench speaks to loopback servers (syncfolder's API
//! and metrics, Syncthing's REST API): HTTP/1.0, one connection per request,
//! so answers are never chunked and end when the connection closes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, bail};

/// How long a request may take before the bench gives up on it.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `method path` on `127.0.0.1:port` with extra headers and a body.
pub fn request(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> anyhow::Result<Response> {
    request_patiently(method, port, path, headers, body, TIMEOUT)
}

/// [`request`] that may take up to `timeout` (a garbage collection of a
/// large store, say).
pub fn request_patiently(
    method: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> anyhow::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to {method} {path} on port {port}"))?;
    parse_response(&raw).with_context(|| format!("{method} {path} on port {port}"))
}

/// `GET path` on `127.0.0.1:port`.
pub fn get(port: u16, path: &str) -> anyhow::Result<Response> {
    request("GET", port, path, &[], b"")
}

fn parse_response(raw: &[u8]) -> anyhow::Result<Response> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("an incomplete HTTP answer ({} bytes)", raw.len());
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .context("an HTTP answer without a status")?;
    Ok(Response {
        status,
        body: body.to_owned(),
    })
}

/// The sum of a Prometheus metric's samples whose labels contain every one
/// of `label_filters` (`direction="upload"`); `None` when there is none.
pub fn metric_sum(exposition: &str, name: &str, label_filters: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, labels) = match series.split_once('{') {
            Some((series_name, labels)) => (series_name, labels),
            None => (series, ""),
        };
        if series_name != name || !label_filters.iter().all(|filter| labels.contains(filter)) {
            continue;
        }
        if let Ok(value) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_splits_into_status_and_body() {
        let response = parse_response(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n{\"x\":1}").unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "{\"x\":1}");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn metrics_are_summed_over_matching_label_sets() {
        let text = "# HELP x\n\
                    syncfolder_agent_transferred_bytes_total{agent=\"a\",direction=\"upload\",folder=\"f\"} 10\n\
                    syncfolder_agent_transferred_bytes_total{agent=\"a\",direction=\"download\",folder=\"f\"} 7\n\
                    syncfolder_folder_files{folder=\"f\"} 3\n\
                    plain 2.5\n";
        let sum = |name, filters: &[&str]| metric_sum(text, name, filters);
        assert_eq!(
            sum(
                "syncfolder_agent_transferred_bytes_total",
                &["direction=\"upload\""]
            ),
            Some(10.0)
        );
        assert_eq!(
            sum("syncfolder_agent_transferred_bytes_total", &[]),
            Some(17.0)
        );
        assert_eq!(sum("plain", &[]), Some(2.5));
        assert_eq!(sum("syncfolder_folder", &[]), None);
    }
}
