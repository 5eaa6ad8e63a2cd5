//! `cargo xtask test`: what CI runs, and what a newcomer runs first.
//! Formatting, clippy with warnings denied, then every test of the workspace.

use crate::{cargo, run_command};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let skip_lints = args.iter().any(|arg| arg == "--no-lint");
    if !skip_lints {
        run_command(cargo().args(["fmt", "--all", "--", "--check"]))?;
        run_command(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    run_command(cargo().args(["test", "--workspace", "--all-targets"]))?;
    // doc tests are not part of --all-targets
    run_command(cargo().args(["test", "--workspace", "--doc"]))?;
    eprintln!("xtask test: all checks passed");
    Ok(())
}
