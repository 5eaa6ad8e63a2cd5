//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's
//! `leaderelection` does it: the leader renews the Lease every few seconds;
//! another replica takes it over only once it has not been renewed for a
//! whole lease duration. Every write carries the `resourceVersion` it read,
//! so two replicas racing for an expired Lease cannot both win.
//!
//! Only the leader reconciles; every replica serves the webhook.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// Who competes for which Lease, and how long a leadership lasts.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub namespace: String,
    pub lease_name: String,
    /// This replica (its pod name).
    pub holder: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews, and candidates retry.
    pub retry_period: Duration,
}

impl LeaseSettings {
    pub fn new(namespace: &str, lease_name: &str, holder: &str) -> Self {
        LeaseSettings {
            namespace: namespace.to_owned(),
            lease_name: lease_name.to_owned(),
            holder: holder.to_owned(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(4),
        }
    }
}

/// The Lease in the controller's namespace.
#[derive(Clone)]
pub struct LeaseLock {
    leases: Api<Lease>,
    settings: LeaseSettings,
}

impl LeaseLock {
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        LeaseLock {
            leases: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    pub fn settings(&self) -> &LeaseSettings {
        &self.settings
    }

    /// Takes, keeps or fails to get the Lease at `now`. True while this
    /// replica leads.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let current = match self.leases.get_opt(&self.settings.lease_name).await? {
            Some(lease) => lease,
            None => return self.create(now).await,
        };
        let spec = current.spec.clone().unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.settings.holder.as_str());
        if !ours && held_at(&spec, now) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        let spec = LeaseSpec {
            holder_identity: Some(self.settings.holder.clone()),
            lease_duration_seconds: Some(self.duration_seconds()),
            acquire_time: if ours {
                spec.acquire_time.clone()
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..spec
        };
        self.replace(current, spec).await
    }

