//! The controller's CA and the certificates it issues, as values: which CA
//! signs, which CAs are trusted (the bundle every client mounts), and the
//! one step a renewal takes next. No Kubernetes API here; `pki.rs` reads
//! and writes the Secrets.
//!
//! A CA is renewed with an overlap, so that no client ever meets a
//! certificate from a CA it does not trust yet, or trusts only a CA that no
//! longer signs what it is served:
//!
//! 1. **Publish:** a new CA is made and added to the bundle; the old one
//!    still signs.
//! 2. **Promote**, once the bundle had `propagation` to reach every client
//!    (kubelets refresh mounted ConfigMaps within about two minutes; the
//!    controller republishes every minute): the new CA signs, serving
//!    certificates are re-issued from it, and the old one stays trusted.
//! 3. **Retire**, once every serving certificate comes from the new CA and
//!    was issued `propagation` ago (so servers serve it): the old CA leaves
//!    the bundle.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use sha2::{Digest, Sha256};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("a certificate time out of range: {0}")]
    Time(String),
}

/// How long things live, and how long a change takes to reach everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    pub ca_validity: Duration,
    /// A CA with less than this left is renewed (step 1 starts).
    pub ca_renew_before: Duration,
    /// A serving certificate's validity; it is renewed with a third left.
    pub certificate_validity: Duration,
    /// How long a changed bundle or certificate takes to reach every pod.
    pub propagation: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Lifetimes {
            ca_validity: Duration::from_secs(10 * 365 * DAY),
            ca_renew_before: Duration::from_secs(365 * DAY),
            certificate_validity: Duration::from_secs(90 * DAY),
            propagation: Duration::from_secs(10 * 60),
        }
    }
}

/// A CA certificate with its key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningCa {
    /// Its common name, unique per CA: the issuer name of what it signs.
    pub name: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: Timestamp,
}

impl std::fmt::Debug for SigningCa {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SigningCa")
            .field("name", &self.name)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The CA's state, as its Secret keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaState {
    /// The CA that signs serving certificates.
    pub signing: SigningCa,
    /// A CA already trusted that will sign next (step 1), and since when.
    pub next: Option<(SigningCa, Timestamp)>,
    /// The CA that signed before, still trusted (step 2), and since when it
    /// no longer signs.
    pub previous: Option<(String, Timestamp)>,
}

/// What a serving certificate is, for the planner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingStatus {
    /// [`fingerprint`] of the CA that signed it.
    pub issuer: String,
    pub issued_at: Timestamp,
}

/// The one step the CA takes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaStep {
    Keep,
    Create,
    Publish,
    Promote,
    Retire,
}

/// A serving certificate with its key, and the bundle it was written with.
#[derive(Clone, PartialEq, Eq)]
pub struct ServingCertificate {
    pub cert_pem: String,
    pub key_pem: String,
    /// The trusted CAs (the `ca.crt` of a `kubernetes.io/tls` Secret).
    pub ca_bundle: String,
    pub dns_names: Vec<String>,
    pub not_after: Timestamp,
    pub status: ServingStatus,
}

impl std::fmt::Debug for ServingCertificate {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServingCertificate")
            .field("dns_names", &self.dns_names)
            .field("not_after", &self.not_after)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// A short, stable name for a CA certificate: the SHA-256 of its PEM text.
pub fn fingerprint(cert_pem: &str) -> String {
    hex::encode(&Sha256::digest(cert_pem.trim().as_bytes())[..16])
}

fn after(time: Timestamp, duration: Duration) -> Timestamp {
    let seconds = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX / 2);
    time.saturating_add(SignedDuration::from_secs(seconds))
        .unwrap_or(time)
}

fn before(time: Timestamp, duration: Duration) -> Timestamp {
    let seconds = i64::try_from(duration.as_secs()).unwrap_or(i64::MAX / 2);
    time.saturating_sub(SignedDuration::from_secs(seconds))
        .unwrap_or(time)
}

