//! A SyncFolder's next status, computed from what a reconcile saw. Pure: the
//! reconciler writes the result only when it differs from the current
//! status, so a steady folder costs no writes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use syncfolder_core::protocol::FolderInfo;

use crate::Error;
use crate::crd::{AgentStatus, SyncFolder, SyncFolderStatus};

/// The condition every SyncFolder carries.
pub const READY: &str = "Ready";

/// What a reconcile found out.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The server folder, if it exists.
    pub folder: Option<FolderInfo>,
    /// The Secret holds a token for that folder.
    pub secret_ready: bool,
    /// The server's URL.
    pub server_url: String,
}

/// The `Ready` condition's reason for an error, in CamelCase.
pub fn reason_for(err: &Error) -> &'static str {
    match err {
        Error::Quota(_) => "InvalidSpec",
        Error::InvalidServer(_) => "InvalidSpec",
        Error::AdminTokenSecret { .. } => "AdminTokenMissing",
        Error::Server(server) if server.is_transient() => "ServerUnreachable",
        Error::Server(_) => "ServerRefused",
        Error::Kube(_) | Error::Finalizer(_) | Error::MissingNamespace => "KubernetesError",
    }
}

/// The status after a reconcile of `sync_folder` with `outcome`.
pub fn next_status(
    sync_folder: &SyncFolder,
    server_folder: &str,
    outcome: &Result<Observation, Error>,
    now: &Time,
) -> SyncFolderStatus {
    let previous = sync_folder.status.clone().unwrap_or_default();
    let generation = sync_folder.metadata.generation;
    let paused = sync_folder.spec.paused;
    let (ready, reason, message) = match outcome {
        Ok(observation) => match (&observation.folder, observation.secret_ready, paused) {
            (Some(_), true, false) => (
                true,
                "Ready",
                format!(
                    "folder {server_folder} on {} is ready; its token is in Secret {}",
                    observation.server_url,
                    crate::names::token_secret_name(sync_folder.metadata.name.as_deref().unwrap_or_default()),
                ),
            ),
            (Some(_), true, true) => (
                true,
                "Paused",
                "spec.paused is true: the controller leaves the server folder and its Secret as they are".to_owned(),
            ),
            (None, _, true) => (
                false,
                "Paused",
                format!("folder {server_folder} does not exist on {}; unpause to create it", observation.server_url),
            ),
            (_, false, true) => (
                false,
                "Paused",
                "the folder's Secret has no token; unpause to create one".to_owned(),
            ),
            // after a successful unpaused reconcile both exist
            (_, _, false) => (false, "Pending", "the folder is being set up".to_owned()),
        },
        Err(err) => (false, reason_for(err), err.to_string()),
    };
    let condition = Condition {
        type_: READY.to_owned(),
        status: if ready { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: previous
            .conditions
            .iter()
            .find(|condition| condition.type_ == READY)
            .filter(|condition| condition.status == if ready { "True" } else { "False" })
            .map_or_else(
                || now.clone(),
                |condition| condition.last_transition_time.clone(),
            ),
    };
    let mut conditions: Vec<Condition> = previous
        .conditions
        .iter()
        .filter(|condition| condition.type_ != READY)
        .cloned()
        .collect();
    conditions.insert(0, condition);

    let folder = outcome
        .as_ref()
        .ok()
        .and_then(|observation| observation.folder.as_ref());
    SyncFolderStatus {
        conditions,
        observed_generation: generation,
        server_folder: Some(server_folder.to_owned()),
        // an error keeps the last known numbers rather than blanking the columns
        files: folder.map(|info| info.n_files).or(previous.files),
        bytes: folder.map(|info| info.total_bytes).or(previous.bytes),
        conflicts: folder
            .map(|info| info.n_conflict_copies)
            .or(previous.conflicts),
        history_bytes: folder
            .map(|info| info.history_bytes)
            .or(previous.history_bytes),
        stored_bytes: folder
            .map(|info| info.stored_bytes)
            .or(previous.stored_bytes),
        connected_agents: folder.map(connected_agents).or(previous.connected_agents),
        last_change: match folder {
            Some(info) => info.last_change_ms.and_then(time_from_ms),
            None => previous.last_change.clone(),
        },
        agents: match folder {
            Some(info) => agents(info),
            None => previous.agents.clone(),
        },
    }
}

fn connected_agents(info: &FolderInfo) -> u32 {
    let connected = info.agents.iter().filter(|agent| agent.connected).count();
    u32::try_from(connected).unwrap_or(u32::MAX)
}

/// The folder's agents sorted by id, so the same agents give the same status.
fn agents(info: &FolderInfo) -> Vec<AgentStatus> {
    let mut agents: Vec<AgentStatus> = info
        .agents
        .iter()
        .map(|agent| AgentStatus {
            agent_id: agent.agent_id.clone(),
            last_successful_sync: agent.last_sync_ms.and_then(time_from_ms),
            connected: agent.connected,
        })
        .collect();
    agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
    agents
}

/// Milliseconds since the epoch as a Kubernetes time, at the second
/// Kubernetes serializes anyway (so a re-read status compares equal).
fn time_from_ms(ms: i64) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_second(ms.div_euclid(1000))
        .ok()
        .map(Time)
}

