//! Names of conflict copies: `NAME.sync-conflict-YYYYMMDD-HHMMSS-AGENTID.EXT`,
//! as Syncthing users know them. The extension stays last so that the copy
//! still opens with the right program.

use crate::path;

/// The marker that every conflict copy's name carries.
pub const MARKER: &str = ".sync-conflict-";

/// The conflict copy's path for `original` (a synced path), made at
/// `unix_seconds` (UTC) by `agent_id`. To stay within the path limits the
/// stem, then the extension, then the agent id are shortened; only when the
/// original's parent leaves no room for the marker and stamp (31 bytes) is
/// the result not a valid path, so callers still [`path::validate`] it.
pub fn conflict_copy_path(original: &str, unix_seconds: i64, agent_id: &str) -> String {
    let name = path::file_name(original);
    let (stem, extension) = match name.rfind('.') {
        // a leading dot is a hidden file's name, not an extension
        Some(dot_idx) if dot_idx > 0 => (&name[..dot_idx], &name[dot_idx..]),
        _ => (name, ""),
    };
    let stamp = utc_stamp(unix_seconds);
    let agent: String = agent_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    let parent = path::parent(original);
    // the longest name that keeps the copy within the component and path limits
    let max_name_len = path::MAX_COMPONENT_BYTES
        .min(path::MAX_PATH_BYTES.saturating_sub(parent.map_or(0, |parent| parent.len() + 1)));
    // shorten the stem first, then the extension, then the agent id; never
    // the marker or the stamp
    let fixed_len = MARKER.len() + stamp.len() + 1;
    let agent = truncate(&agent, max_name_len.saturating_sub(fixed_len));
    let room = max_name_len.saturating_sub(fixed_len + agent.len());
    let extension = truncate(extension, room);
    let stem = truncate(stem, room - extension.len());
    let mut copy_name = format!("{stem}{MARKER}{stamp}-{agent}{extension}");
    if copy_name == name {
        copy_name = shorter_copy_name(stem, &stamp, agent, extension);
    }
    match parent {
        Some(parent) => format!("{parent}/{copy_name}"),
        None => copy_name,
    }
}

/// A copy name one character shorter than `{stem}{MARKER}{stamp}-{agent}{extension}`,
/// for the original whose name is that already: a copy at the length limit
/// made in the same second by the same agent, which shortening would turn
/// into itself. With nothing left to shorten, the separator changes.
fn shorter_copy_name(stem: &str, stamp: &str, agent: &str, extension: &str) -> String {
    if let Some(stem) = without_last_char(stem) {
        format!("{stem}{MARKER}{stamp}-{agent}{extension}")
    } else if let Some(extension) = without_last_char(extension) {
        format!("{MARKER}{stamp}-{agent}{extension}")
    } else if let Some(agent) = without_last_char(agent) {
        format!("{MARKER}{stamp}-{agent}")
    } else {
        format!("{MARKER}{stamp}_")
    }
}

fn without_last_char(text: &str) -> Option<&str> {
    let mut chars = text.chars();
    chars.next_back()?;
    Some(chars.as_str())
}