impl CaState {
    /// Every trusted CA in PEM: the signing one first.
    pub fn bundle(&self) -> String {
        let mut bundle = pem_line_ended(&self.signing.cert_pem);
        if let Some((next, _)) = &self.next {
            bundle.push_str(&pem_line_ended(&next.cert_pem));
        }
        if let Some((previous, _)) = &self.previous {
            bundle.push_str(&pem_line_ended(previous));
        }
        bundle
    }

    /// The step to take at `now`, given every serving certificate issued.
    pub fn plan(
        state: Option<&CaState>,
        serving: &[ServingStatus],
        now: Timestamp,
        lifetimes: &Lifetimes,
    ) -> CaStep {
        let Some(state) = state else {
            return CaStep::Create;
        };
        if let Some((_, published_at)) = &state.next {
            return if now >= after(*published_at, lifetimes.propagation) {
                CaStep::Promote
            } else {
                CaStep::Keep
            };
        }
        if state.previous.is_some() {
            let signing = fingerprint(&state.signing.cert_pem);
            let all_served = serving.iter().all(|status| {
                status.issuer == signing && now >= after(status.issued_at, lifetimes.propagation)
            });
            return if all_served {
                CaStep::Retire
            } else {
                CaStep::Keep
            };
        }
        if now >= before(state.signing.not_after, lifetimes.ca_renew_before) {
            return CaStep::Publish;
        }
        CaStep::Keep
    }

    /// The state after `step`; `None` for [`CaStep::Keep`].
    pub fn take(
        state: Option<&CaState>,
        step: CaStep,
        now: Timestamp,
        lifetimes: &Lifetimes,
    ) -> Result<Option<CaState>, CaError> {
        let next = match (step, state) {
            (CaStep::Keep, _) => return Ok(None),
            (CaStep::Create, _) | (_, None) => CaState {
                signing: new_ca(now, lifetimes.ca_validity)?,
                next: None,
                previous: None,
            },
            (CaStep::Publish, Some(state)) => CaState {
                next: Some((new_ca(now, lifetimes.ca_validity)?, now)),
                ..state.clone()
            },
            (CaStep::Promote, Some(state)) => match &state.next {
                Some((next, _)) => CaState {
                    signing: next.clone(),
                    next: None,
                    previous: Some((state.signing.cert_pem.clone(), now)),
                },
                None => return Ok(None),
            },
            (CaStep::Retire, Some(state)) => CaState {
                previous: None,
                ..state.clone()
            },
        };
        Ok(Some(next))
    }
}

/// Whether `certificate` must be issued again: another signer, other
/// names, or a third of its validity left.
pub fn needs_issuing(
    certificate: &ServingCertificate,
    ca: &CaState,
    dns_names: &[String],
    now: Timestamp,
    lifetimes: &Lifetimes,
) -> bool {
    let renew_at = before(certificate.not_after, lifetimes.certificate_validity / 3);
    certificate.status.issuer != fingerprint(&ca.signing.cert_pem)
        || certificate.dns_names != dns_names
        || now >= renew_at
}

fn pem_line_ended(pem: &str) -> String {
    let mut text = pem.trim_end().to_owned();
    text.push('\n');
    text
}

fn offset_time(timestamp: Timestamp) -> Result<time::OffsetDateTime, CaError> {
    time::OffsetDateTime::from_unix_timestamp(timestamp.as_second())
        .map_err(|err| CaError::Time(err.to_string()))
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params
}

