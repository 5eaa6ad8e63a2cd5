//! `cargo xtask fuzz`: coverage-guided fuzzing (libFuzzer) on the stable
//! toolchain.
//!
//! `cargo fuzz build` (cargo-fuzz from `deps`) builds every target of
//! `fuzz/` into `target/fuzz/build-<sanitizer>/` with `RUSTC_BOOTSTRAP=1`,
//! which lets stable rustc take the `-Z` flags cargo-fuzz passes
//! (`-Zsanitizer` with `--sanitizer address`). Each target then runs for
//! `--seconds` with the committed inputs (`fuzz/corpus/<target>/`,
//! `fuzz/regressions/<target>/`) as seed, and writes what it finds to a
//! fresh `target/fuzz/<target>/` (`corpus/`, `artifacts/`, `fuzz.log`): a
//! run never changes the tree.
//! A crash fails the run, naming the input and the command that replays it.
//!
//! `--update-corpus` merges the new inputs into `fuzz/corpus/<target>/`
//! with libFuzzer, as `cargo fuzz cmin` does, but keeping the hand-written
//! `seed-*` files and counting edges only (`-set_cover_merge=1
//! -use_counters=0`): what stays is the seeds plus a small set of inputs
//! that reach every edge the old corpus and the run reached, tens of KiB
//! where a plain merge keeps a MiB.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::{cargo, project_root, run_command};

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 60;
/// The longest one input may run before libFuzzer calls it a hang.
const INPUT_TIMEOUT_SECONDS: u64 = 10;
/// No sanitizer by default: syncfolder has no unsafe code, and without
/// AddressSanitizer a target runs 4–6 times more inputs per second in a
/// tenth of the memory; `--sanitizer address` is there for long runs that
/// want the dependencies' unsafe code checked too.
const DEFAULT_SANITIZER: &str = "none";
/// Hand-written corpus files, kept by `--update-corpus`.
const SEED_PREFIX: &str = "seed-";

