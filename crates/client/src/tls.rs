//! The client's TLS: rustls with the `ring` provider, trusting the system's
//! CA certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` are honoured) plus the
//! ones in a PEM file the caller names, offering HTTP/2 and HTTP/1.1.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::{Error, Result};

/// The system's CA certificates, read once per process. Empty where there
/// are none (a `scratch` image): then only `--ca-cert` makes HTTPS work.
fn system_roots() -> Arc<RootCertStore> {
    static SYSTEM_ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(SYSTEM_ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for err in &found.errors {
            tracing::debug!(%err, "skipping unreadable system CA certificates");
        }
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(found.certs);
        Arc::new(roots)
    }))
}

/// A rustls client config trusting the system's CAs and those in `ca_cert`.
pub(crate) fn client_config(ca_cert: Option<&Path>) -> Result<rustls::ClientConfig> {
    let roots = match ca_cert {
        None => system_roots(),
        Some(path) => {
            let mut roots = RootCertStore::clone(&system_roots());
            for certificate in read_certificates(path)? {
                roots.add(certificate).map_err(|err| {
                    ca_problem(path, &format!("not a usable CA certificate: {err}"))
                })?;
            }
            Arc::new(roots)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::Tls(format!("TLS protocol versions: {err}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem_problem = |err: rustls_pki_types::pem::Error| match err {
        rustls_pki_types::pem::Error::Io(err) => {
            ca_problem(path, &format!("cannot read it: {err}"))
        }
        other => ca_problem(path, &format!("not a valid PEM certificate: {other}")),
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(pem_problem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_problem)?;
    if certificates.is_empty() {
        return Err(ca_problem(
            path,
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
        ));
    }
    Ok(certificates)
}

fn ca_problem(path: &Path, reason: &str) -> Error {
    Error::Tls(format!("CA certificate {}: {reason}", path.display()))
}

/// True when `err` failed because the server's certificate chains to no
/// trusted CA: the case `--ca-cert` is for.
pub(crate) fn is_unknown_issuer(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(err) = current {
        // hyper-rustls wraps rustls errors in io::Errors (two deep), whose
        // `source` skips what they wrap
        let mut inner: &(dyn std::error::Error + 'static) = err;
        while let Some(wrapped) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            inner = wrapped;
        }
        if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) =
            inner.downcast_ref::<rustls::Error>()
        {
            return true;
        }
        current = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = dir.path().join("missing-ca.pem");
        let message = client_config(Some(&missing))
            .expect_err("missing")
            .to_string();
        assert!(message.contains("missing-ca.pem"), "{message}");
        assert!(message.contains("cannot read it"), "{message}");

        let empty = dir.path().join("empty-ca.pem");
        std::fs::write(&empty, "nothing here\n").expect("write");
        let message = client_config(Some(&empty)).expect_err("empty").to_string();
        assert!(message.contains("empty-ca.pem"), "{message}");
        assert!(message.contains("no PEM certificate"), "{message}");
    }

    #[test]
    fn an_unknown_issuer_is_found_inside_nested_io_errors() {
        let unknown_issuer =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        // what hyper-rustls hands reqwest
        let nested = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            unknown_issuer,
        ));
        assert!(is_unknown_issuer(&nested));
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert!(!is_unknown_issuer(&std::io::Error::other(expired)));
        assert!(!is_unknown_issuer(&std::io::Error::other(
            "connection refused"
        )));
    }
}