#[cfg(test)]
mod tests {
    use syncfolder_core::protocol::{AgentSeen, FolderSettings};

    use super::*;
    use crate::crd::SyncFolderSpec;
    use crate::server::ServerError;

    fn time(text: &str) -> Time {
        Time(text.parse().expect("time"))
    }

    fn sync_folder(generation: i64) -> SyncFolder {
        let mut folder = SyncFolder::new("photos", SyncFolderSpec::default());
        folder.metadata.namespace = Some("team-a".to_owned());
        folder.metadata.generation = Some(generation);
        folder
    }

    fn observed(n_files: u64) -> Observation {
        Observation {
            folder: Some(FolderInfo {
                name: "team-a.photos".to_owned(),
                settings: FolderSettings::default(),
                latest_version: 7,
                n_files,
                total_bytes: n_files * 100,
                created_at_ms: 1,
                n_conflict_copies: 2,
                last_change_ms: Some(1_795_000_000_500),
                n_history_versions: 3,
                history_bytes: 300,
                stored_bytes: n_files * 100 + 300,
                agents: vec![
                    AgentSeen {
                        agent_id: "writer-0".to_owned(),
                        last_seen_ms: 1_795_000_001_000,
                        connected: true,
                        last_sync_ms: Some(1_795_000_000_900),
                    },
                    AgentSeen {
                        agent_id: "reader-0".to_owned(),
                        last_seen_ms: 1_794_000_000_000,
                        connected: false,
                        last_sync_ms: None,
                    },
                ],
            }),
            secret_ready: true,
            server_url: "http://syncfolder:8080".to_owned(),
        }
    }

    fn ready(status: &SyncFolderStatus) -> &Condition {
        status
            .conditions
            .iter()
            .find(|condition| condition.type_ == READY)
            .expect("a Ready condition")
    }

