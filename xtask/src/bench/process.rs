//! Every process the bench starts (syncfolder servers and agents, the rsync
//! daemon, Syncthing instances) runs in a process group of its own, with its
//! output in a log file, behind a [`Guard`] that kills the whole group when
//! dropped — on success, on error, and (through [`install_interrupt_handler`])
//! on Ctrl-C, which also unmounts the bench's file systems.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use anyhow::Context;

/// What must be undone if the bench is interrupted: live process groups and
/// mounted file systems (mount point, loop device).
#[derive(Default)]
struct Leftovers {
    process_groups: BTreeSet<u32>,
    mounts: Vec<(PathBuf, Option<String>)>,
}

static LEFTOVERS: Mutex<Leftovers> = Mutex::new(Leftovers {
    process_groups: BTreeSet::new(),
    mounts: Vec::new(),
});

fn leftovers() -> std::sync::MutexGuard<'static, Leftovers> {
    LEFTOVERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// On Ctrl-C (or SIGTERM): kill every live process group, unmount every
/// file system, exit 130.
pub fn install_interrupt_handler() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        eprintln!("\nbench interrupted: stopping its processes and unmounting its file systems");
        let mut leftovers = leftovers();
        for pgid in std::mem::take(&mut leftovers.process_groups) {
            kill_group(pgid);
        }
        for (mount_point, loop_device) in std::mem::take(&mut leftovers.mounts).into_iter().rev() {
            unmount(&mount_point, loop_device.as_deref());
            let _ = std::fs::remove_file(mount_point.with_extension("img"));
            let _ = std::fs::remove_dir(&mount_point);
        }
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")
}

/// Records a mount for the interrupt handler.
pub fn register_mount(mount_point: &Path, loop_device: Option<&str>) {
    leftovers()
        .mounts
        .push((mount_point.to_path_buf(), loop_device.map(str::to_owned)));
}

/// Forgets a mount that was undone normally.
pub fn unregister_mount(mount_point: &Path) {
    leftovers()
        .mounts
        .retain(|(registered, _)| registered != mount_point);
}

/// `umount` (retried while something still holds a file open, then lazy)
/// and `losetup -d`, ignoring failures (used on the way out).
pub fn unmount(mount_point: &Path, loop_device: Option<&str>) {
    let umount = |lazy: bool| {
        let mut command = Command::new("umount");
        if lazy {
            command.arg("-l");
        }
        command
            .arg(mount_point)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    let is_mounted = || {
        Command::new("mountpoint")
            .arg("-q")
            .arg(mount_point)
            .status()
            .is_ok_and(|status| status.success())
    };
    let mut unmounted = false;
    for _ in 0..50 {
        if !is_mounted() || umount(false) {
            unmounted = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if !unmounted {
        umount(true);
    }
    if let Some(loop_device) = loop_device {
        let _ = Command::new("losetup")
            .args(["-d", loop_device])
            .stderr(Stdio::null())
            .status();
    }
}

/// SIGKILL to every process of the group, then waits (up to 10 s) until
/// none is left, so that their open files no longer hold a file system.
fn kill_group(pgid: u32) {
    let signal = |signal: &str| {
        Command::new("kill")
            .args([signal, "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    signal("-KILL");
    for _ in 0..200 {
        if !group_has_live_process(pgid) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// True while a process of the group is alive (zombies, which hold no
/// files, do not count).
fn group_has_live_process(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.bytes().all(|byte| byte.is_ascii_digit()));
        is_pid
            && std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|stat| {
                    let after_name = stat.get(stat.rfind(')')? + 2..)?.to_owned();
                    Some(after_name)
                })
                .is_some_and(|after_name| {
                    let fields: Vec<&str> = after_name.split_whitespace().collect();
                    // state, ppid, pgrp
                    fields.first() != Some(&"Z")
                        && fields.get(2) == Some(&pgid.to_string().as_str())
                })
    })
}

/// A started process (and everything it forks) that dies with this value.
pub struct Guard {
    child: Child,
    name: String,
    log_path: PathBuf,
}

impl Guard {
    /// Starts `command` as the leader of a new process group, stdout and
    /// stderr appended to `log_path`.
    pub fn spawn(name: &str, command: &mut Command, log_path: &Path) -> anyhow::Result<Guard> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let log_err = log.try_clone().context("duplicating a log file handle")?;
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("starting {name} ({command:?})"))?;
        leftovers().process_groups.insert(child.id());
        Ok(Guard {
            child,
            name: name.to_owned(),
            log_path: log_path.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails, with the end of its log, when the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => anyhow::bail!(
                "{} exited ({status}); the end of {}:\n{}",
                self.name,
                self.log_path.display(),
                self.log_tail(20)
            ),
            Err(err) => Err(err).with_context(|| format!("checking on {}", self.name)),
        }
    }

    /// The last `n_lines` lines of the log.
    pub fn log_tail(&self, n_lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n_lines)..].join("\n")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let pgid = self.child.id();
        let _ = self.child.kill();
        // the leader must be reaped before `kill -0` can see its group empty
        let _ = self.child.wait();
        kill_group(pgid);
        leftovers().process_groups.remove(&pgid);
    }
}
