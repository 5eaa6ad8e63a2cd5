//! Properties that hold for every input, one function per fuzz target.
//!
//! Each function takes arbitrary bytes and panics exactly when a property
//! fails: it is the body of a `fuzz_target!` in `fuzz/fuzz_targets/` and,
//! on stable, of the replay test `tests/fuzz_corpus.rs`, which runs it on
//! every committed input of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/`.
//!
//! Architecture invariant: nothing here is called by syncfolder itself.

use std::io::Read;

use crate::chunking::{self, ChunkSpan, ChunkerConfig};
use crate::conflict;
use crate::hash::Hash;
use crate::ignore::{self, IgnoreRules};
use crate::path::{self, MAX_COMPONENT_BYTES, MAX_PATH_BYTES, PathError};

/// The names of the targets whose functions live in this crate.
pub const TARGETS: [&str; 3] = ["path", "ignore_rules", "chunking"];

/// The target function of one of [`TARGETS`].
pub fn target(name: &str) -> Option<fn(&[u8])> {
    match name {
        "path" => Some(path),
        "ignore_rules" => Some(ignore_rules),
        "chunking" => Some(chunking),
        _ => None,
    }
}

/// `path`: the input is a candidate synced path. Refusals are errors that
/// name the right reason; whatever is accepted is relative, `/`-separated,
/// normalised (no empty, `.` or `..` component, no NUL or backslash), within
/// the length limits, and splits into a parent and a name that are valid
/// and join back to it. Its conflict copy is a valid sibling.
pub fn path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        assert_eq!(path::from_local_bytes(data), Err(PathError::NotUtf8));
        return;
    };
    let validated = path::validate(text);
    assert_eq!(
        path::from_local_bytes(data),
        validated.clone().map(|()| text.to_owned()),
        "from_local_bytes and validate disagree on {text:?}"
    );
    match validated {
        Ok(()) => check_valid_path(text),
        Err(err) => check_refusal(text, &err),
    }
}

fn check_valid_path(text: &str) {
    assert!(!text.is_empty() && text.len() <= MAX_PATH_BYTES, "{text:?}");
    assert!(!text.starts_with('/'), "{text:?} is absolute");
    assert!(!text.contains(['\0', '\\']), "{text:?}");
    let components: Vec<&str> = text.split('/').collect();
    for component in &components {
        assert!(
            !component.is_empty() && *component != "." && *component != "..",
            "{text:?} has the component {component:?}"
        );
        assert!(component.len() <= MAX_COMPONENT_BYTES, "{text:?}");
    }
    // the standard library agrees that it is normalised and relative: every
    // component is a plain name and nothing was folded away
    let std_components: Vec<std::path::Component<'_>> =
        std::path::Path::new(text).components().collect();
    assert_eq!(std_components.len(), components.len(), "{text:?}");
    for (std_component, component) in std_components.iter().zip(&components) {
        assert_eq!(
            *std_component,
            std::path::Component::Normal(component.as_ref()),
            "{text:?}"
        );
    }
    // round trips: bytes → path, and parent + name → path
    assert_eq!(path::from_local_bytes(text.as_bytes()).as_deref(), Ok(text));
    let name = path::file_name(text);
    assert_eq!(Some(name), components.last().copied());
    assert_eq!(path::validate(name), Ok(()), "the name of {text:?}");
    assert!(path::is_within(text, text));
    match path::parent(text) {
        None => assert_eq!(components.len(), 1, "{text:?}"),
        Some(parent) => {
            assert_eq!(path::validate(parent), Ok(()), "the parent of {text:?}");
            assert_eq!(format!("{parent}/{name}"), text);
            assert!(path::is_within(text, parent));
            assert!(!path::is_within(parent, text));
        }
    }
    check_conflict_copy(text);
}

