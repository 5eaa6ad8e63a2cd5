//! Reading certificates and keys from PEM files, with errors that name the
//! file and say what is wrong with it.

use std::path::Path;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// Every certificate in the PEM file at `path`; at least one. `what` names
/// the file's role in errors ("TLS certificate", "CA certificate").
pub(crate) fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let problem = |err: rustls_pki_types::pem::Error| file_error(what, path, &err, "certificate");
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(problem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(problem)?;
    if certificates.is_empty() {
        return Err(TlsError::File {
            what,
            path: path.to_owned(),
            reason: "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".to_owned(),
        });
    }
    Ok(certificates)
}

/// The private key in the PEM file at `path`.
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|err| file_error("TLS key", path, &err, "private key (PKCS#8, RSA or SEC1)"))
}

fn file_error(
    what: &'static str,
    path: &Path,
    err: &rustls_pki_types::pem::Error,
    item: &str,
) -> TlsError {
    use rustls_pki_types::pem::Error as PemError;
    let reason = match err {
        PemError::Io(err) => format!("cannot read it: {err}"),
        PemError::NoItemsFound => format!("no PEM {item} in it"),
        other => format!("not a valid PEM {item}: {other}"),
    };
    TlsError::File {
        what,
        path: path.to_owned(),
        reason,
    }
}
