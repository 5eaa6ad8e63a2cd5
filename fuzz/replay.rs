//! Replays the committed inputs of a fuzz target on stable, with no fuzzing
//! dependency: the seeds and what the fuzzers kept (`fuzz/corpus/<target>/`)
//! and the inputs that once broke a property (`fuzz/regressions/<target>/`).
//! The stable tests of core and server include this file with `#[path]`.

use std::path::{Path, PathBuf};

/// The `fuzz/` directory of the repository.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Every file in `fuzz/<kind>/<target>/`, sorted; none when the directory
/// does not exist.
pub fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|entry| entry.expect("listing a fuzz input directory").path())
            .filter(|path| path.is_file())
            .collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(err) => panic!("reading {}: {err}", dir.display()),
    };
    files.sort();
    files
}

/// Runs `run` on every corpus and regression input of `target`; fails
/// naming each file that breaks a property (its panic message is printed
/// above) and when the corpus is empty. Returns the number of inputs.
pub fn replay(target: &str, run: fn(&[u8])) -> usize {
    let corpus = inputs("corpus", target);
    assert!(!corpus.is_empty(), "fuzz/corpus/{target}/ is empty");
    let files: Vec<PathBuf> = corpus
        .into_iter()
        .chain(inputs("regressions", target))
        .collect();
    let failed: Vec<String> = files
        .iter()
        .filter(|file| {
            let data = std::fs::read(file).expect("reading a fuzz input");
            std::panic::catch_unwind(|| run(&data)).is_err()
        })
        .map(|file| file.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} inputs break the {target} target:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
    files.len()
}

/// The target is built by the fuzz crate (`fuzz/fuzz_targets/<target>.rs`).
pub fn check_fuzz_target_file(target: &str) {
    let file = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
    assert!(file.is_file(), "{} is missing", file.display());
}
