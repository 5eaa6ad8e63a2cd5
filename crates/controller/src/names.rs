//! Names derived from a SyncFolder: its folder on the server and its Secret.
//! The controller, the webhook and `syncfolder inject` must agree on them,
//! so they live here and nowhere else.

use sha2::{Digest, Sha256};

/// Longest folder name the server accepts.
pub const MAX_SERVER_FOLDER_NAME: usize = 63;

/// Keys of the folder's Secret, which the controller writes and the sidecar
/// reads through `secretKeyRef`.
pub const SECRET_KEY_TOKEN: &str = "token";
/// The folder's name on the server.
pub const SECRET_KEY_FOLDER: &str = "folder";
/// The server's base URL.
pub const SECRET_KEY_SERVER: &str = "server";

/// The Secret holding a folder's token, its server name and server URL:
/// `syncfolder-<name>-token`, in the SyncFolder's namespace.
pub fn token_secret_name(sync_folder_name: &str) -> String {
    format!("syncfolder-{sync_folder_name}-token")
}

/// The folder's name on the server: `<namespace>.<name>`, which is unique
/// across the cluster because namespaces cannot contain a dot. When that is
/// longer than the server allows, it is cut and ends in 8 hex digits of the
/// SHA-256 of the full name, so it stays unique and stable.
///
/// Kubernetes names are lower-case letters, digits, `-` and `.`, starting
/// with a letter or digit: every character is one the server accepts.
pub fn server_folder_name(namespace: &str, name: &str) -> String {
    let full = format!("{namespace}.{name}");
    if full.len() <= MAX_SERVER_FOLDER_NAME {
        return full;
    }
    let digest = hex::encode(Sha256::digest(full.as_bytes()));
    let keep = MAX_SERVER_FOLDER_NAME - 9;
    // Kubernetes names are ASCII, but never slice through a character
    let mut cut = keep.min(full.len());
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    let prefix = full[..cut].trim_end_matches(['.', '-', '_']);
    format!("{prefix}-{}", &digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_namespace_dot_name() {
        assert_eq!(server_folder_name("team-a", "photos"), "team-a.photos");
        assert_eq!(token_secret_name("photos"), "syncfolder-photos-token");
    }

    #[test]
    fn the_same_name_in_two_namespaces_is_two_server_folders() {
        assert_ne!(
            server_folder_name("a", "shared"),
            server_folder_name("b", "shared")
        );
    }

    #[test]
    fn long_names_are_cut_to_63_characters_and_stay_distinct() {
        let namespace = "n".repeat(63);
        let first = server_folder_name(&namespace, &"x".repeat(63));
        let second = server_folder_name(&namespace, &format!("{}y", "x".repeat(62)));
        assert_eq!(first.len(), MAX_SERVER_FOLDER_NAME);
        assert_eq!(second.len(), MAX_SERVER_FOLDER_NAME);
        assert_ne!(first, second);
        assert_eq!(first, server_folder_name(&namespace, &"x".repeat(63)));
        assert!(first.starts_with(&namespace[..20]));
    }

    #[test]
    fn a_cut_never_leaves_a_dangling_separator() {
        // the cut falls just after the dot between namespace and name
        let namespace = "n".repeat(53);
        let cut = server_folder_name(&namespace, &"x".repeat(20));
        assert!(!cut.contains(".-"), "{cut}");
        assert!(cut.len() <= MAX_SERVER_FOLDER_NAME);
    }

    #[test]
    fn every_server_folder_name_passes_the_servers_rule() {
        // the server's rule: 1-63 characters, [a-z0-9] first, then [a-z0-9._-]
        let names = [
            server_folder_name("default", "photos"),
            server_folder_name(&"a".repeat(63), &"b.c-d".repeat(40)),
            server_folder_name("x", &"9".repeat(250)),
        ];
        for name in names {
            assert!((1..=63).contains(&name.len()), "{name}");
            let mut characters = name.chars();
            let first = characters.next().expect("not empty");
            assert!(
                first.is_ascii_lowercase() || first.is_ascii_digit(),
                "{name}"
            );
            assert!(
                characters.all(|c| c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, '.' | '_' | '-')),
                "{name}"
            );
        }
    }
}
