//! `cargo xtask sim [--runs N] [--seed S] [--steps K] [--jobs J] [--trace]`:
//! the deterministic simulation (crates/sim), built optimised, over many
//! seeds. A failure prints its seed and the command that replays it.

use crate::{cargo, run_command};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut command = cargo();
    command.args(["run", "--release", "--quiet", "-p", "syncfolder-sim", "--"]);
    if !args.iter().any(|arg| arg == "--runs") && !args.iter().any(|arg| arg == "--seed") {
        command.args(["--runs", "1000"]);
    }
    command.args(args);
    run_command(&mut command)
}