    /// Gives the Lease up on shutdown so another replica need not wait for
    /// it to expire. Does nothing when another replica holds it.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(current) = self.leases.get_opt(&self.settings.lease_name).await? else {
            return Ok(());
        };
        let spec = current.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.settings.holder.as_str()) {
            return Ok(());
        }
        let released = LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            ..spec
        };
        self.replace(current, released).await.map(|_| ())
    }

    async fn create(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.settings.lease_name.clone()),
                namespace: Some(self.settings.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.settings.holder.clone()),
                lease_duration_seconds: Some(self.duration_seconds()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match self.leases.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            // another replica created it first
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Writes `spec` over `current`, guarded by the resourceVersion read.
    async fn replace(&self, current: Lease, spec: LeaseSpec) -> Result<bool, kube::Error> {
        let lease = Lease {
            metadata: current.metadata,
            spec: Some(spec),
        };
        match self
            .leases
            .replace(&self.settings.lease_name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            // someone wrote it since we read it
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.settings.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// The Lease has a holder whose last renewal is younger than its duration.
fn held_at(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(holder) = spec.holder_identity.as_deref() else {
        return false;
    };
    if holder.is_empty() {
        return false;
    }
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return false;
    };
    let duration_ms = i64::from(spec.lease_duration_seconds.unwrap_or(0)) * 1000;
    now.as_millisecond() < renewed.0.as_millisecond() + duration_ms
}

/// Keeps trying for the Lease, and renewing it, until `shutdown`; `leading`
/// follows the outcome. A leader that cannot renew for a whole lease
/// duration steps down (sets `leading` false) before another replica may
/// take over, so two never reconcile at once for longer than a clock skew.
pub async fn keep_electing(
    lock: LeaseLock,
    leading: tokio::sync::watch::Sender<bool>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let settings = lock.settings().clone();
    let mut last_renewal: Option<tokio::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let now = Timestamp::now();
        match lock.try_acquire_or_renew(now).await {
            Ok(true) => {
                last_renewal = Some(tokio::time::Instant::now());
                if !*leading.borrow() {
                    tracing::info!(lease = %settings.lease_name, holder = %settings.holder, "became the leader");
                    leading.send_replace(true);
                }
            }
            Ok(false) => {
                if *leading.borrow() {
                    tracing::warn!(lease = %settings.lease_name, "another replica holds the lease; stepping down");
                    leading.send_replace(false);
                }
                last_renewal = None;
            }
            Err(err) => {
                tracing::warn!(%err, lease = %settings.lease_name, "cannot read or renew the leader lease");
                let expired = last_renewal.is_none_or(|renewed| {
                    renewed.elapsed()
                        >= settings
                            .lease_duration
                            .saturating_sub(settings.retry_period)
                });
                if *leading.borrow() && expired {
                    tracing::warn!(lease = %settings.lease_name, "the lease could not be renewed in time; stepping down");
                    leading.send_replace(false);
                }
            }
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(settings.retry_period) => {}
        }
    }
    if *leading.borrow() {
        leading.send_replace(false);
        match lock.release().await {
            Ok(()) => tracing::info!(lease = %settings.lease_name, "released the leader lease"),
            Err(err) => {
                tracing::warn!(%err, "cannot release the leader lease; it expires by itself")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{Method, StatusCode};
    use serde_json::{Value, json};

    use super::*;
    use crate::fixtures::{Exchange, api_status, play};

    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/syncfolder-system/leases";
    const LEASE: &str =
        "/apis/coordination.k8s.io/v1/namespaces/syncfolder-system/leases/syncfolder-controller";

    fn now() -> Timestamp {
        "2026-11-24T10:00:00Z".parse().expect("time")
    }

    fn lease(holder: &str, renewed: &str, transitions: i32) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "syncfolder-controller", "namespace": "syncfolder-system", "resourceVersion": "7"},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": 15,
                "acquireTime": "2026-11-24T09:00:00.000000Z",
                "renewTime": renewed,
                "leaseTransitions": transitions,
            }
        })
    }

    /// Plays `exchanges` (expected method and path, then the answer) and
    /// returns the request bodies.
    async fn scenario(exchanges: Vec<Exchange>, run: impl AsyncFnOnce(LeaseLock)) -> Vec<Value> {
        let (client, server) = play(exchanges, "syncfolder-system");
        run(LeaseLock::new(
            client,
            LeaseSettings::new("syncfolder-system", "syncfolder-controller", "controller-a"),
        ))
        .await;
        server.await.expect("mock API server")
    }

    fn not_found() -> Value {
        api_status(404, "NotFound")
    }

    fn conflict() -> Value {
        api_status(409, "Conflict")
    }

    #[tokio::test]
    async fn the_first_replica_creates_the_lease_and_leads() {
        let bodies = scenario(
            vec![
                (Method::GET, LEASE, StatusCode::NOT_FOUND, not_found()),
                (
                    Method::POST,
                    LEASES,
                    StatusCode::CREATED,
                    lease("controller-a", "2026-11-24T10:00:00.000000Z", 0),
                ),
            ],
            async |lock| assert!(lock.try_acquire_or_renew(now()).await.expect("election")),
        )
        .await;
        assert_eq!(bodies[1]["spec"]["holderIdentity"], "controller-a");
        assert_eq!(bodies[1]["spec"]["leaseDurationSeconds"], 15);
    }

    #[tokio::test]
    async fn a_lease_renewed_recently_by_another_replica_is_left_alone() {
        scenario(
            vec![(
                Method::GET,
                LEASE,
                StatusCode::OK,
                lease("controller-b", "2026-11-24T09:59:55.000000Z", 3),
            )],
            async |lock| assert!(!lock.try_acquire_or_renew(now()).await.expect("election")),
        )
        .await;
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_guarded_by_its_resource_version() {
        let bodies = scenario(
            vec![
                (
                    Method::GET,
                    LEASE,
                    StatusCode::OK,
                    lease("controller-b", "2026-11-24T09:59:40.000000Z", 3),
                ),
                (
                    Method::PUT,
                    LEASE,
                    StatusCode::OK,
                    lease("controller-a", "2026-11-24T10:00:00.000000Z", 4),
                ),
            ],
            async |lock| assert!(lock.try_acquire_or_renew(now()).await.expect("election")),
        )
        .await;
        assert_eq!(bodies[1]["metadata"]["resourceVersion"], "7");
        assert_eq!(bodies[1]["spec"]["holderIdentity"], "controller-a");
        assert_eq!(bodies[1]["spec"]["leaseTransitions"], 4);
        assert_eq!(
            bodies[1]["spec"]["acquireTime"],
            "2026-11-24T10:00:00.000000Z"
        );
    }

    #[tokio::test]
    async fn the_leader_renews_without_counting_a_transition() {
        let bodies = scenario(
            vec![
                (
                    Method::GET,
                    LEASE,
                    StatusCode::OK,
                    lease("controller-a", "2026-11-24T09:59:56.000000Z", 2),
                ),
                (
                    Method::PUT,
                    LEASE,
                    StatusCode::OK,
                    lease("controller-a", "2026-11-24T10:00:00.000000Z", 2),
                ),
            ],
            async |lock| assert!(lock.try_acquire_or_renew(now()).await.expect("election")),
        )
        .await;
        assert_eq!(bodies[1]["spec"]["leaseTransitions"], 2);
        assert_eq!(
            bodies[1]["spec"]["renewTime"],
            "2026-11-24T10:00:00.000000Z"
        );
    }

    #[tokio::test]
    async fn losing_a_race_for_the_lease_is_not_leading_and_not_an_error() {
        scenario(
            vec![
                (
                    Method::GET,
                    LEASE,
                    StatusCode::OK,
                    lease("controller-b", "2026-11-24T09:00:00.000000Z", 3),
                ),
                (Method::PUT, LEASE, StatusCode::CONFLICT, conflict()),
                (Method::GET, LEASE, StatusCode::NOT_FOUND, not_found()),
                (Method::POST, LEASES, StatusCode::CONFLICT, conflict()),
            ],
            async |lock| {
                assert!(!lock.try_acquire_or_renew(now()).await.expect("election"));
                assert!(!lock.try_acquire_or_renew(now()).await.expect("election"));
            },
        )
        .await;
    }

    #[tokio::test]
    async fn a_leader_shutting_down_releases_the_lease() {
        let bodies = scenario(
            vec![
                (
                    Method::GET,
                    LEASE,
                    StatusCode::OK,
                    lease("controller-a", "2026-11-24T09:59:58.000000Z", 1),
                ),
                (
                    Method::PUT,
                    LEASE,
                    StatusCode::OK,
                    lease("", "2026-11-24T09:59:58.000000Z", 1),
                ),
                (
                    Method::GET,
                    LEASE,
                    StatusCode::OK,
                    lease("controller-b", "2026-11-24T10:00:01.000000Z", 2),
                ),
            ],
            async |lock| {
                lock.release().await.expect("release");
                // not ours any more: nothing written
                lock.release().await.expect("release");
            },
        )
        .await;
        assert_eq!(bodies[1]["spec"].get("holderIdentity"), None);
        assert_eq!(bodies[1]["spec"]["leaseDurationSeconds"], 1);
    }
}
