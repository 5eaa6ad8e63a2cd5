//! The server's TLS settings: a certificate chain and key read from PEM files
//! once at startup, TLS 1.2 and 1.3 with the `ring` provider, HTTP/2 and
//! HTTP/1.1 offered through ALPN.

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;
use crate::error::{Error, Result};

/// A rustls server config for `files`; every error names the file at fault.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>> {
    let chain = read_certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|err| {
        Error::Config(format!(
            "TLS key {}: {}",
            files.key.display(),
            pem_problem(&err, "private key (PKCS#8, RSA or SEC1)")
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::Config(format!("TLS protocol versions: {err}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|err| {
            Error::Config(format!(
                "TLS certificate {} with key {}: {err}; is the key the certificate's own?",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
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

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
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
