//! The annotations a pod (or its workload) opts in with, and what they ask
//! for: [`InjectTarget`].

use std::collections::BTreeMap;

use syncfolder_core::protocol::FolderMode;

use crate::inject::InjectError;
use crate::sidecar::TMP_VOLUME_NAME;

/// Name of the SyncFolder (in the pod's namespace) the pod syncs.
pub const FOLDER_ANNOTATION: &str = "syncfolder.io/folder";
/// Name of the pod volume the sidecar keeps in sync with the folder.
pub const VOLUME_ANNOTATION: &str = "syncfolder.io/volume";
/// Optional: this pod's agent overrides the folder's mode
/// (`two-way`, `send-only`, `receive-only`), e.g. a reader that never uploads.
pub const MODE_ANNOTATION: &str = "syncfolder.io/mode";

/// What injection needs to know: which SyncFolder, which volume, and an
/// optional per-pod mode. The SyncFolder's name is enough: the folder's
/// server name, server URL and token reach the sidecar through the folder's
/// Secret (see [`crate::names`]), and its mode comes from the server. That is
/// why `syncfolder inject` can work offline, without the SyncFolder object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectTarget {
    /// The SyncFolder's name, in the pod's namespace.
    pub folder: String,
    /// The pod volume to sync.
    pub volume: String,
    /// Overrides the folder's mode for this pod's agent.
    pub mode: Option<FolderMode>,
}

impl InjectTarget {
    /// A target without a mode override.
    pub fn new(folder: impl Into<String>, volume: impl Into<String>) -> Self {
        InjectTarget {
            folder: folder.into(),
            volume: volume.into(),
            mode: None,
        }
    }

    /// Reads the `syncfolder.io/*` annotations: `Ok(None)` when the pod does
    /// not ask for a folder, an error when it asks in a way that cannot work.
    pub fn from_annotations(
        annotations: &BTreeMap<String, String>,
    ) -> Result<Option<InjectTarget>, InjectError> {
        let Some(folder) = annotations.get(FOLDER_ANNOTATION) else {
            return Ok(None);
        };
        let folder = folder.trim();
        if !is_kubernetes_name(folder) {
            return Err(InjectError::InvalidAnnotation {
                annotation: FOLDER_ANNOTATION,
                value: folder.to_owned(),
                reason: "it must be the name of a SyncFolder in the pod's namespace: at most 63 lower-case letters, digits, '-' or '.'",
            });
        }
        let volume = match annotations
            .get(VOLUME_ANNOTATION)
            .map(|volume| volume.trim())
        {
            None | Some("") => {
                return Err(InjectError::MissingVolumeAnnotation {
                    folder: folder.to_owned(),
                });
            }
            Some(TMP_VOLUME_NAME) => {
                return Err(InjectError::InvalidAnnotation {
                    annotation: VOLUME_ANNOTATION,
                    value: TMP_VOLUME_NAME.to_owned(),
                    reason: "that volume belongs to the sidecar itself; name the volume your application writes to",
                });
            }
            Some(volume) => volume,
        };
        let mode = match annotations.get(MODE_ANNOTATION) {
            None => None,
            Some(mode) => Some(mode.trim().parse::<FolderMode>().map_err(|_| {
                InjectError::InvalidAnnotation {
                    annotation: MODE_ANNOTATION,
                    value: mode.clone(),
                    reason: "use two-way, send-only or receive-only, or leave it out to follow the folder's mode",
                }
            })?),
        };
        Ok(Some(InjectTarget {
            folder: folder.to_owned(),
            volume: volume.to_owned(),
            mode,
        }))
    }
}

/// A DNS-subdomain-like object name of at most 63 characters, which is what
/// a SyncFolder name is allowed to be (the CRD's CEL rule).
fn is_kubernetes_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alphanumeric = |byte: &u8| byte.is_ascii_lowercase() || byte.is_ascii_digit();
    (1..=63).contains(&bytes.len())
        && bytes.first().is_some_and(alphanumeric)
        && bytes.last().is_some_and(alphanumeric)
        && bytes
            .iter()
            .all(|byte| alphanumeric(byte) || *byte == b'-' || *byte == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn a_pod_without_the_folder_annotation_asks_for_nothing() {
        let plain = annotations(&[
            ("prometheus.io/scrape", "true"),
            (VOLUME_ANNOTATION, "data"),
        ]);
        assert_eq!(InjectTarget::from_annotations(&plain), Ok(None));
    }

    #[test]
    fn folder_and_volume_make_a_target() {
        let asked = annotations(&[(FOLDER_ANNOTATION, "photos"), (VOLUME_ANNOTATION, " data ")]);
        assert_eq!(
            InjectTarget::from_annotations(&asked),
            Ok(Some(InjectTarget::new("photos", "data")))
        );
    }

    #[test]
    fn the_mode_annotation_overrides_the_folder_mode() {
        let asked = annotations(&[
            (FOLDER_ANNOTATION, "photos"),
            (VOLUME_ANNOTATION, "data"),
            (MODE_ANNOTATION, "receive-only"),
        ]);
        let target = InjectTarget::from_annotations(&asked)
            .expect("valid")
            .expect("asked");
        assert_eq!(target.mode, Some(FolderMode::ReceiveOnly));
    }

    #[test]
    fn a_folder_without_a_volume_is_refused_with_the_fix() {
        let asked = annotations(&[(FOLDER_ANNOTATION, "photos")]);
        let err = InjectTarget::from_annotations(&asked).expect_err("no volume");
        assert_eq!(
            err,
            InjectError::MissingVolumeAnnotation {
                folder: "photos".to_owned()
            }
        );
        assert!(err.to_string().contains("syncfolder.io/volume"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        for pairs in [
            vec![(FOLDER_ANNOTATION, "Photos"), (VOLUME_ANNOTATION, "data")],
            vec![(FOLDER_ANNOTATION, ""), (VOLUME_ANNOTATION, "data")],
            vec![(FOLDER_ANNOTATION, "a/b"), (VOLUME_ANNOTATION, "data")],
            vec![
                (FOLDER_ANNOTATION, "photos"),
                (VOLUME_ANNOTATION, TMP_VOLUME_NAME),
            ],
            vec![
                (FOLDER_ANNOTATION, "photos"),
                (VOLUME_ANNOTATION, "data"),
                (MODE_ANNOTATION, "both"),
            ],
        ] {
            let err = InjectTarget::from_annotations(&annotations(&pairs)).expect_err("invalid");
            assert!(
                matches!(err, InjectError::InvalidAnnotation { .. }),
                "{err}"
            );
        }
        let long = "a".repeat(64);
        let too_long = annotations(&[(FOLDER_ANNOTATION, &long), (VOLUME_ANNOTATION, "data")]);
        assert!(InjectTarget::from_annotations(&too_long).is_err());
    }
}