/// The longest prefix of `text` that has at most `max_len` bytes.
fn truncate(text: &str, max_len: usize) -> &str {
    let mut cut = max_len.min(text.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

/// True for a path whose file name is a conflict copy.
pub fn is_conflict_copy(path: &str) -> bool {
    path::file_name(path).contains(MARKER)
}

/// `YYYYMMDD-HHMMSS` in UTC (days-from-civil inverse, Howard Hinnant's algorithm).
fn utc_stamp(unix_seconds: i64) -> String {
    let days = unix_seconds.div_euclid(86_400);
    let seconds_of_day = unix_seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        seconds_of_day / 3600,
        (seconds_of_day % 3600) / 60,
        seconds_of_day % 60
    )
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::ignore::is_fixed_ignore;

    #[test]
    fn conflict_copy_keeps_directory_and_extension() {
        // 2026-11-24 13:05:09 UTC
        let path = conflict_copy_path("docs/report.final.pdf", 1_795_525_509, "laptop-1");
        assert_eq!(
            path,
            "docs/report.final.sync-conflict-20261124-130509-laptop-1.pdf"
        );
        assert!(is_conflict_copy(&path));
    }

    #[test]
    fn hidden_files_and_extensionless_names() {
        assert_eq!(
            conflict_copy_path(".bashrc", 0, "a"),
            ".bashrc.sync-conflict-19700101-000000-a"
        );
        assert_eq!(
            conflict_copy_path("Makefile", 86_399, "a b"),
            "Makefile.sync-conflict-19700101-235959-a_b"
        );
    }

    #[test]
    fn long_names_stay_within_the_component_limit() {
        let long = format!("{}.txt", "é".repeat(126));
        let copy = conflict_copy_path(&long, 0, "agent");
        assert!(copy.len() <= path::MAX_COMPONENT_BYTES);
        assert!(path::validate(&copy).is_ok());
        assert!(copy.ends_with("-agent.txt"));
    }

    #[test]
    fn a_long_extension_is_shortened_rather_than_the_limit_broken() {
        let original = format!("dir/s.{}", "e".repeat(250));
        let copy = conflict_copy_path(&original, 0, "agent");
        assert_eq!(path::validate(&copy), Ok(()));
        assert!(copy.starts_with("dir/.sync-conflict-19700101-000000-agent.eee"));
    }

    #[test]
    fn a_copy_deep_in_a_long_path_stays_within_the_path_limit() {
        let parent = vec!["d".repeat(200); 20].join("/");
        let original = format!("{parent}/{}.txt", "n".repeat(60));
        assert_eq!(path::validate(&original), Ok(()));
        let copy = conflict_copy_path(&original, 0, "agent");
        assert_eq!(path::validate(&copy), Ok(()));
        assert!(is_conflict_copy(&copy));
        assert_eq!(path::parent(&copy), Some(parent.as_str()));
    }

    /// Found by the `path` fuzz target: a copy at the length limit, copied
    /// again in the same second by the same agent, came out as itself.
    #[test]
    fn a_long_copy_copied_again_in_the_same_second_gets_another_name() {
        let original = format!("{}.txt", "n".repeat(251));
        let copy = conflict_copy_path(&original, 0, "agent");
        assert_eq!(copy.len(), path::MAX_COMPONENT_BYTES);
        let copy_of_copy = conflict_copy_path(&copy, 0, "agent");
        assert_ne!(copy_of_copy, copy);
        assert_eq!(path::validate(&copy_of_copy), Ok(()));
        assert!(is_conflict_copy(&copy_of_copy));
        assert!(copy_of_copy.ends_with("-agent.txt"));
        for (stem, extension, agent) in [("", ".t", "a"), ("", "", "a"), ("", "", "")] {
            let name = format!("{stem}{MARKER}19700101-000000-{agent}{extension}");
            let shorter = shorter_copy_name(stem, "19700101-000000", agent, extension);
            assert_ne!(shorter, name);
            assert!(shorter.len() <= name.len() && is_conflict_copy(&shorter));
            assert_eq!(path::validate(&shorter), Ok(()));
        }
    }

    #[test]
    fn leap_day_is_computed() {
        // 2024-02-29 00:00:00 UTC
        assert!(utc_stamp(1_709_164_800).starts_with("20240229"));
    }

    /// File names as users make them: with and without extensions, hidden,
    /// several dots, unicode, and right at the component limit.
    fn file_name_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-zA-Z0-9 _-]{1,12}(\\.[a-z0-9]{1,5}){0,2}",
            2 => "\\.?[^/\\\\\\x00.]{1,10}(\\.[^/\\\\\\x00.]{1,6})?",
            1 => "\\.{3,6}",
            1 => (1usize..=255, 0usize..=250).prop_map(|(stem_len, ext_len)| {
                let ext = if ext_len == 0 { String::new() } else { format!(".{}", "e".repeat(ext_len)) };
                let name = format!("{}{ext}", "s".repeat(stem_len));
                name[..name.len().min(path::MAX_COMPONENT_BYTES)].to_owned()
            }),
            1 => (1usize..=85).prop_map(|n_chars| format!("{}.md", "語".repeat(n_chars))),
        ]
        .prop_filter("a valid name", |name| path::validate(name).is_ok())
    }

    fn original_path() -> impl Strategy<Value = String> {
        let shallow = (
            proptest::collection::vec("[a-z]{1,8}", 0..4),
            file_name_strategy(),
        )
            .prop_map(|(directories, name)| {
                let mut components = directories;
                components.push(name);
                components.join("/")
            });
        // a parent that leaves the copy's name less room than a component
        // has, but still room for the marker and stamp
        let deep = (3800usize..=4064, file_name_strategy()).prop_map(|(parent_len, name)| {
            let parent: String = "d"
                .repeat(200)
                .chars()
                .chain(['/'])
                .cycle()
                .take(parent_len)
                .collect();
            let parent = parent.trim_end_matches('/');
            let name = truncate(&name, path::MAX_PATH_BYTES - parent.len() - 1);
            format!("{parent}/{}", name.trim_end_matches('.'))
        });
        prop_oneof![3 => shallow, 1 => deep]
            .prop_filter("a valid path", |original| path::validate(original).is_ok())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn conflict_copies_are_valid_recognised_siblings(
            original in original_path(),
            unix_seconds in -2_208_988_800i64..=4_102_444_800,
            agent_id in "\\PC{0,40}",
        ) {
            let copy = conflict_copy_path(&original, unix_seconds, &agent_id);
            prop_assert_eq!(path::validate(&copy), Ok(()), "{:?}", copy);
            prop_assert!(is_conflict_copy(&copy));
            prop_assert_ne!(&copy, &original);
            prop_assert_eq!(path::parent(&copy), path::parent(&original));
            if !is_fixed_ignore(&original) {
                prop_assert!(!is_fixed_ignore(&copy), "{:?}", copy);
            }
        }
    }
}
