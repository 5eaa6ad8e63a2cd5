//! Certificate rotation without a restart: the server reads its certificate
//! files again when they change; new connections get the new certificate,
//! open ones finish with the old, and no request fails meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName};
use syncfolder_server::{ServerConfig, TlsFiles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::harness::TestServer;

/// A self-signed certificate for 127.0.0.1: (certificate PEM, key PEM, DER).
fn self_signed() -> (String, String, CertificateDer<'static>) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    let certificate = params.self_signed(&key).expect("certificate");
    (
        certificate.pem(),
        key.serialize_pem(),
        certificate.der().clone(),
    )
}

/// A TLS client trusting exactly `trusted`. It never resumes a session:
/// each connection is shown the certificate the server serves now.
fn connector(trusted: &[&CertificateDer<'static>]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for certificate in trusted {
        roots.add((*certificate).clone()).expect("root");
    }
    TlsConnector::from(Arc::new(syncfolder_testkit::fresh_session_tls_client(
        roots,
    )))
}

async fn handshake(
    connector: &TlsConnector,
    server: &TestServer,
) -> std::io::Result<TlsStream<TcpStream>> {
    let address = server.base.trim_start_matches("https://");
    let tcp = TcpStream::connect(address).await?;
    let name = ServerName::try_from("127.0.0.1").expect("name");
    connector.connect(name, tcp).await
}

/// The certificate a new connection is shown.
async fn served(connector: &TlsConnector, server: &TestServer) -> CertificateDer<'static> {
    let stream = handshake(connector, server).await.expect("handshake");
    let (_, connection) = stream.get_ref();
    connection.peer_certificates().expect("peer certificates")[0].clone()
}

/// `GET /healthz` on an open connection (kept open); the status code.
async fn healthz(stream: &mut TlsStream<TcpStream>) -> std::io::Result<u16> {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok(status)
}

#[tokio::test]
async fn a_renewed_certificate_reaches_new_connections_while_requests_go_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert_a, key_a, der_a) = self_signed();
    let (cert_b, key_b, der_b) = self_signed();
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert, cert_a).expect("write cert");
    std::fs::write(&files.key, key_a).expect("write key");
    let mut config = ServerConfig::new(
        "127.0.0.1:0".parse().expect("addr"),
        dir.path().join("data"),
    );
    config.tls = Some(files.clone());
    let server = Arc::new(TestServer::start_config(config).await);
    let both = connector(&[&der_a, &der_b]);
    assert_eq!(served(&both, &server).await, der_a);
    let mut open = handshake(&both, &server).await.expect("handshake");
    assert_eq!(healthz(&mut open).await.expect("healthz"), 200);

    // requests on new connections all along
    let stop = Arc::new(AtomicBool::new(false));
    let (n_ok, n_failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic = tokio::spawn({
        let (server, both) = (Arc::clone(&server), both.clone());
        let (stop, n_ok, n_failed) = (Arc::clone(&stop), Arc::clone(&n_ok), Arc::clone(&n_failed));
        async move {
            while !stop.load(Ordering::Acquire) {
                let answer = match handshake(&both, &server).await {
                    Ok(mut stream) => healthz(&mut stream).await,
                    Err(err) => Err(err),
                };
                match answer {
                    Ok(200) => n_ok.fetch_add(1, Ordering::AcqRel),
                    _ => n_failed.fetch_add(1, Ordering::AcqRel),
                };
            }
        }
    });

    // renewed as a mounted Secret is: new files renamed over the old
    tokio::time::sleep(Duration::from_millis(200)).await;
    let renewed = dir.path().join("renewed");
    std::fs::create_dir(&renewed).expect("dir");
    std::fs::write(renewed.join("cert.pem"), cert_b).expect("write cert");
    std::fs::write(renewed.join("key.pem"), key_b).expect("write key");
    std::fs::rename(renewed.join("key.pem"), &files.key).expect("swap key");
    std::fs::rename(renewed.join("cert.pem"), &files.cert).expect("swap cert");

    let started = Instant::now();
    while served(&both, &server).await != der_b {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // a client that trusts only the new certificate gets in now
    let only_b = connector(&[&der_b]);
    assert_eq!(served(&only_b, &server).await, der_b);
    // and one that trusts only the old one does not
    assert!(handshake(&connector(&[&der_a]), &server).await.is_err());
    // the connection opened before goes on with the old certificate
    assert_eq!(healthz(&mut open).await.expect("healthz"), 200);
    assert_eq!(
        open.get_ref().1.peer_certificates().expect("peer")[0],
        der_a
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Release);
    traffic.await.expect("traffic");
    assert_eq!(
        n_failed.load(Ordering::Acquire),
        0,
        "requests failed during the renewal"
    );
    assert!(n_ok.load(Ordering::Acquire) > 0);
}