/// A conflict copy is a valid, recognisable sibling whenever the parent
/// leaves room for the marker and the stamp, as `conflict_copy_path` promises.
fn check_conflict_copy(original: &str) {
    // some time between 1900 and 2100, some agent id: both from the path
    let unix_seconds = -2_208_988_800 + (original.len() as i64 * 2_654_435_761) % 6_311_433_600;
    let agent_id = path::file_name(original);
    let copy = conflict::conflict_copy_path(original, unix_seconds, agent_id);
    let stamp_len = conflict::MARKER.len() + "YYYYMMDD-HHMMSS".len() + 1;
    let parent_len = path::parent(original).map_or(0, |parent| parent.len() + 1);
    if parent_len + stamp_len > MAX_PATH_BYTES {
        return;
    }
    assert_eq!(
        path::validate(&copy),
        Ok(()),
        "copy {copy:?} of {original:?}"
    );
    assert!(conflict::is_conflict_copy(&copy), "{copy:?}");
    assert_ne!(copy, original);
    assert_eq!(path::parent(&copy), path::parent(original));
    if !ignore::is_fixed_ignore(original) {
        assert!(!ignore::is_fixed_ignore(&copy), "{copy:?} of {original:?}");
    }
}

/// The error names a reason that the text really has.
fn check_refusal(text: &str, err: &PathError) {
    let components = || text.split('/');
    let holds = match err {
        PathError::Empty => text.is_empty(),
        PathError::TooLong(len) => *len == text.len() && text.len() > MAX_PATH_BYTES,
        PathError::Nul(echoed) => echoed == text && text.contains('\0'),
        PathError::Absolute(echoed) => echoed == text && text.starts_with('/'),
        PathError::Backslash(echoed) => echoed == text && text.contains('\\'),
        PathError::EmptyComponent(echoed) => echoed == text && components().any(str::is_empty),
        PathError::DotComponent(echoed) => {
            echoed == text && components().any(|component| component == "." || component == "..")
        }
        PathError::ComponentTooLong(echoed) => {
            echoed == text && components().any(|component| component.len() > MAX_COMPONENT_BYTES)
        }
        PathError::NotUtf8 => false,
    };
    assert!(holds, "{text:?} refused as {err:?}");
}

/// Most pattern lines, and most paths, that `ignore_rules` reads.
const MAX_IGNORE_LINES: usize = 32;

/// `ignore_rules`: the input is gitignore lines, then optionally a NUL
/// byte and paths, one per line. Building the rules never panics (a bad
/// pattern is an error), nor does asking about any path. For every valid
/// path: the agent's own state and temp files are ignored whatever the
/// rules say, nothing below an ignored directory is re-included, and the
/// fixed rules alone ignore exactly the fixed ignores.
pub fn ignore_rules(data: &[u8]) {
    let (rules_part, paths_part) = match data.iter().position(|&byte| byte == 0) {
        Some(nul_idx) => (&data[..nul_idx], &data[nul_idx + 1..]),
        None => (data, &[][..]),
    };
    let rules_text = String::from_utf8_lossy(rules_part);
    let paths_text = String::from_utf8_lossy(paths_part);
    // compiling a pattern costs far more than matching: a few dozen of each
    // keep the target fast without hiding anything a longer list could show
    let lines: Vec<&str> = rules_text.lines().take(MAX_IGNORE_LINES).collect();
    // the paths asked about: the listed ones, and each pattern read as a path
    let mut paths: Vec<&str> = paths_text.lines().take(MAX_IGNORE_LINES).collect();
    paths.extend(
        lines
            .iter()
            .map(|line| line.trim_start_matches(['!', '/']).trim_end_matches('/')),
    );
    let fixed_only = IgnoreRules::fixed_only();
    let Ok(rules) = IgnoreRules::new(lines.iter().copied()) else {
        for candidate in paths {
            fixed_only.is_ignored(candidate, false);
        }
        return;
    };
    for candidate in paths {
        for is_dir in [false, true] {
            let ignored = rules.is_ignored(candidate, is_dir);
            let fixed = fixed_only.is_ignored(candidate, is_dir);
            if path::validate(candidate).is_err() {
                continue;
            }
            assert_eq!(fixed, ignore::is_fixed_ignore(candidate), "{candidate:?}");
            if fixed {
                assert!(ignored, "{candidate:?} is a fixed ignore; rules {lines:?}");
            }
            let mut ancestor = candidate;
            while let Some(parent) = path::parent(ancestor) {
                if rules.is_ignored(parent, true) {
                    assert!(
                        ignored,
                        "{candidate:?} is not ignored below the ignored {parent:?}; rules {lines:?}"
                    );
                }
                ancestor = parent;
            }
        }
    }
}

