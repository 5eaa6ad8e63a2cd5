//! A server's certificate chain and key, read again when they change: a
//! handshake looks at the files' metadata at most once every
//! [`crate::CHECK_EVERY`], and a new pair that reads and matches serves
//! every connection from then on. Open connections keep the certificate
//! they started with. A new pair that does not read, or whose key is not
//! the certificate's, is reported and the old one goes on serving until the
//! files are right. Sessions are never resumed, so every new connection
//! gets the current certificate and is checked against the client's current
//! trust.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::TlsError;
use crate::pem::{read_certificates, read_key};
use crate::watched::Watched;

/// The PEM files of a TLS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// Its private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

/// A rustls server config for `files`, reading them again as they change.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = crate::ring();
    let certificate =
        ReloadingCertificate::new(files.clone(), Arc::clone(&provider), crate::CHECK_EVERY)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Settings(err.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(certificate));
    config.alpn_protocols = crate::alpn();
    // no session resumption: every connection is a full handshake, so once a
    // certificate or CA is rotated out no new connection rests on it (clients
    // hold few, long connections, so this costs little)
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The serving certificate, read again when its files change.
pub struct ReloadingCertificate {
    key: Watched<CertifiedKey>,
}

impl fmt::Debug for ReloadingCertificate {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ReloadingCertificate")
            .field("files", &self.key.paths())
            .finish_non_exhaustive()
    }
}

impl ReloadingCertificate {
    /// Reads `files` now, and again when they change, looking no more often
    /// than `check_every`.
    pub fn new(
        files: TlsFiles,
        provider: Arc<CryptoProvider>,
        check_every: Duration,
    ) -> Result<ReloadingCertificate, TlsError> {
        let paths = vec![files.cert.clone(), files.key.clone()];
        let key = Watched::new(paths, "TLS certificate", check_every, move || {
            load(&files, &provider)
        })?;
        Ok(ReloadingCertificate { key })
    }

    /// The pair to serve now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.key.current()
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Reads the chain and key of `files` and checks the key is the certificate's.
fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = read_certificates(&files.cert, "TLS certificate")?;
    let key = read_key(&files.key)?;
    CertifiedKey::from_der(chain, key, provider).map_err(|reason| TlsError::NotAPair {
        cert: files.cert.clone(),
        key: files.key.clone(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A self-signed certificate for 127.0.0.1 and its key, in PEM.
    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        let certificate = params.self_signed(&key).expect("certificate");
        (certificate.pem(), key.serialize_pem())
    }

    fn serving(certificate: &ReloadingCertificate) -> Vec<u8> {
        certificate.current().cert[0].to_vec()
    }

    #[test]
    fn a_renewed_pair_is_served_once_its_files_change_and_a_broken_one_never() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert_a, key_a) = self_signed();
        let tls_files = files(dir.path(), &cert_a, &key_a);
        let certificate =
            ReloadingCertificate::new(tls_files.clone(), crate::ring(), Duration::ZERO)
                .expect("load");
        let first = serving(&certificate);
        assert_eq!(serving(&certificate), first, "nothing changed");

        // renewed as a mounted Secret is: new files swapped in
        let (cert_b, key_b) = self_signed();
        let renewed = files(&dir.path().join("renewed"), &cert_b, &key_b);
        std::fs::rename(&renewed.cert, &tls_files.cert).expect("swap cert");
        std::fs::rename(&renewed.key, &tls_files.key).expect("swap key");
        let second = serving(&certificate);
        assert_ne!(second, first, "the new certificate is served");

        // half a pair: a new certificate with the old key
        let (cert_c, key_c) = self_signed();
        std::fs::write(&tls_files.cert, cert_c).expect("write cert");
        assert_eq!(
            serving(&certificate),
            second,
            "a mismatched pair is not served"
        );
        std::fs::write(&tls_files.key, "not a key").expect("write key");
        assert_eq!(
            serving(&certificate),
            second,
            "an unreadable key is not served"
        );
        std::fs::remove_file(&tls_files.key).expect("remove key");
        assert_eq!(serving(&certificate), second, "a missing key is not served");

        // the renewal completes: its key arrives
        std::fs::write(&tls_files.key, key_c).expect("write key");
        let third = serving(&certificate);
        assert_ne!(third, second, "the completed pair is served");
        assert_ne!(third, first);
    }

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        std::fs::create_dir_all(dir).expect("dir");
        let cert_path = dir.join("cert.pem");
        let key_path = dir.join("key.pem");
        std::fs::write(&cert_path, cert).expect("write cert");
        std::fs::write(&key_path, key).expect("write key");
        TlsFiles {
            cert: cert_path,
            key: key_path,
        }
    }

    #[test]
    fn missing_and_malformed_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: dir.path().join("nope.key"),
        };
        let message = server_config(&missing).expect_err("missing").to_string();
        assert!(message.contains("nope.pem"), "{message}");
        assert!(message.contains("cannot read it"), "{message}");

        let garbage = files(dir.path(), "not a certificate", "not a key");
        let message = server_config(&garbage).expect_err("garbage").to_string();
        assert!(message.contains("cert.pem"), "{message}");
        assert!(message.contains("no PEM certificate"), "{message}");

        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let mismatched = files(&dir.path().join("mismatched"), &cert, &other_key);
        let message = server_config(&mismatched)
            .expect_err("mismatched")
            .to_string();
        assert!(
            message.contains("is the key the certificate's own"),
            "{message}"
        );
    }
}
