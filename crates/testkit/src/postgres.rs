//! A throwaway PostgreSQL server: `initdb` into a temp directory, `postgres`
//! on a free loopback port (TCP only, trust authentication), stopped and
//! started again at will, deleted when dropped.
//!
//! PostgreSQL refuses to run as root; as root (containers, CI) the server
//! runs as the `postgres` user through `setpriv`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::tools::{postgres_bin_dir, required_program};
use crate::{free_port, wait_until};

pub struct TestPostgres {
    dir: Dir,
    bin: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
    n_starts: u32,
    /// Commits reach the disk (`fsync`, `synchronous_commit`), as in
    /// production: for measurements. Tests run without, for speed.
    durable: bool,
}

impl std::fmt::Debug for TestPostgres {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TestPostgres")
            .field("port", &self.port)
            .field("running", &self.child.is_some())
            .finish_non_exhaustive()
    }
}

/// Where the cluster lives: a temp directory deleted on drop, or a kept one.
enum Dir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl Dir {
    fn path(&self) -> &Path {
        match self {
            Dir::Temp(temp) => temp.path(),
            Dir::Kept(path) => path,
        }
    }
}

impl TestPostgres {
    /// Creates a cluster in a temp directory and starts it on a free port;
    /// fails the test when PostgreSQL's binaries are missing or it does not
    /// come up.
    pub fn start() -> TestPostgres {
        let dir = tempfile::Builder::new()
            .prefix("syncfolder-pg-")
            .tempdir()
            .expect("temp dir for PostgreSQL");
        TestPostgres::start_in_dir(Dir::Temp(dir), free_port(), false)
    }

    /// [`TestPostgres::start`] with durable commits, as PostgreSQL runs in
    /// production: what a benchmark against other durable stores measures.
    pub fn start_durable() -> TestPostgres {
        let dir = tempfile::Builder::new()
            .prefix("syncfolder-pg-")
            .tempdir()
            .expect("temp dir for PostgreSQL");
        TestPostgres::start_in_dir(Dir::Temp(dir), free_port(), true)
    }

    /// Starts the cluster kept in `dir` (created there the first time) on
    /// `port`; the directory outlives the server (for `cargo xtask demo`).
    pub fn start_kept(dir: &Path, port: u16) -> TestPostgres {
        std::fs::create_dir_all(dir)
            .unwrap_or_else(|err| panic!("creating {}: {err}", dir.display()));
        TestPostgres::start_in_dir(Dir::Kept(dir.to_path_buf()), port, false)
    }

    fn start_in_dir(dir: Dir, port: u16, durable: bool) -> TestPostgres {
        let bin = postgres_bin_dir();
        let run_as = if is_root() {
            let ids = postgres_user_ids();
            chown(dir.path(), ids);
            Some(ids)
        } else {
            None
        };
        let mut postgres = TestPostgres {
            dir,
            bin,
            port,
            run_as,
            child: None,
            n_starts: 0,
            durable,
        };
        if postgres.data_dir().join("PG_VERSION").is_file() {
            postgres.start_again();
            return postgres;
        }
        let data = postgres.data_dir();
        let output = postgres
            .command("initdb")
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("running initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        postgres.start_again();
        postgres
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates the database `name` (with `createdb`) and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let output = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ])
            .output()
            .expect("running createdb");
        assert!(
            output.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the server (again) on the same port and data, and waits until
    /// it accepts connections.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "PostgreSQL is already running");
        self.n_starts += 1;
        let log_path = self.log_path();
        let log = std::fs::File::create(&log_path).expect("PostgreSQL log file");
        if let Some(ids) = self.run_as {
            chown(&log_path, ids);
        }
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "unix_socket_directories="]);
        if !self.durable {
            // a test server: durability is not what is tested here
            command
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting postgres");
        self.child = Some(child);
        let ready = wait_until(Duration::from_secs(60), || {
            std::fs::read_to_string(&log_path)
                .is_ok_and(|log| log.contains("ready to accept connections"))
        });
        assert!(
            ready,
            "PostgreSQL did not start within 60 s; its log:\n{}",
            self.log()
        );
    }

    /// Stops the server (fast shutdown: open sessions are ended) and waits
    /// for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGINT is PostgreSQL's fast shutdown
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let exited = wait_until(Duration::from_secs(30), || {
            child.try_wait().ok().flatten().is_some()
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server log of the latest start.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("postgres-{}.log", self.n_starts))
    }

    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        match self.run_as {
            Some((uid, gid)) => {
                let mut command = Command::new(required_program("setpriv"));
                command
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(program);
                command
            }
            None => Command::new(program),
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_root() -> bool {
    id_of(&["-u"]) == Some(0)
}

/// The uid and gid of the `postgres` user (made by Debian's package), else `nobody`.
fn postgres_user_ids() -> (u32, u32) {
    for user in ["postgres", "nobody"] {
        if let (Some(uid), Some(gid)) = (id_of(&["-u", user]), id_of(&["-g", user])) {
            return (uid, gid);
        }
    }
    panic!("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as");
}

fn id_of(args: &[&str]) -> Option<u32> {
    let output = Command::new("id").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout).ok()?.trim().parse().ok()
}

fn chown(path: &Path, (uid, gid): (u32, u32)) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|err| panic!("chown {}: {err}", path.display()));
}
