//! `cargo xtask test`: what CI runs, and what a newcomer runs first.
//! Installs what the tests need when it is missing (`deps`), then
//! formatting, clippy with warnings denied, then every test of the
//! workspace, then the server's metadata tests and whole API suite again
//! with the metadata in PostgreSQL (a throwaway server from `testkit`),
//! with one line that totals the tests run, then a quick bench
//! run that proves the harness and every peer deliver their data
//! (`bench --quick`; `--no-bench` skips it), then a short fuzz pass of
//! every fuzz target (`fuzz`; `--no-fuzz` skips it).

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use anyhow::{Context, bail};

use crate::{cargo, project_root, run_command};

/// Seconds each fuzz target runs after the tests.
const FUZZ_SECONDS_PER_TARGET: u64 = 10;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let skip_lints = args.iter().any(|arg| arg == "--no-lint");
    let skip_fuzz = args.iter().any(|arg| arg == "--no-fuzz");
    let skip_bench = args.iter().any(|arg| arg == "--no-bench");
    crate::deps::ensure()?;
    if !skip_lints {
        run_command(cargo().args(["fmt", "--all", "--", "--check"]))?;
        // fuzz/ is a workspace of its own, which --all does not reach
        run_command(cargo().args(["fmt", "--manifest-path", "fuzz/Cargo.toml", "--", "--check"]))?;
        run_command(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    let mut totals = run_tests(&["--workspace", "--all-targets"], &[])?;
    // the second metadata backend: the same tests, each on a database of its own
    // (`--workspace` as above: selecting one package would resolve features
    // differently and rebuild much of the workspace)
    let postgres = syncfolder_testkit::TestPostgres::start();
    let on_postgres = [("SYNCFOLDER_TEST_POSTGRES_URL", postgres.url())];
    for selection in [
        &["--workspace", "--test", "api"][..],
        &["--workspace", "--lib", "--", "metadata::"][..],
    ] {
        let pass = run_tests(selection, &on_postgres)?;
        totals.n_passed += pass.n_passed;
        totals.n_failed += pass.n_failed;
    }
    drop(postgres);
    println!(
        "xtask test: {} passed, {} failed",
        totals.n_passed, totals.n_failed
    );
    if totals.n_failed > 0 {
        bail!("{} tests failed", totals.n_failed);
    }
    if totals.n_passed == 0 {
        bail!("no test ran");
    }
    if !skip_bench {
        // the binary `cargo test` just built: building it again with
        // `cargo build -p syncfolder` resolves features differently and
        // would rebuild much of the workspace
        crate::bench::run(&["--quick".to_owned(), "--no-build".to_owned()])?;
    }
    if !skip_fuzz {
        run_fuzz_pass()?;
    }
    Ok(())
}

/// Every fuzz target for a few seconds, on top of the committed corpus:
/// a crash fails the run. Without cargo-fuzz (which `deps` could not
/// install) the pass is skipped, except on CI.
fn run_fuzz_pass() -> anyhow::Result<()> {
    if !crate::deps::cargo_fuzz_is_installed() {
        if crate::deps::is_ci() {
            bail!("cargo-fuzz is not installed, so the fuzz pass cannot run: `cargo xtask deps`");
        }
        eprintln!(
            "warning: skipping the fuzz pass: cargo-fuzz is not installed (`cargo xtask deps`)"
        );
        return Ok(());
    }
    crate::fuzz::run(&["--seconds".to_owned(), FUZZ_SECONDS_PER_TARGET.to_string()])
}

#[derive(Debug, Default)]
struct Totals {
    n_passed: u64,
    n_failed: u64,
}

/// `cargo test` of `selection` with the project's tools first on the PATH
/// and `envs` set, echoing its output and adding up its `test result:` lines.
fn run_tests(selection: &[&str], envs: &[(&str, String)]) -> anyhow::Result<Totals> {
    let mut command = cargo();
    command
        .arg("test")
        .args(selection)
        .envs(envs.iter().map(|(name, value)| (name, value)))
        // helm, kubectl and kubernetes-validate from `cargo xtask deps`
        .env("PATH", crate::kube_tools::path_with_tools())
        .current_dir(project_root())
        .stdout(Stdio::piped());
    eprintln!("$ {command:?}");
    let mut child = command.spawn().context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test output")?;
    let mut totals = Totals::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(summary) = line.strip_prefix("test result: ") {
            totals.n_passed += count_before(summary, " passed");
            totals.n_failed += count_before(summary, " failed");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() && totals.n_failed == 0 {
        bail!("cargo test failed ({status})");
    }
    Ok(totals)
}

/// The number just before `label` in a summary such as `ok. 3 passed; 0 failed; ...`.
fn count_before(summary: &str, label: &str) -> u64 {
    summary
        .split(';')
        .map(str::trim)
        .find_map(|part| part.strip_suffix(label)?.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::count_before;

    #[test]
    fn summaries_are_added_up() {
        let summary =
            "ok. 34 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(count_before(summary, " passed"), 34);
        assert_eq!(count_before(summary, " failed"), 2);
        assert_eq!(
            count_before("FAILED. 10 passed; 1 failed; 0 ignored", " failed"),
            1
        );
    }
}
