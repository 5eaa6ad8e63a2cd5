//! The server's TLS settings: a certificate chain and key read from PEM
//! files, TLS 1.2 and 1.3 with the `ring` provider, HTTP/2 and HTTP/1.1
//! offered through ALPN.
//!
//! The files are read again when they change (a renewed certificate in a
//! mounted Secret, cert-manager's or the controller's): a handshake looks
//! at their metadata at most once every [`CHECK_EVERY`], and a new pair
//! that reads and matches serves every connection from then on. Open
//! connections keep the certificate they started with. A new pair that
//! does not read, or whose key is not the certificate's, is reported and
//! the old one goes on serving until the files are right.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;
use crate::error::{Error, Result};

/// How often a handshake looks whether the certificate files changed.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A rustls server config for `files`, reading them again as they change;
/// every error names the file at fault.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificate = ReloadingCertificate::new(files.clone(), Arc::clone(&provider), CHECK_EVERY)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::Config(format!("TLS protocol versions: {err}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(certificate));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What identifies a version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Stamp {
    /// `None` when the file cannot be looked at (it is being replaced).
    fn of(path: &Path) -> Option<Stamp> {
        use std::os::unix::fs::MetadataExt;
        // follows links: a mounted Secret swaps a link to new files
        let metadata = std::fs::metadata(path).ok()?;
        Some(Stamp {
            modified: metadata.modified().ok(),
            len: metadata.len(),
            inode: metadata.ino(),
        })
    }
}

/// The pair being served, and the files' stamps it was read at.
struct Current {
    key: Arc<CertifiedKey>,
    stamps: (Option<Stamp>, Option<Stamp>),
    checked_at: Instant,
}

/// The serving certificate, read again when its files change.
pub struct ReloadingCertificate {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    check_every: Duration,
    current: Mutex<Current>,
}

impl fmt::Debug for ReloadingCertificate {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ReloadingCertificate")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingCertificate {
    /// Reads `files` now; an error names the file at fault.
    pub fn new(
        files: TlsFiles,
        provider: Arc<CryptoProvider>,
        check_every: Duration,
    ) -> Result<ReloadingCertificate> {
        let stamps = (Stamp::of(&files.cert), Stamp::of(&files.key));
        let key = load(&files, &provider)?;
        Ok(ReloadingCertificate {
            files,
            provider,
            check_every,
            current: Mutex::new(Current {
                key: Arc::new(key),
                stamps,
                checked_at: Instant::now(),
            }),
        })
    }

    /// The pair to serve: the current one, read again first when the files
    /// changed since and the last look is [`Self::check_every`] ago.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if current.checked_at.elapsed() < self.check_every {
            return Arc::clone(&current.key);
        }
        current.checked_at = Instant::now();
        let stamps = (Stamp::of(&self.files.cert), Stamp::of(&self.files.key));
        if stamps == current.stamps || stamps.0.is_none() || stamps.1.is_none() {
            return Arc::clone(&current.key);
        }
        match load(&self.files, &self.provider) {
            Ok(key) => {
                tracing::info!(cert = %self.files.cert.display(), "serving a new TLS certificate");
                current.key = Arc::new(key);
                current.stamps = stamps;
            }
            Err(err) => {
                // once per change of the files: half of a pair may be written
                tracing::warn!(%err, "the TLS certificate files changed but do not make a pair; serving the old one");
                current.stamps = stamps;
            }
        }
        Arc::clone(&current.key)
    }
}

impl ResolvesServerCert for ReloadingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Reads the chain and key of `files` and checks the key is the certificate's.
fn load(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let chain = read_certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|err| {
        Error::Config(format!(
            "TLS key {}: {}",
            files.key.display(),
            pem_problem(&err, "private key (PKCS#8, RSA or SEC1)")
        ))
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|err| {
        Error::Config(format!(
            "TLS certificate {} with key {}: {err}; is the key the certificate's own?",
            files.cert.display(),
            files.key.display()
        ))
    })
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let problem =
        |reason: String| Error::Config(format!("TLS certificate {}: {reason}", path.display()));
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|err| problem(pem_problem(&err, "certificate")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| problem(pem_problem(&err, "certificate")))?;
    if chain.is_empty() {
        return Err(problem(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".to_owned(),
        ));
    }
    Ok(chain)
}

/// What went wrong reading a PEM file, in words.
fn pem_problem(err: &rustls_pki_types::pem::Error, what: &str) -> String {
    use rustls_pki_types::pem::Error as PemError;
    match err {
        PemError::Io(err) => format!("cannot read it: {err}"),
        PemError::NoItemsFound => format!("no PEM {what} in it"),
        other => format!("not a valid PEM {what}: {other}"),
    }
}

#[cfg(test)]
mod tests {
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

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    #[test]
    fn a_renewed_pair_is_served_once_its_files_change_and_a_broken_one_never() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert_a, key_a) = self_signed();
        let tls_files = files(dir.path(), &cert_a, &key_a);
        let certificate =
            ReloadingCertificate::new(tls_files.clone(), provider(), Duration::ZERO).expect("load");
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

    #[test]
    fn the_files_are_looked_at_no_more_often_than_asked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert_a, key_a) = self_signed();
        let tls_files = files(dir.path(), &cert_a, &key_a);
        let certificate =
            ReloadingCertificate::new(tls_files.clone(), provider(), Duration::from_secs(3600))
                .expect("load");
        let first = serving(&certificate);
        let (cert_b, key_b) = self_signed();
        files(dir.path(), &cert_b, &key_b);
        assert_eq!(
            serving(&certificate),
            first,
            "not looked at again within the hour"
        );
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
    }
}
