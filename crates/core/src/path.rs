//! Path rules: a synced path is relative, `/`-separated, valid UTF-8 and
//! normalised (no empty, `.` or `..` components, no NUL, no backslash-free
//! tricks), with bounded component and total lengths. Both the server and the
//! agent check every path with [`validate`] before touching anything.

/// Longest path in bytes, as on Linux (`PATH_MAX` less the folder root's share).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest component in bytes (`NAME_MAX` on Linux).
pub const MAX_COMPONENT_BYTES: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path {0:?} is absolute: synced paths are relative to the folder")]
    Absolute(String),
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    #[error("path {0:?} has an empty component (// or a trailing /)")]
    EmptyComponent(String),
    #[error("path {0:?} has a . or .. component")]
    DotComponent(String),
    #[error("path {0:?} contains a backslash, which is not portable")]
    Backslash(String),
    #[error("path is {0} bytes long; the limit is {MAX_PATH_BYTES}")]
    TooLong(usize),
    #[error("a component of {0:?} is longer than {MAX_COMPONENT_BYTES} bytes")]
    ComponentTooLong(String),
    #[error("path is not valid UTF-8")]
    NotUtf8,
}

/// Checks that `path` is a valid synced path, exactly as written (no
/// rewriting: a path that needs normalising is refused, so that one file has
/// one name everywhere).
pub fn validate(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong(path.len()));
    }
    if path.contains('\0') {
        return Err(PathError::Nul(path.to_owned()));
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute(path.to_owned()));
    }
    if path.contains('\\') {
        return Err(PathError::Backslash(path.to_owned()));
    }
    for component in path.split('/') {
        match component {
            "" => return Err(PathError::EmptyComponent(path.to_owned())),
            "." | ".." => return Err(PathError::DotComponent(path.to_owned())),
            _ if component.len() > MAX_COMPONENT_BYTES => {
                return Err(PathError::ComponentTooLong(path.to_owned()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Turns a relative path as the local filesystem gives it (raw bytes, `/`
/// separated) into a synced path, or says why it cannot be synced.
pub fn from_local_bytes(bytes: &[u8]) -> Result<String, PathError> {
    let text = std::str::from_utf8(bytes).map_err(|_| PathError::NotUtf8)?;
    validate(text)?;
    Ok(text.to_owned())
}

/// The parent of a synced path (`None` for a top-level entry).
pub fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(parent, _)| parent)
}

/// The last component of a synced path.
pub fn file_name(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, name)| name)
}

/// True when `path` is `ancestor` or lies below it.
pub fn is_within(path: &str, ancestor: &str) -> bool {
    path == ancestor
        || (path.len() > ancestor.len()
            && path.starts_with(ancestor)
            && path.as_bytes()[ancestor.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ordinary_paths_are_accepted() {
        for path in [
            "a",
            "a/b.txt",
            "ünïcødé/日本語.md",
            ".hidden/x",
            "a b/c-d_e",
        ] {
            assert_eq!(validate(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn dangerous_paths_are_refused_with_the_reason() {
        assert_eq!(validate(""), Err(PathError::Empty));
        assert!(matches!(
            validate("/etc/passwd"),
            Err(PathError::Absolute(_))
        ));
        assert!(matches!(
            validate("a/../../b"),
            Err(PathError::DotComponent(_))
        ));
        assert!(matches!(validate("./a"), Err(PathError::DotComponent(_))));
        assert!(matches!(
            validate("a//b"),
            Err(PathError::EmptyComponent(_))
        ));
        assert!(matches!(validate("a/"), Err(PathError::EmptyComponent(_))));
        assert!(matches!(validate("a\0b"), Err(PathError::Nul(_))));
        assert!(matches!(validate("a\\b"), Err(PathError::Backslash(_))));
        assert!(matches!(
            validate(&"x".repeat(256)),
            Err(PathError::ComponentTooLong(_))
        ));
        assert!(matches!(
            validate(&"x/".repeat(2049)),
            Err(PathError::TooLong(_))
        ));
        assert_eq!(from_local_bytes(b"a\xffb"), Err(PathError::NotUtf8));
    }

    #[test]
    fn ancestry_respects_component_boundaries() {
        assert!(is_within("a/b", "a"));
        assert!(is_within("a", "a"));
        assert!(!is_within("ab", "a"));
        assert_eq!(parent("a/b/c"), Some("a/b"));
        assert_eq!(parent("a"), None);
        assert_eq!(file_name("a/b/c.txt"), "c.txt");
    }

    fn is_valid_component(component: &str) -> bool {
        !component.is_empty()
            && component != "."
            && component != ".."
            && component.len() <= MAX_COMPONENT_BYTES
            && !component.contains(['/', '\\', '\0'])
    }

    /// Valid components: mostly short, some with dots, unicode or spaces,
    /// some right at the length limit.
    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z0-9._ -]{1,12}",
            2 => "[^/\\\\\\x00]{1,8}",
            1 => Just("x".repeat(MAX_COMPONENT_BYTES)),
            1 => (1usize..=63).prop_map(|n_chars| format!("{}.txt", "日".repeat(n_chars))),
        ]
        .prop_filter("a valid component", |component| {
            is_valid_component(component)
        })
    }

    fn components() -> impl Strategy<Value = Vec<String>> {
        proptest::collection::vec(component(), 1..6)
    }

    /// Strings over a small alphabet that holds every troublesome character,
    /// so that separators, dots and forbidden bytes meet often.
    fn tricky_string() -> impl Strategy<Value = String> {
        "[ab./\\\\\\x00é]{0,12}"
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn paths_joined_from_valid_components_are_accepted(components in components()) {
            let path = components.join("/");
            prop_assert_eq!(validate(&path), Ok(()));
            prop_assert_eq!(from_local_bytes(path.as_bytes()), Ok(path.clone()));
        }

        #[test]
        fn validate_accepts_exactly_the_joins_of_valid_components(text in tricky_string()) {
            let expected = !text.is_empty()
                && text.len() <= MAX_PATH_BYTES
                && text.split('/').all(is_valid_component);
            prop_assert_eq!(validate(&text).is_ok(), expected, "{:?}", text);
        }

        #[test]
        fn a_dot_or_empty_component_anywhere_is_refused(
            components in components(),
            insert_idx in any::<prop::sample::Index>(),
            bad in prop_oneof![Just("."), Just(".."), Just("")],
        ) {
            let mut components = components;
            components.insert(insert_idx.index(components.len() + 1), bad.to_owned());
            let path = components.join("/");
            prop_assert!(validate(&path).is_err(), "{:?}", path);
        }

        #[test]
        fn absolute_paths_are_refused(components in components()) {
            let path = format!("/{}", components.join("/"));
            prop_assert_eq!(validate(&path), Err(PathError::Absolute(path.clone())));
        }

        #[test]
        fn a_nul_or_backslash_anywhere_is_refused(
            components in components(),
            at_idx in any::<prop::sample::Index>(),
            bad in prop_oneof![Just('\0'), Just('\\')],
        ) {
            let path = components.join("/");
            let boundaries: Vec<usize> = path
                .char_indices()
                .map(|(byte_idx, _)| byte_idx)
                .chain([path.len()])
                .collect();
            let cut = boundaries[at_idx.index(boundaries.len())];
            let bad_path = format!("{}{bad}{}", &path[..cut], &path[cut..]);
            prop_assert!(validate(&bad_path).is_err(), "{:?}", bad_path);
        }

        #[test]
        fn parent_and_file_name_split_a_path_into_valid_pieces(components in components()) {
            let path = components.join("/");
            let name = file_name(&path);
            prop_assert_eq!(name, components.last().expect("one component").as_str());
            prop_assert_eq!(validate(name), Ok(()));
            prop_assert!(is_within(&path, &path));
            match parent(&path) {
                None => prop_assert_eq!(components.len(), 1),
                Some(parent_path) => {
                    prop_assert_eq!(parent_path, components[..components.len() - 1].join("/"));
                    prop_assert_eq!(validate(parent_path), Ok(()));
                    prop_assert_eq!(format!("{parent_path}/{name}"), path.clone());
                    prop_assert!(is_within(&path, parent_path));
                    prop_assert!(!is_within(parent_path, &path));
                }
            }
        }

        #[test]
        fn is_within_means_a_prefix_of_whole_components(
            path in proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("ab")], 1..5),
            ancestor in proptest::collection::vec(prop_oneof![Just("a"), Just("b"), Just("ab")], 1..5),
        ) {
            let expected = path.starts_with(&ancestor);
            prop_assert_eq!(is_within(&path.join("/"), &ancestor.join("/")), expected);
        }
    }
}