#[derive(Debug)]
struct Options {
    seconds: u64,
    targets: Vec<String>,
    sanitizer: String,
    update_corpus: bool,
    reproduce: Option<PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut options = Options {
            seconds: DEFAULT_SECONDS,
            targets: Vec::new(),
            sanitizer: DEFAULT_SANITIZER.to_owned(),
            update_corpus: false,
            reproduce: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| {
                args.next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--seconds" => {
                    options.seconds = value("--seconds")?
                        .parse()
                        .context("--seconds takes a whole number")?;
                }
                "--target" => options.targets.push(value("--target")?),
                "--sanitizer" => options.sanitizer = value("--sanitizer")?,
                "--update-corpus" => options.update_corpus = true,
                "--reproduce" => options.reproduce = Some(PathBuf::from(value("--reproduce")?)),
                other => bail!(
                    "unknown argument {other:?}: cargo xtask fuzz [--seconds N] [--target NAME]... \
                     [--sanitizer address|none] [--update-corpus] [--reproduce FILE]"
                ),
            }
        }
        if options.reproduce.is_some() && options.targets.len() != 1 {
            bail!("--reproduce FILE needs exactly one --target NAME");
        }
        Ok(options)
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let options = Options::parse(args)?;
    let fuzz = Fuzz::build(&options)?;
    if let Some(input) = &options.reproduce {
        return fuzz.reproduce(&options.targets[0], input);
    }
    let targets = if options.targets.is_empty() {
        fuzz.targets.clone()
    } else {
        options.targets.clone()
    };
    let mut runs = Vec::new();
    for target in &targets {
        let run = fuzz.run_target(target, options.seconds)?;
        if options.update_corpus && run.crash.is_none() {
            fuzz.update_corpus(target)?;
        }
        runs.push(run);
    }
    print_summary(&runs);
    let crashed: Vec<&TargetRun> = runs.iter().filter(|run| run.crash.is_some()).collect();
    if crashed.is_empty() {
        return Ok(());
    }
    for run in &crashed {
        let crash = run.crash.as_deref().unwrap_or("(no input written)");
        eprintln!(
            "\n{target} failed on {crash}\n  replay it:  cargo xtask fuzz --target {target} --reproduce {crash}\n  \
             once fixed, keep it as a test:  cp {crash} fuzz/regressions/{target}/<what-it-broke>\n  \
             the log:  {log}",
            target = run.target,
            log = run.log.display(),
        );
    }
    bail!(
        "{} fuzz target(s) found an input that breaks a property: {}",
        crashed.len(),
        crashed
            .iter()
            .map(|run| run.target.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The built fuzz targets.
struct Fuzz {
    root: PathBuf,
    targets: Vec<String>,
    bin_dir: PathBuf,
}

impl Fuzz {
    /// Makes sure cargo-fuzz is there, checks that the toolchain is stable
    /// and builds every target.
    fn build(options: &Options) -> anyhow::Result<Fuzz> {
        crate::deps::ensure_cargo_fuzz()?;
        let root = project_root();
        let rustc = rustc_version_verbose()?;
        let version = rustc.lines().next().unwrap_or_default().to_owned();
        if version.contains("nightly") || version.contains("beta") || version.contains("-dev") {
            bail!(
                "{version} is not a stable release: run `cargo xtask fuzz` with the stable \
                 toolchain (it sets RUSTC_BOOTSTRAP=1 for cargo fuzz)"
            );
        }
        eprintln!("fuzzing with {version} (stable) and RUSTC_BOOTSTRAP=1");
        let host = rustc
            .lines()
            .find_map(|line| line.strip_prefix("host: "))
            .context("rustc -vV names no host")?
            .to_owned();
        let started = Instant::now();
        run_command(&mut cargo_fuzz(&[
            "build",
            "--sanitizer",
            &options.sanitizer,
            "--target-dir",
            &build_dir(&root, &options.sanitizer).display().to_string(),
        ]))?;
        eprintln!(
            "fuzz targets built in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        let listed = capture(&mut cargo_fuzz(&["list"]))?;
        let targets: Vec<String> = listed.lines().map(str::trim).map(str::to_owned).collect();
        for target in &options.targets {
            if !targets.contains(target) {
                bail!(
                    "no fuzz target {target:?}: the targets are {}",
                    targets.join(", ")
                );
            }
        }
        let bin_dir = build_dir(&root, &options.sanitizer)
            .join(host)
            .join("release");
        Ok(Fuzz {
            root,
            targets,
            bin_dir,
        })
    }

    fn binary(&self, target: &str) -> Command {
        let mut command = Command::new(self.bin_dir.join(target));
        command
            .current_dir(&self.root)
            // what cargo fuzz sets for AddressSanitizer
            .env("ASAN_OPTIONS", "detect_odr_violation=0");
        command
    }

    /// Seed directories of `target`: the committed corpus and regressions.
    fn seed_dirs(&self, target: &str) -> Vec<PathBuf> {
        ["corpus", "regressions"]
            .iter()
            .map(|kind| self.root.join("fuzz").join(kind).join(target))
            .filter(|dir| dir.is_dir())
            .collect()
    }

    fn run_target(&self, target: &str, seconds: u64) -> anyhow::Result<TargetRun> {
        let out_dir = self.root.join("target/fuzz").join(target);
        remove_dir_if_present(&out_dir)?;
        let new_corpus = out_dir.join("corpus");
        let artifacts = out_dir.join("artifacts");
        for dir in [&new_corpus, &artifacts] {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let log_path = out_dir.join("fuzz.log");
        let mut log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;

        let mut command = self.binary(target);
        command
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
            .arg("-print_final_stats=1")
            .arg(format!("-artifact_prefix={}/", artifacts.display()));
        let dictionary = self
            .root
            .join("fuzz/dictionaries")
            .join(format!("{target}.dict"));
        if dictionary.is_file() {
            command.arg(format!("-dict={}", dictionary.display()));
        }
        command
            .arg(&new_corpus)
            .args(self.seed_dirs(target))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        eprintln!(
            "fuzzing {target} for {seconds} s (log: {})",
            log_path.display()
        );
        let cpu_before = children_cpu_seconds();
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting the fuzz target {target}"))?;
        let stderr = child.stderr.take().context("the fuzz target's output")?;
        let mut stats = FuzzStats::default();
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading the fuzz target's output")?;
            writeln!(log, "{line}").context("writing the fuzz log")?;
            stats.read(&line);
            if is_progress(&line) {
                eprintln!("  {target}: {line}");
            }
        }
        let status = child.wait().context("waiting for the fuzz target")?;
        let wall_seconds = started.elapsed().as_secs_f64();
        let cpu_seconds = children_cpu_seconds()
            .zip(cpu_before)
            .map(|(after, before)| after - before);
        let crash = if status.success() {
            None
        } else {
            let crash = stats
                .crash_input
                .clone()
                .or_else(|| first_file(&artifacts).map(|path| path.display().to_string()));
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            eprintln!("{target} exited with {status}:");
            for line in crash_report(&text) {
                eprintln!("  | {line}");
            }
            Some(crash.unwrap_or_else(|| format!("(no input written; exit {status})")))
        };
        Ok(TargetRun {
            target: target.to_owned(),
            wall_seconds,
            cpu_seconds,
            stats,
            n_new_inputs: count_files(&new_corpus),
            crash,
            log: log_path,
        })
    }

    /// Runs `target` once on `input`, showing its whole output.
    fn reproduce(&self, target: &str, input: &Path) -> anyhow::Result<()> {
        let status = self
            .binary(target)
            .arg(input)
            .env("RUST_BACKTRACE", "1")
            .status()
            .with_context(|| format!("running the fuzz target {target}"))?;
        if !status.success() {
            bail!("{} breaks {target} ({status})", input.display());
        }
        eprintln!("{} passes {target}", input.display());
        Ok(())
    }

    /// Replaces `fuzz/corpus/<target>/` with its seeds plus few inputs of
    /// the old corpus and the last run that keep every edge covered.
    fn update_corpus(&self, target: &str) -> anyhow::Result<()> {
        let corpus = self.root.join("fuzz/corpus").join(target);
        let new_inputs = self.root.join("target/fuzz").join(target).join("corpus");
        let merged = self.root.join("target/fuzz").join(target).join("merged");
        remove_dir_if_present(&merged)?;
        std::fs::create_dir_all(&merged)
            .with_context(|| format!("creating {}", merged.display()))?;
        std::fs::create_dir_all(&corpus)
            .with_context(|| format!("creating {}", corpus.display()))?;
        for seed in files_in(&corpus)? {
            if is_seed(&seed) {
                let name = seed.file_name().context("a seed file name")?;
                std::fs::copy(&seed, merged.join(name))
                    .with_context(|| format!("copying {}", seed.display()))?;
            }
        }
        let output = self
            .binary(target)
            .args(["-set_cover_merge=1", "-use_counters=0"])
            .arg(&merged)
            .arg(&corpus)
            .arg(&new_inputs)
            .output()
            .with_context(|| format!("merging the corpus of {target}"))?;
        if !output.status.success() {
            bail!(
                "merging the corpus of {target} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        for old in files_in(&corpus)? {
            std::fs::remove_file(&old).with_context(|| format!("removing {}", old.display()))?;
        }
        let mut n_bytes = 0;
        let kept = files_in(&merged)?;
        for file in &kept {
            let name = file.file_name().context("a corpus file name")?;
            n_bytes += std::fs::copy(file, corpus.join(name))
                .with_context(|| format!("copying {}", file.display()))?;
        }
        eprintln!(
            "fuzz/corpus/{target}/: {} inputs, {} KiB",
            kept.len(),
            n_bytes.div_ceil(1024)
        );
        Ok(())
    }
}

/// What one target's run did.
struct TargetRun {
    target: String,
    wall_seconds: f64,
    cpu_seconds: Option<f64>,
    stats: FuzzStats,
    n_new_inputs: usize,
    crash: Option<String>,
    log: PathBuf,
}

/// Numbers read from libFuzzer's output.
#[derive(Debug, Default, PartialEq, Eq)]
struct FuzzStats {
    n_execs: u64,
    coverage: u64,
    features: u64,
    crash_input: Option<String>,
}

impl FuzzStats {
    fn read(&mut self, line: &str) {
        if let Some(count) = line.strip_prefix("stat::number_of_executed_units:") {
            self.n_execs = count.trim().parse().unwrap_or(self.n_execs);
        }
        if let Some(coverage) = number_after(line, " cov: ") {
            self.coverage = coverage;
        }
        if let Some(features) = number_after(line, " ft: ") {
            self.features = features;
        }
        // "Test unit written to <prefix>crash-<sha1>"
        if let Some(path) = line.split("Test unit written to ").nth(1) {
            self.crash_input = Some(path.trim().to_owned());
        }
    }
}

/// From a crashed run's log: the panic message and libFuzzer's verdict with
/// the input, or the last lines when there is no panic (a hang, a leak).
fn crash_report(log: &str) -> Vec<&str> {
    let lines: Vec<&str> = log.lines().collect();
    let Some(panic_idx) = lines.iter().position(|line| line.contains(" panicked at ")) else {
        return lines[lines.len().saturating_sub(30)..].to_vec();
    };
    let message = lines[panic_idx..]
        .iter()
        .take(8)
        .enumerate()
        .take_while(|(line_idx, line)| {
            *line_idx == 0 || !(line.starts_with("stack backtrace:") || line.starts_with("note: "))
        })
        .map(|(_, line)| *line);
    let verdict = lines[panic_idx..].iter().filter(|line| {
        [
            "ERROR: libFuzzer",
            "SUMMARY: ",
            "Test unit written to ",
            "Base64: ",
        ]
        .iter()
        .any(|marker| line.contains(marker))
    });
    message.chain(verdict.copied()).collect()
}

/// libFuzzer's status lines worth showing while it runs: the corpus is
/// loaded (`INITED`), every power of two of execs (`pulse`), the end (`DONE`).
fn is_progress(line: &str) -> bool {
    let mut words = line.split_whitespace();
    words.next().is_some_and(|word| word.starts_with('#'))
        && words
            .next()
            .is_some_and(|word| matches!(word, "INITED" | "pulse" | "DONE"))
}

fn number_after(line: &str, label: &str) -> Option<u64> {
    let rest = line.split(label).nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

fn print_summary(runs: &[TargetRun]) {
    println!(
        "\n{:<22} {:>7} {:>8} {:>12} {:>9} {:>7} {:>7} {:>5}  result",
        "target", "wall s", "CPU s", "execs", "execs/s", "cov", "ft", "new"
    );
    for run in runs {
        println!(
            "{:<22} {:>7.0} {:>8} {:>12} {:>9.0} {:>7} {:>7} {:>5}  {}",
            run.target,
            run.wall_seconds,
            run.cpu_seconds
                .map_or("?".to_owned(), |seconds| format!("{seconds:.0}")),
            run.stats.n_execs,
            run.stats.n_execs as f64 / run.wall_seconds.max(0.001),
            run.stats.coverage,
            run.stats.features,
            run.n_new_inputs,
            if run.crash.is_some() { "CRASH" } else { "ok" },
        );
    }
    let total_cpu: f64 = runs.iter().filter_map(|run| run.cpu_seconds).sum();
    let total_execs: u64 = runs.iter().map(|run| run.stats.n_execs).sum();
    println!(
        "xtask fuzz: {} targets, {total_execs} execs, {total_cpu:.0} CPU s",
        runs.len()
    );
}

/// `cargo fuzz <args>` on `fuzz/`, with the tools directory on the PATH and
/// `RUSTC_BOOTSTRAP=1`.
fn cargo_fuzz(args: &[&str]) -> Command {
    let mut command = cargo();
    command
        .arg("fuzz")
        .args(args)
        .arg("--fuzz-dir")
        .arg(project_root().join("fuzz"))
        .env("PATH", crate::kube_tools::path_with_tools())
        .env("RUSTC_BOOTSTRAP", "1")
        .env_remove("CARGO_TARGET_DIR");
    command
}

/// One build directory per sanitizer, so that switching is no rebuild.
fn build_dir(root: &Path, sanitizer: &str) -> PathBuf {
    root.join("target/fuzz").join(format!("build-{sanitizer}"))
}

/// `rustc -vV` of the toolchain cargo runs.
fn rustc_version_verbose() -> anyhow::Result<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    capture(Command::new(rustc).arg("-vV"))
}

fn capture(command: &mut Command) -> anyhow::Result<String> {
    let description = format!("{command:?}");
    let output = command
        .current_dir(project_root())
        .output()
        .with_context(|| format!("starting {description}"))?;
    if !output.status.success() {
        bail!(
            "{description} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// User plus system CPU seconds of this process's waited-for children
/// (`cutime` and `cstime` of `/proc/self/stat`, in clock ticks of 1/100 s).
fn children_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // the fields after the command name, which may hold spaces: state is field 3
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
    let ticks = |field_number: usize| fields.get(field_number - 3)?.parse::<u64>().ok();
    Some((ticks(16)? + ticks(17)?) as f64 / 100.0)
}

fn is_seed(path: &Path) -> bool {
    path.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(SEED_PREFIX))
}

fn files_in(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn count_files(dir: &Path) -> usize {
    files_in(dir).map_or(0, |files| files.len())
}

fn first_file(dir: &Path) -> Option<PathBuf> {
    files_in(dir).ok()?.into_iter().next()
}

fn remove_dir_if_present(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing {}", dir.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_output_is_read_into_stats() {
        let mut stats = FuzzStats::default();
        for line in [
            "#2\tINITED cov: 12 ft: 13 corp: 1/1b exec/s: 0 rss: 30Mb",
            "#1048576\tpulse  cov: 1234 ft: 5678 corp: 90/2Kb lim: 4096 exec/s: 349525 rss: 40Mb",
            "==1== ERROR: libFuzzer: deadly signal",
            "artifact_prefix='target/fuzz/path/artifacts/'; Test unit written to target/fuzz/path/artifacts/crash-0a1b",
            "stat::number_of_executed_units: 2000000",
        ] {
            stats.read(line);
        }
        assert_eq!(
            stats,
            FuzzStats {
                n_execs: 2_000_000,
                coverage: 1234,
                features: 5678,
                crash_input: Some("target/fuzz/path/artifacts/crash-0a1b".to_owned()),
            }
        );
    }

    #[test]
    fn a_crash_report_is_the_panic_message_and_the_verdict() {
        let log = "#2\tINITED cov: 12\n\
            thread '<unnamed>' (7) panicked at crates/core/src/fuzz_targets.rs:38:5:\n\
            \"a//b\" refused as Absolute\n\
            stack backtrace:\n   0: frame\n\
            ==1== ERROR: libFuzzer: deadly signal\n\
            SUMMARY: libFuzzer: deadly signal\n\
            artifact_prefix='a/'; Test unit written to a/crash-1\n\
            Base64: YS8vYg==\n\
            stat::number_of_executed_units: 3";
        assert_eq!(
            crash_report(log),
            [
                "thread '<unnamed>' (7) panicked at crates/core/src/fuzz_targets.rs:38:5:",
                "\"a//b\" refused as Absolute",
                "==1== ERROR: libFuzzer: deadly signal",
                "SUMMARY: libFuzzer: deadly signal",
                "artifact_prefix='a/'; Test unit written to a/crash-1",
                "Base64: YS8vYg==",
            ]
        );
        assert_eq!(crash_report("a\nb").len(), 2, "no panic: the last lines");
    }

    #[test]
    fn only_status_lines_are_shown_as_progress() {
        assert!(is_progress(
            "#2\tINITED cov: 12 ft: 13 corp: 1/1b exec/s: 0 rss: 30Mb"
        ));
        assert!(is_progress(
            "#1048576\tpulse  cov: 1234 ft: 5678 corp: 90/2Kb"
        ));
        assert!(is_progress(
            "#2000000\tDONE   cov: 1234 ft: 5678 corp: 90/2Kb"
        ));
        assert!(!is_progress("#13\tNEW    cov: 3969 ft: 7791 corp: 10/594b"));
        assert!(!is_progress("INFO: Loaded 1 modules"));
    }

    #[test]
    fn options_default_to_every_target_for_a_minute() {
        let options = Options::parse(&[]).expect("no arguments");
        assert_eq!(options.seconds, DEFAULT_SECONDS);
        assert!(options.targets.is_empty());
        assert!(!options.update_corpus);
        let args: Vec<String> = ["--seconds", "5", "--target", "path", "--update-corpus"]
            .map(str::to_owned)
            .to_vec();
        let options = Options::parse(&args).expect("valid arguments");
        assert_eq!(
            (options.seconds, options.targets),
            (5, vec!["path".to_owned()])
        );
        assert!(options.update_corpus);
        assert!(Options::parse(&["--reproduce".to_owned(), "x".to_owned()]).is_err());
        assert!(Options::parse(&["--seconds".to_owned()]).is_err());
    }

    #[test]
    fn the_cpu_time_of_children_is_read_from_proc() {
        assert!(children_cpu_seconds().is_some());
    }
}