    #[test]
    fn a_set_up_folder_is_ready_with_its_numbers() {
        let now = time("2026-11-24T10:00:00Z");
        let status = next_status(&sync_folder(3), "team-a.photos", &Ok(observed(4)), &now);
        let condition = ready(&status);
        assert_eq!(condition.status, "True");
        assert_eq!(condition.reason, "Ready");
        assert_eq!(condition.observed_generation, Some(3));
        assert_eq!(condition.last_transition_time, now);
        assert!(
            condition.message.contains("syncfolder-photos-token"),
            "{}",
            condition.message
        );
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.files, Some(4));
        assert_eq!(status.bytes, Some(400));
        assert_eq!(status.server_folder.as_deref(), Some("team-a.photos"));
        assert_eq!(status.conflicts, Some(2));
        assert_eq!(status.history_bytes, Some(300));
        assert_eq!(status.stored_bytes, Some(700));
        assert_eq!(status.connected_agents, Some(1));
        assert_eq!(
            status.last_change,
            Some(time("2026-11-18T11:06:40Z")),
            "the last change, to the second"
        );
        let agents: Vec<(&str, bool, Option<&Time>)> = status
            .agents
            .iter()
            .map(|agent| {
                (
                    agent.agent_id.as_str(),
                    agent.connected,
                    agent.last_successful_sync.as_ref(),
                )
            })
            .collect();
        assert_eq!(
            agents,
            vec![
                ("reader-0", false, None),
                ("writer-0", true, Some(&time("2026-11-18T11:06:40Z"))),
            ]
        );
    }

    #[test]
    fn a_steady_folder_gets_the_same_status_again() {
        let mut folder = sync_folder(1);
        let first = next_status(
            &folder,
            "team-a.photos",
            &Ok(observed(4)),
            &time("2026-11-24T10:00:00Z"),
        );
        folder.status = Some(first.clone());
        let second = next_status(
            &folder,
            "team-a.photos",
            &Ok(observed(4)),
            &time("2026-11-24T10:05:00Z"),
        );
        assert_eq!(second, first);
    }

    #[test]
    fn the_transition_time_moves_only_when_readiness_changes() {
        let mut folder = sync_folder(1);
        let before = time("2026-11-24T10:00:00Z");
        folder.status = Some(next_status(
            &folder,
            "team-a.photos",
            &Ok(observed(4)),
            &before,
        ));
        let unreachable: Result<Observation, Error> =
            Err(Error::Server(ServerError::Unreachable {
                url: "http://syncfolder:8080".to_owned(),
                reason: "connection refused".to_owned(),
            }));
        let after = time("2026-11-24T10:01:00Z");
        let failed = next_status(&folder, "team-a.photos", &unreachable, &after);
        let condition = ready(&failed);
        assert_eq!(condition.status, "False");
        assert_eq!(condition.reason, "ServerUnreachable");
        assert!(condition.message.contains("connection refused"));
        assert_eq!(condition.last_transition_time, after);
        // the numbers stay while the server is away
        assert_eq!(failed.files, Some(4));
    }

    #[test]
    fn a_paused_folder_says_so() {
        let mut folder = sync_folder(2);
        folder.spec.paused = true;
        let status = next_status(
            &folder,
            "team-a.photos",
            &Ok(observed(1)),
            &time("2026-11-24T10:00:00Z"),
        );
        assert_eq!(ready(&status).reason, "Paused");
        assert_eq!(ready(&status).status, "True");
        let missing = Observation {
            folder: None,
            ..observed(0)
        };
        let status = next_status(
            &folder,
            "team-a.photos",
            &Ok(missing),
            &time("2026-11-24T10:00:00Z"),
        );
        assert_eq!(ready(&status).status, "False");
        assert!(ready(&status).message.contains("unpause"));
    }

    #[test]
    fn other_conditions_are_kept() {
        let mut folder = sync_folder(1);
        let mut status = next_status(
            &folder,
            "team-a.photos",
            &Ok(observed(1)),
            &time("2026-11-24T10:00:00Z"),
        );
        status.conditions.push(Condition {
            type_: "Degraded".to_owned(),
            status: "False".to_owned(),
            reason: "AllGood".to_owned(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: time("2026-11-24T09:00:00Z"),
        });
        folder.status = Some(status);
        let next = next_status(
            &folder,
            "team-a.photos",
            &Ok(observed(1)),
            &time("2026-11-24T10:00:00Z"),
        );
        assert_eq!(next.conditions.len(), 2);
        assert_eq!(next.conditions[1].type_, "Degraded");
    }
}