/// A new CA valid from a minute before `now` for `validity`.
pub fn new_ca(now: Timestamp, validity: Duration) -> Result<SigningCa, CaError> {
    // unique per CA: old and new are told apart by name while both are trusted
    let name = format!("syncfolder CA {}", now.as_millisecond());
    let not_after = Timestamp::from_second(after(now, validity).as_second())
        .map_err(|err| CaError::Time(err.to_string()))?;
    let mut params = ca_params(&name);
    params.not_before = offset_time(before(now, Duration::from_secs(60)))?;
    params.not_after = offset_time(not_after)?;
    let key = KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    Ok(SigningCa {
        name,
        cert_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// A serving certificate for `dns_names` signed by `state`'s signing CA,
/// written with `state`'s bundle.
pub fn issue(
    state: &CaState,
    dns_names: &[String],
    now: Timestamp,
    validity: Duration,
) -> Result<ServingCertificate, CaError> {
    let ca = &state.signing;
    // the issuer is made again from its name and key: what a child records
    // of its issuer is the name and the key's identifier
    let issuer = Issuer::new(ca_params(&ca.name), KeyPair::from_pem(&ca.key_pem)?);
    let not_after = Timestamp::from_second(after(now, validity).min(ca.not_after).as_second())
        .map_err(|err| CaError::Time(err.to_string()))?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        dns_names.first().cloned().unwrap_or_default(),
    );
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = offset_time(before(now, Duration::from_secs(60)))?;
    params.not_after = offset_time(not_after)?;
    let key = KeyPair::generate()?;
    let certificate = params.signed_by(&key, &issuer)?;
    Ok(ServingCertificate {
        cert_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
        ca_bundle: state.bundle(),
        dns_names: dns_names.to_vec(),
        not_after,
        status: ServingStatus {
            issuer: fingerprint(&ca.cert_pem),
            issued_at: now,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    use super::*;

    fn now() -> Timestamp {
        Timestamp::now()
    }

    fn names() -> Vec<String> {
        vec![
            "syncfolder".to_owned(),
            "syncfolder.syncfolder-system.svc".to_owned(),
        ]
    }

    /// Whether a client trusting `bundle` accepts `certificate` for `name`.
    fn trusted(bundle: &str, certificate: &ServingCertificate, name: &str) -> bool {
        trusted_at(bundle, certificate, name, now())
    }

    /// [`trusted`] with the clock at `time`.
    fn trusted_at(
        bundle: &str,
        certificate: &ServingCertificate,
        name: &str,
        time: Timestamp,
    ) -> bool {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
            roots.add(ca.expect("PEM")).expect("CA");
        }
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let leaf = CertificateDer::from_pem_slice(certificate.cert_pem.as_bytes()).expect("PEM");
        let name = ServerName::try_from(name.to_owned()).expect("name");
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], unix_time(time))
            .is_ok()
    }

    fn unix_time(time: Timestamp) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(time.as_second().unsigned_abs()))
    }

    fn short() -> Lifetimes {
        Lifetimes {
            ca_validity: Duration::from_secs(1000),
            ca_renew_before: Duration::from_secs(300),
            certificate_validity: Duration::from_secs(300),
            propagation: Duration::from_secs(60),
        }
    }

    fn at(start: Timestamp, seconds: u64) -> Timestamp {
        after(start, Duration::from_secs(seconds))
    }

    #[test]
    fn an_issued_certificate_chains_to_the_bundle_for_its_names_only() {
        let lifetimes = Lifetimes::default();
        let state = CaState::take(None, CaStep::Create, now(), &lifetimes)
            .expect("CA")
            .expect("created");
        let certificate =
            issue(&state, &names(), now(), lifetimes.certificate_validity).expect("certificate");
        for name in names() {
            assert!(trusted(&state.bundle(), &certificate, &name), "{name}");
        }
        assert!(!trusted(&state.bundle(), &certificate, "evil.example"));
        let other = CaState::take(None, CaStep::Create, now(), &lifetimes)
            .expect("CA")
            .expect("created");
        assert!(!trusted(&other.bundle(), &certificate, &names()[0]));
        assert!(certificate.not_after <= state.signing.not_after);
    }

    /// Walks a whole renewal as the controller does, a pass every 10 s,
    /// checking at every pass that a client holding any bundle published in
    /// the last `propagation` trusts the certificate served (issued in the
    /// last `propagation` or before).
    #[test]
    fn a_ca_renewal_never_serves_a_certificate_a_recent_bundle_does_not_trust() {
        let lifetimes = short();
        let start = now();
        let mut state = CaState::take(None, CaStep::Create, start, &lifetimes)
            .expect("CA")
            .expect("created");
        let mut serving =
            issue(&state, &names(), start, lifetimes.certificate_validity).expect("certificate");
        // (when published, bundle) and (when issued, certificate)
        let mut bundles = vec![(start, state.bundle())];
        let mut certificates = vec![(start, serving.clone())];
        let mut steps = Vec::new();
        let first_ca = state.signing.cert_pem.clone();
        for pass in 1..=200 {
            let now = at(start, pass * 10);
            let step = CaState::plan(Some(&state), &[serving.status.clone()], now, &lifetimes);
            if let Some(next) = CaState::take(Some(&state), step, now, &lifetimes).expect("step") {
                steps.push(step);
                state = next;
                if bundles.last().map(|(_, bundle)| bundle) != Some(&state.bundle()) {
                    bundles.push((now, state.bundle()));
                }
            }
            if needs_issuing(&serving, &state, &names(), now, &lifetimes) {
                serving = issue(&state, &names(), now, lifetimes.certificate_validity)
                    .expect("certificate");
                certificates.push((now, serving.clone()));
            }
            // what may be out there: bundles and certificates from the last
            // `propagation`, and the newest ones from before it
            let window = |published: Timestamp| now < after(published, lifetimes.propagation);
            let live_bundles: Vec<&String> = bundles
                .iter()
                .enumerate()
                .filter(|(i, (published, _))| {
                    window(*published) || bundles.get(i + 1).is_none_or(|(next, _)| window(*next))
                })
                .map(|(_, (_, bundle))| bundle)
                .collect();
            let live_certificates: Vec<&ServingCertificate> = certificates
                .iter()
                .enumerate()
                .filter(|(i, (issued, _))| {
                    window(*issued)
                        || certificates
                            .get(i + 1)
                            .is_none_or(|(next, _)| window(*next))
                })
                .map(|(_, (_, certificate))| certificate)
                .collect();
            for bundle in &live_bundles {
                for certificate in &live_certificates {
                    assert!(
                        trusted_at(bundle, certificate, &names()[0], now),
                        "pass {pass} after {steps:?}: a client with a bundle of the last minute does not trust a certificate served"
                    );
                }
            }
        }
        assert_eq!(
            steps,
            [
                CaStep::Publish,
                CaStep::Promote,
                CaStep::Retire,
                CaStep::Publish,
                CaStep::Promote,
                CaStep::Retire
            ],
            "two renewals in 2000 s of a 1000 s CA renewed 300 s before it ends"
        );
        assert!(
            !state.bundle().contains(first_ca.trim()),
            "the first CA is gone"
        );
        assert!(certificates.len() >= 4, "serving certificates renewed too");
    }

    #[test]
    fn the_old_ca_stays_while_a_serving_certificate_is_not_from_the_new_one() {
        let lifetimes = short();
        let start = now();
        let created = CaState::take(None, CaStep::Create, start, &lifetimes)
            .expect("CA")
            .expect("created");
        let old_certificate =
            issue(&created, &names(), start, lifetimes.certificate_validity).expect("certificate");
        let published = CaState::take(Some(&created), CaStep::Publish, at(start, 700), &lifetimes)
            .expect("step")
            .expect("published");
        let promoted = CaState::take(
            Some(&published),
            CaStep::Promote,
            at(start, 800),
            &lifetimes,
        )
        .expect("step")
        .expect("promoted");
        let much_later = at(start, 990);
        assert_eq!(
            CaState::plan(
                Some(&promoted),
                std::slice::from_ref(&old_certificate.status),
                much_later,
                &lifetimes
            ),
            CaStep::Keep,
            "a certificate of the old CA is still out there"
        );
        let new_certificate = issue(
            &promoted,
            &names(),
            at(start, 960),
            Duration::from_secs(300),
        )
        .expect("cert");
        assert_eq!(
            CaState::plan(
                Some(&promoted),
                std::slice::from_ref(&new_certificate.status),
                much_later,
                &lifetimes
            ),
            CaStep::Keep,
            "issued less than a propagation ago"
        );
        assert_eq!(
            CaState::plan(
                Some(&promoted),
                &[new_certificate.status],
                at(start, 1020),
                &lifetimes
            ),
            CaStep::Retire
        );
    }
}