/// `chunking`: the first three bytes pick small chunk bounds (near
/// FastCDC's smallest allowed, even, min ≤ avg ≤ max), the rest is the data. Chunks tile the data exactly,
/// stay within the bounds (only the last may be short), carry the hash of
/// their bytes, and are the same every time, streamed through any read
/// sizes or not. FastCDC forgets everything at a cut: the data before and
/// after any cut point chunk alone into exactly the chunks on that side.
pub fn chunking(data: &[u8]) {
    let [min_byte, avg_byte, max_byte, ..] = *data else {
        return;
    };
    let config = ChunkerConfig {
        min_size: 64 + 2 * (usize::from(min_byte) % 97),
        avg_size: 256 + 4 * usize::from(avg_byte),
        max_size: 1280 + 12 * usize::from(max_byte),
    };
    let data = &data[3..];
    let spans = chunking::chunk_bytes(data, config);
    check_tiling(data, &spans, config);
    assert_eq!(
        chunking::chunk_bytes(data, config),
        spans,
        "same bytes, other chunks"
    );

    let mut streamed_spans = Vec::new();
    let reader = Trickle {
        data,
        n_reads: 0,
        read_sizes: data
            .iter()
            .take(8)
            .map(|&byte| 1 + 97 * usize::from(byte))
            .collect(),
    };
    let streamed = chunking::chunk_reader(reader, config, |span, bytes| {
        assert_eq!(Hash::of(&bytes), span.chunk.hash);
        assert_eq!(bytes.len() as u64, span.chunk.size);
        streamed_spans.push(span);
    })
    .expect("reading from memory cannot fail");
    assert_eq!(streamed_spans, spans, "streaming cut elsewhere");
    let expected: Vec<_> = spans.iter().map(|span| span.chunk).collect();
    assert_eq!(streamed, expected);

    // every cut point, or a spread of them for inputs with many chunks
    let step = spans.len().div_ceil(8).max(1);
    for cut_idx in (1..spans.len()).step_by(step) {
        let cut = spans[cut_idx].offset as usize;
        let before = chunking::chunk_bytes(&data[..cut], config);
        assert_eq!(before, spans[..cut_idx], "chunks before the cut at {cut}");
        let after: Vec<ChunkSpan> = chunking::chunk_bytes(&data[cut..], config)
            .into_iter()
            .map(|span| ChunkSpan {
                offset: span.offset + cut as u64,
                chunk: span.chunk,
            })
            .collect();
        assert_eq!(after, spans[cut_idx..], "chunks after the cut at {cut}");
    }
}

fn check_tiling(data: &[u8], spans: &[ChunkSpan], config: ChunkerConfig) {
    assert_eq!(spans.is_empty(), data.is_empty());
    let mut offset = 0usize;
    for (span_idx, span) in spans.iter().enumerate() {
        assert_eq!(
            span.offset, offset as u64,
            "chunk {span_idx} is not contiguous"
        );
        let size = usize::try_from(span.chunk.size).expect("a chunk fits in memory");
        assert!(
            size > 0 && size <= config.max_size,
            "chunk {span_idx}: {size} bytes"
        );
        if span_idx + 1 < spans.len() {
            assert!(size >= config.min_size, "chunk {span_idx}: {size} bytes");
        }
        let bytes = &data[offset..offset + size];
        assert_eq!(span.chunk.hash, Hash::of(bytes), "chunk {span_idx}'s hash");
        offset += size;
    }
    assert_eq!(offset, data.len(), "the chunks do not cover the input");
}

/// A reader that hands out a few bytes per call, like a pipe.
struct Trickle<'a> {
    data: &'a [u8],
    read_sizes: Vec<usize>,
    n_reads: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let limit = self
            .read_sizes
            .get(self.n_reads % self.read_sizes.len().max(1))
            .copied()
            .unwrap_or(usize::MAX);
        self.n_reads += 1;
        let n_bytes = limit.min(buffer.len()).min(self.data.len());
        buffer[..n_bytes].copy_from_slice(&self.data[..n_bytes]);
        self.data = &self.data[n_bytes..];
        Ok(n_bytes)
    }
}
