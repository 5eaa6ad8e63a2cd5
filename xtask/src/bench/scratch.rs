//! A fresh file system for every measured run, so that no run creates files
//! soon after an earlier run deleted many (ext4's recently-deleted-inode
//! scan made creating 10,000 files 6–12× slower, BENCHMARKING.md trap 2).
//!
//! As root with `mkfs.ext4` and `losetup`, each [`Scratch`] is a sparse
//! image under `target/bench/fs/` formatted ext4 without a journal (like the
//! reference machine's disk), attached with `losetup --direct-io=on` (no
//! second copy of every page in the host's cache) and mounted; dropping it
//! unmounts, detaches and deletes the image — one file on the host, so no
//! inode scan follows. Otherwise each is a plain directory under
//! `target/bench/work/`, all removed only when the bench ends, and the
//! report says so.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use super::process;

/// How the bench gets its fresh file systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsKind {
    LoopExt4,
    PlainDirectories,
}

impl FsKind {
    pub fn describe(self) -> &'static str {
        match self {
            FsKind::LoopExt4 => "a fresh loop-mounted ext4 image (no journal, direct I/O) per run",
            FsKind::PlainDirectories => {
                "plain directories under target/bench/work, removed at the end \
                 (not root or no mkfs.ext4/losetup: run as root for fresh file systems)"
            }
        }
    }
}

/// Makes [`Scratch`] file systems under `base`.
pub struct ScratchFactory {
    base: PathBuf,
    kind: FsKind,
    n_made: usize,
}

impl ScratchFactory {
    /// Tries a loop-mounted image once; falls back to plain directories.
    pub fn new(base: &Path) -> anyhow::Result<ScratchFactory> {
        std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
        remove_leftovers(&base.join("fs"));
        let mut factory = ScratchFactory {
            base: base.to_path_buf(),
            kind: FsKind::LoopExt4,
            n_made: 0,
        };
        match factory.fresh("probe", 64 << 20) {
            Ok(_probe) => {}
            Err(err) => {
                eprintln!("bench: no loop-mounted file systems ({err:#}); using plain directories");
                factory.kind = FsKind::PlainDirectories;
            }
        }
        Ok(factory)
    }

    pub fn kind(&self) -> FsKind {
        self.kind
    }

    /// A new empty file system (or directory) with room for `size_bytes`
    /// and ext4's default number of inodes.
    pub fn fresh(&mut self, label: &str, size_bytes: u64) -> anyhow::Result<Scratch> {
        self.fresh_with_inodes(label, size_bytes, None)
    }

    /// Like [`ScratchFactory::fresh`], with room for `n_inodes` files and
    /// directories (ext4's default is one per 16 KiB).
    pub fn fresh_with_inodes(
        &mut self,
        label: &str,
        size_bytes: u64,
        n_inodes: Option<u64>,
    ) -> anyhow::Result<Scratch> {
        self.n_made += 1;
        let name = format!("{:03}-{label}", self.n_made);
        match self.kind {
            FsKind::PlainDirectories => {
                let root = self.base.join("work").join(&name);
                std::fs::create_dir_all(&root)
                    .with_context(|| format!("creating {}", root.display()))?;
                Ok(Scratch {
                    root,
                    image: None,
                    loop_device: None,
                })
            }
            FsKind::LoopExt4 => self.mount_image(&name, size_bytes, n_inodes),
        }
    }

    fn mount_image(
        &self,
        name: &str,
        size_bytes: u64,
        n_inodes: Option<u64>,
    ) -> anyhow::Result<Scratch> {
        let images = self.base.join("fs");
        std::fs::create_dir_all(&images)?;
        let image = images.join(format!("{name}.img"));
        let root = images.join(name);
        std::fs::create_dir_all(&root)?;
        let size = size_bytes.max(64 << 20).to_string();
        quiet(Command::new("truncate").args(["-s", &size]).arg(&image))?;
        // no lazy initialisation: no kernel thread zeroing inode tables while we measure
        let mut mkfs = Command::new("mkfs.ext4");
        mkfs.args(["-q", "-F", "-O", "^has_journal"])
            .args(["-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard"]);
        if let Some(n_inodes) = n_inodes {
            mkfs.args(["-N", &n_inodes.to_string()]);
        }
        quiet(mkfs.arg(&image))?;
        let output = Command::new("losetup")
            .args(["--direct-io=on", "--find", "--show"])
            .arg(&image)
            .output()
            .context("running losetup")?;
        if !output.status.success() {
            let _ = std::fs::remove_file(&image);
            bail!(
                "losetup failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let loop_device = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        process::register_mount(&root, Some(&loop_device));
        let scratch = Scratch {
            root: root.clone(),
            image: Some(image),
            loop_device: Some(loop_device.clone()),
        };
        quiet(Command::new("mount").arg(&loop_device).arg(&root))?;
        Ok(scratch)
    }
}

/// Unmounts, detaches and deletes what a killed bench left in `images`.
fn remove_leftovers(images: &Path) {
    let Ok(entries) = std::fs::read_dir(images) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            let image = path.with_extension("img");
            let loop_device = Command::new("losetup")
                .arg("-j")
                .arg(&image)
                .output()
                .ok()
                .and_then(|output| {
                    let text = String::from_utf8_lossy(&output.stdout).into_owned();
                    text.split(':').next().map(str::to_owned)
                })
                .filter(|device| device.starts_with("/dev/"));
            process::unmount(&path, loop_device.as_deref());
            let _ = std::fs::remove_dir(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn quiet(command: &mut Command) -> anyhow::Result<()> {
    let output = command
        .stdout(Stdio::null())
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// One fresh file system; see the module comment for what dropping it does.
pub struct Scratch {
    pub root: PathBuf,
    image: Option<PathBuf>,
    loop_device: Option<String>,
}

impl Scratch {
    /// A directory below the root, created.
    pub fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.root.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// Writes back everything dirty on this file system (`sync -f`), so a
    /// measurement does not pay for writing the data set.
    pub fn sync(&self) -> anyhow::Result<()> {
        quiet(Command::new("sync").arg("-f").arg(&self.root))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(image) = &self.image {
            process::unmount(&self.root, self.loop_device.as_deref());
            process::unregister_mount(&self.root);
            let _ = std::fs::remove_file(image);
            let _ = std::fs::remove_dir(&self.root);
        }
    }
}

/// Bytes free on the file system holding `path` (`df`).
pub fn free_bytes(path: &Path) -> anyhow::Result<u64> {
    let output = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .context("running df")?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|line| line.trim().parse().ok())
        .with_context(|| format!("reading the free space of {} from df", path.display()))
}
