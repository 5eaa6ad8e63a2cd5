//! Names of conflict copies: `NAME.sync-conflict-YYYYMMDD-HHMMSS-AGENTID.EXT`,
//! as Syncthing users know them. The extension stays last so that the copy
//! still opens with the right program.

use crate::path;

/// The marker that every conflict copy's name carries.
pub const MARKER: &str = ".sync-conflict-";

/// The conflict copy's path for `original` (a synced path), made at
/// `unix_seconds` (UTC) by `agent_id`.
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
    let mut copy_name = format!("{stem}{MARKER}{stamp}-{agent}{extension}");
    // stay within the component limit by shortening the stem, never the marker
    while copy_name.len() > path::MAX_COMPONENT_BYTES {
        let keep = stem
            .len()
            .saturating_sub(copy_name.len() - path::MAX_COMPONENT_BYTES);
        let mut cut = keep;
        while !stem.is_char_boundary(cut) {
            cut -= 1;
        }
        copy_name = format!("{}{MARKER}{stamp}-{agent}{extension}", &stem[..cut]);
        if cut == 0 {
            break;
        }
    }
    match path::parent(original) {
        Some(parent) => format!("{parent}/{copy_name}"),
        None => copy_name,
    }
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
    use super::*;

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
    fn leap_day_is_computed() {
        // 2024-02-29 00:00:00 UTC
        assert!(utc_stamp(1_709_164_800).starts_with("20240229"));
    }
}
