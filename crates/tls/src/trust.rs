//! What a client trusts: the system's CA certificates (`SSL_CERT_FILE` and
//! `SSL_CERT_DIR` are honoured) plus those in a CA bundle the caller names,
//! which is read again when it changes, so a renewed CA in a mounted
//! ConfigMap is trusted without a restart.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::TlsError;
use crate::pem::read_certificates;
use crate::watched::Watched;

/// The system's CA certificates, read once per process. Empty where there
/// are none (a `scratch` image): then only a CA bundle makes HTTPS work.
pub fn system_roots() -> Arc<RootCertStore> {
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

/// A rustls client config trusting the system's CAs and those in
/// `ca_bundle`, read again as it changes; HTTP/2 and HTTP/1.1 offered.
pub fn client_config(ca_bundle: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let provider = crate::ring();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|err| TlsError::Settings(err.to_string()))?;
    let mut config = match ca_bundle {
        None => builder
            .with_root_certificates(system_roots())
            .with_no_client_auth(),
        Some(path) => {
            let roots = ReloadingRoots::new(path.to_owned(), provider, crate::CHECK_EVERY)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(roots))
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = crate::alpn();
    Ok(config)
}

/// Verifies servers against the system's CAs and a CA bundle file, made
/// again when the file changes; webpki does the verifying.
pub struct ReloadingRoots {
    verifier: Watched<Arc<WebPkiServerVerifier>>,
}

impl fmt::Debug for ReloadingRoots {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ReloadingRoots")
            .field("ca_bundle", &self.verifier.paths())
            .finish_non_exhaustive()
    }
}

impl ReloadingRoots {
    /// Reads `ca_bundle` now, and again when it changes, looking no more
    /// often than `check_every`.
    pub fn new(
        ca_bundle: PathBuf,
        provider: Arc<CryptoProvider>,
        check_every: Duration,
    ) -> Result<ReloadingRoots, TlsError> {
        let path = ca_bundle.clone();
        let verifier = Watched::new(vec![ca_bundle], "CA bundle", check_every, move || {
            verifier(&path, &provider)
        })?;
        Ok(ReloadingRoots { verifier })
    }

    fn current(&self) -> Arc<WebPkiServerVerifier> {
        Arc::clone(&self.verifier.current())
    }
}

/// A webpki verifier trusting the system's CAs and every one in `ca_bundle`.
fn verifier(
    ca_bundle: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let mut roots = RootCertStore::clone(&system_roots());
    for certificate in read_certificates(ca_bundle, "CA certificate")? {
        roots.add(certificate).map_err(|err| TlsError::File {
            what: "CA certificate",
            path: ca_bundle.to_owned(),
            reason: format!("not a usable CA certificate: {err}"),
        })?;
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
        .build()
        .map_err(|err| TlsError::Settings(format!("CA bundle {}: {err}", ca_bundle.display())))
}

impl ServerCertVerifier for ReloadingRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.current().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// True when `err` failed because the server's certificate chains to no
/// trusted CA: the case a CA bundle is for.
pub fn is_unknown_issuer(err: &(dyn std::error::Error + 'static)) -> bool {
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
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

    use super::*;

    /// A CA's certificate in PEM, and a serving certificate for
    /// `localhost` it signed, in DER.
    fn ca_and_leaf(name: &str) -> (String, CertificateDer<'static>) {
        let ca_key = KeyPair::generate().expect("key");
        let mut ca_params = CertificateParams::new(Vec::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("key");
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .signed_by(&leaf_key, &issuer)
            .expect("leaf");
        (ca.pem(), leaf.der().clone())
    }

    fn accepts(
        roots: &ReloadingRoots,
        leaf: &CertificateDer<'static>,
    ) -> Result<(), rustls::Error> {
        let name = ServerName::try_from("localhost").expect("name");
        roots
            .verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    /// A ConfigMap's update as the kubelet makes it: new file, then rename.
    fn replace(path: &Path, text: &str) {
        let next = path.with_extension("next");
        std::fs::write(&next, text).expect("write");
        std::fs::rename(&next, path).expect("swap");
    }

    #[test]
    fn a_renewed_ca_bundle_is_trusted_once_it_changes_and_an_old_ca_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bundle = dir.path().join("ca.crt");
        let (old_ca, old_leaf) = ca_and_leaf("old CA");
        let (new_ca, new_leaf) = ca_and_leaf("new CA");
        std::fs::write(&bundle, &old_ca).expect("write");
        let roots =
            ReloadingRoots::new(bundle.clone(), crate::ring(), Duration::ZERO).expect("roots");
        assert!(accepts(&roots, &old_leaf).is_ok());
        let refused = accepts(&roots, &new_leaf).expect_err("not trusted yet");
        assert!(is_unknown_issuer(&refused), "{refused}");

        // the overlap: both CAs
        replace(&bundle, &format!("{old_ca}{new_ca}"));
        assert!(accepts(&roots, &old_leaf).is_ok());
        assert!(accepts(&roots, &new_leaf).is_ok());

        // a broken bundle keeps the last good one
        replace(&bundle, "garbage");
        assert!(accepts(&roots, &new_leaf).is_ok());
        assert!(accepts(&roots, &old_leaf).is_ok());

        // the old CA dropped
        replace(&bundle, &new_ca);
        assert!(accepts(&roots, &new_leaf).is_ok());
        assert!(accepts(&roots, &old_leaf).is_err());
    }

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
