//! A throwaway Garage cluster, the S3-compatible object store: three nodes
//! on loopback, each a `garage server` process of its own with its own
//! config file, metadata and data directories in one temp directory;
//! replication factor 3, fsync of data and metadata on; one bucket and one
//! key that may read, write and own it. Nodes are killed (SIGKILL) and
//! started again at will; all are killed when dropped.
//!
//! No Debian package has Garage: `cargo xtask deps` builds [`GARAGE_VERSION`]
//! from crates.io into the machine's cache directory ([`install_root`]),
//! outside the clone, so that later clones reuse it.
//!
//! The setup talks to the nodes as an operator would, through the `garage`
//! CLI, which calls a running node over RPC: `garage json-api`, the CLI's
//! door to the admin API, takes and prints JSON, so nothing parses tables.

use std::fmt::Write as _;
use std::io::Read as _;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{free_port, wait_until};

mod install;
pub use install::{
    GARAGE_VERSION, find_garage, garage_path, install_root, installed_version, required_garage,
};

/// Nodes in a [`TestGarage`]; each holds a copy of every object.
pub const N_NODES: usize = 3;

/// The S3 region the cluster answers to (`s3_region`).
pub const REGION: &str = "garage";

const BUCKET: &str = "syncfolder-test";
const ZONE: &str = "dc1";
/// The capacity given to each node in the layout (`-c 1G`): a weight for
/// spreading partitions, not a limit on what a test may store.
const NODE_CAPACITY_BYTES: u64 = 1_000_000_000;
/// How long a node gets to answer, to connect or to take a layout.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How many lines of a node's log a failure shows.
const LOG_TAIL_LINES: usize = 40;

pub struct TestGarage {
    dir: tempfile::TempDir,
    garage: PathBuf,
    rpc_secret: String,
    nodes: Vec<Node>,
    access_key_id: String,
    secret_access_key: String,
}

impl std::fmt::Debug for TestGarage {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TestGarage")
            .field("dir", &self.dir.path())
            .field("nodes", &self.nodes)
            .field("bucket", &BUCKET)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// One node: its directory (config, `meta/`, `data/`, logs), its ports and
/// its process while it runs.
#[derive(Debug)]
struct Node {
    dir: PathBuf,
    rpc_port: u16,
    s3_port: u16,
    /// The full node ID (hex public key), known once it first started.
    id: String,
    child: Option<Child>,
    n_starts: u32,
}

impl Node {
    fn config_path(&self) -> PathBuf {
        self.dir.join("garage.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("garage-{}.log", self.n_starts))
    }

    /// `<id>@127.0.0.1:<rpc port>`, as `node connect` and `bootstrap_peers`
    /// take it.
    fn peer_address(&self) -> String {
        format!("{}@127.0.0.1:{}", self.id, self.rpc_port)
    }
}

impl TestGarage {
    /// Starts three nodes, connects them, gives each a role in layout
    /// version 1, and creates the bucket and the key; fails the test when
    /// Garage is missing or the cluster does not come up.
    pub fn start() -> TestGarage {
        let garage = required_garage();
        let dir = tempfile::Builder::new()
            .prefix("syncfolder-garage-")
            .tempdir()
            .expect("temp dir for Garage");
        let nodes = (0..N_NODES)
            .map(|node_idx| {
                let node_dir = dir.path().join(format!("node-{node_idx}"));
                std::fs::create_dir(&node_dir).expect("a Garage node's directory");
                Node {
                    dir: node_dir,
                    rpc_port: free_port(),
                    s3_port: free_port(),
                    id: String::new(),
                    child: None,
                    n_starts: 0,
                }
            })
            .collect();
        let mut cluster = TestGarage {
            dir,
            garage,
            rpc_secret: random_hex(32),
            nodes,
            access_key_id: String::new(),
            secret_access_key: String::new(),
        };
        for node_idx in 0..N_NODES {
            cluster.write_config(node_idx, &[]);
            cluster.spawn(node_idx);
        }
        for node_idx in 0..N_NODES {
            cluster.wait_until_answering(node_idx);
            cluster.nodes[node_idx].id = cluster.read_node_id(node_idx);
        }
        cluster.connect_nodes();
        cluster.assign_layout();
        cluster.create_bucket_and_key();
        cluster
    }

    /// `http://127.0.0.1:PORT`: node `node_idx`'s S3 API (path-style
    /// requests; every node serves every bucket).
    pub fn s3_endpoint(&self, node_idx: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[node_idx].s3_port)
    }

    pub fn bucket(&self) -> &str {
        BUCKET
    }

    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    pub fn region(&self) -> &str {
        REGION
    }

    /// Node `node_idx`'s full ID (64 hex digits), as `garage status` and
    /// the admin API name it.
    pub fn node_id(&self, node_idx: usize) -> &str {
        &self.nodes[node_idx].id
    }

    pub fn is_running(&self, node_idx: usize) -> bool {
        self.nodes[node_idx].child.is_some()
    }

    /// Kills node `node_idx` with SIGKILL, as a crash or a power cut would,
    /// and reaps it; does nothing when it is not running. The others see it
    /// down only when they next write to it, within about 20 s
    /// ([`TestGarage::wait_until_connected`] waits for that).
    pub fn kill(&mut self, node_idx: usize) {
        if let Some(mut child) = self.nodes[node_idx].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `node_idx` again on the same ports and directories, and
    /// waits until it answers and it and every other running node see each
    /// other connected. It finds the others through its `bootstrap_peers`;
    /// they are told to connect back (`garage node connect`), since on their
    /// own they retry a peer they lost only every 30 s.
    pub fn start_again(&mut self, node_idx: usize) {
        assert!(
            !self.is_running(node_idx),
            "Garage node {node_idx} is already running"
        );
        self.spawn(node_idx);
        self.wait_until_answering(node_idx);
        let peer_address = self.nodes[node_idx].peer_address();
        for other_idx in 0..N_NODES {
            if other_idx != node_idx && self.is_running(other_idx) {
                self.connect(other_idx, std::slice::from_ref(&peer_address));
            }
        }
        self.wait_until_connected();
    }

    /// `garage -c <node's config>`: the CLI, calling node `node_idx` over RPC.
    pub fn command(&self, node_idx: usize) -> Command {
        let mut command = Command::new(&self.garage);
        command
            .arg("-c")
            .arg(self.nodes[node_idx].config_path())
            // the config is the only source of settings
            .env_remove("GARAGE_CONFIG_FILE")
            .env_remove("GARAGE_RPC_HOST")
            .env_remove("GARAGE_RPC_SECRET")
            .env_remove("GARAGE_RPC_SECRET_FILE")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        command
    }

    /// `garage json-api <endpoint> <payload>` against node `node_idx`: an
    /// admin API call (`GetClusterStatus`, `GetBucketInfo`, ...) with its
    /// JSON answer, or the CLI's error output.
    pub fn json_api(
        &self,
        node_idx: usize,
        endpoint: &str,
        payload: &Value,
    ) -> Result<Value, String> {
        let output = self
            .command(node_idx)
            .args(["json-api", endpoint, &payload.to_string()])
            .output()
            .map_err(|err| format!("running {}: {err}", self.garage.display()))?;
        if !output.status.success() {
            return Err(format!(
                "garage json-api {endpoint} on node {node_idx} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        serde_json::from_slice(&output.stdout).map_err(|err| {
            format!(
                "garage json-api {endpoint} printed no JSON ({err}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// The nodes node `node_idx` sees connected, itself included, by index
    /// (`isUp` in `GetClusterStatus`, the healthy nodes of `garage status`).
    pub fn nodes_up_seen_from(&self, node_idx: usize) -> Result<Vec<usize>, String> {
        let status = self.json_api(node_idx, "GetClusterStatus", &Value::Null)?;
        let nodes = status["nodes"]
            .as_array()
            .ok_or_else(|| format!("GetClusterStatus without nodes: {status}"))?;
        let mut up: Vec<usize> = nodes
            .iter()
            .filter(|node| node["isUp"] == Value::Bool(true))
            .filter_map(|node| self.node_idx_of(node["id"].as_str()?))
            .collect();
        up.sort_unstable();
        Ok(up)
    }

    /// Waits until every running node sees exactly the running nodes up
    /// (fails the test after 60 s). After [`TestGarage::start_again`] that
    /// is already so; after [`TestGarage::kill`] it takes up to about 20 s:
    /// Garage notices a dead peer only when a write to it fails, at its next
    /// status exchange (every 10 s) or ping (every 15 s).
    pub fn wait_until_connected(&self) {
        let running: Vec<usize> = (0..N_NODES)
            .filter(|&node_idx| self.is_running(node_idx))
            .collect();
        let mut views = Vec::new();
        let connected = wait_until(TIMEOUT, || {
            views = running
                .iter()
                .map(|&node_idx| self.nodes_up_seen_from(node_idx))
                .collect();
            views.iter().all(|view| view.as_ref() == Ok(&running))
        });
        if !connected {
            let node_idx = running.first().copied().unwrap_or_default();
            self.fail(
                node_idx,
                &format!(
                    "running nodes {running:?} did not all see each other within {TIMEOUT:?}; \
                     what each saw: {views:?}"
                ),
            );
        }
    }

    /// The log of node `node_idx`'s latest start.
    pub fn log(&self, node_idx: usize) -> String {
        std::fs::read_to_string(self.nodes[node_idx].log_path()).unwrap_or_default()
    }

    fn node_idx_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.id == id)
    }

    /// Writes node `node_idx`'s config, readable by its owner only as it
    /// holds the RPC secret (Garage 2.5 checks the mode only of separate
    /// secret files, `rpc_secret_file`, not of the config).
    fn write_config(&self, node_idx: usize, bootstrap_peers: &[String]) {
        let node = &self.nodes[node_idx];
        let config = config_toml(node, &self.rpc_secret, bootstrap_peers);
        let path = node.config_path();
        std::fs::write(&path, config)
            .unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|err| panic!("chmod 600 {}: {err}", path.display()));
    }

    fn spawn(&mut self, node_idx: usize) {
        let mut command = self.command(node_idx);
        let node = &mut self.nodes[node_idx];
        node.n_starts += 1;
        let log = std::fs::File::create(node.log_path()).expect("Garage log file");
        let child = command
            .arg("server")
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("starting {}: {err}", self.garage.display()));
        node.child = Some(child);
    }

    /// Waits until the node's RPC answers the CLI and its S3 port accepts
    /// connections; panics with its log when it exits or takes too long.
    fn wait_until_answering(&mut self, node_idx: usize) {
        let s3_address = ("127.0.0.1", self.nodes[node_idx].s3_port);
        let mut last_error = String::new();
        let answering = wait_until(TIMEOUT, || {
            if let Some(status) = self.exit_status(node_idx) {
                last_error = format!("it exited ({status})");
                return true;
            }
            match self.json_api(node_idx, "GetClusterStatus", &Value::Null) {
                Ok(_) => {}
                Err(err) => {
                    last_error = err;
                    return false;
                }
            }
            last_error = "its S3 port does not accept connections".to_owned();
            TcpStream::connect(s3_address).is_ok()
        });
        if answering && self.is_running(node_idx) {
            return;
        }
        self.fail(
            node_idx,
            &format!("did not come up within {TIMEOUT:?}: {last_error}"),
        );
    }

    /// The node's exit status when its process has ended (and forgets the
    /// process).
    fn exit_status(&mut self, node_idx: usize) -> Option<std::process::ExitStatus> {
        let node = &mut self.nodes[node_idx];
        let status = node.child.as_mut()?.try_wait().ok().flatten()?;
        node.child = None;
        Some(status)
    }

    /// `garage node id -q`: `<64 hex digits>@127.0.0.1:<rpc port>`.
    fn read_node_id(&self, node_idx: usize) -> String {
        let output = self
            .command(node_idx)
            .args(["node", "id", "-q"])
            .output()
            .expect("running garage node id");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let id = stdout.trim().split('@').next().unwrap_or_default();
        if !output.status.success() || id.len() != 64 {
            self.fail(
                node_idx,
                &format!(
                    "`garage node id` failed ({}): {stdout}{}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                ),
            );
        }
        id.to_owned()
    }

    /// Connects every node to every other (`garage node connect`), waits
    /// until all see all, and writes each one's peers into its config as
    /// `bootstrap_peers`, so that a node started again finds the others at
    /// once rather than at their next retry.
    fn connect_nodes(&self) {
        for node_idx in 0..N_NODES {
            let peers: Vec<String> = self.nodes[node_idx + 1..]
                .iter()
                .map(Node::peer_address)
                .collect();
            if !peers.is_empty() {
                self.connect(node_idx, &peers);
            }
        }
        for node_idx in 0..N_NODES {
            let peers: Vec<String> = (0..N_NODES)
                .filter(|&peer_idx| peer_idx != node_idx)
                .map(|peer_idx| self.nodes[peer_idx].peer_address())
                .collect();
            self.write_config(node_idx, &peers);
        }
        self.wait_until_connected();
    }

    /// `garage node connect <peer>` on node `node_idx` for each of `peers`
    /// (`<id>@<ip>:<port>`).
    fn connect(&self, node_idx: usize, peers: &[String]) {
        let results = self.expect_json_api(node_idx, "ConnectClusterNodes", &json!(peers));
        let all_connected = results
            .as_array()
            .is_some_and(|results| results.iter().all(|result| result["success"] == true));
        if !all_connected {
            self.fail(
                node_idx,
                &format!("could not connect to {peers:?}: {results}"),
            );
        }
    }

    /// `garage layout assign -z dc1 -c 1G <id>` for each node, then `garage
    /// layout apply --version 1`; waits until every node has version 1.
    fn assign_layout(&self) {
        let roles: Vec<Value> = self
            .nodes
            .iter()
            .map(|node| {
                json!({
                    "id": node.id,
                    "zone": ZONE,
                    "capacity": NODE_CAPACITY_BYTES,
                    "tags": [],
                })
            })
            .collect();
        self.expect_json_api(0, "UpdateClusterLayout", &json!({ "roles": roles }));
        self.expect_json_api(0, "ApplyClusterLayout", &json!({ "version": 1 }));
        let mut versions = Vec::new();
        let applied = wait_until(TIMEOUT, || {
            versions = (0..N_NODES)
                .map(|node_idx| {
                    self.json_api(node_idx, "GetClusterStatus", &Value::Null)
                        .map(|status| status["layoutVersion"].clone())
                })
                .collect();
            versions.iter().all(|version| version == &Ok(json!(1)))
        });
        if !applied {
            self.fail(
                0,
                &format!("layout version 1 did not reach every node: {versions:?}"),
            );
        }
    }

    /// `garage key create`, `garage bucket create` and `garage bucket allow
    /// --read --write --owner`.
    fn create_bucket_and_key(&mut self) {
        let key = self.expect_json_api(0, "CreateKey", &json!({ "name": BUCKET }));
        let (Some(access_key_id), Some(secret_access_key)) =
            (key["accessKeyId"].as_str(), key["secretAccessKey"].as_str())
        else {
            self.fail(0, &format!("CreateKey answered without the key: {key}"));
        };
        self.access_key_id = access_key_id.to_owned();
        self.secret_access_key = secret_access_key.to_owned();
        let bucket = self.expect_json_api(0, "CreateBucket", &json!({ "globalAlias": BUCKET }));
        let Some(bucket_id) = bucket["id"].as_str() else {
            self.fail(0, &format!("CreateBucket answered without an id: {bucket}"));
        };
        self.expect_json_api(
            0,
            "AllowBucketKey",
            &json!({
                "bucketId": bucket_id,
                "accessKeyId": self.access_key_id,
                "permissions": { "read": true, "write": true, "owner": true },
            }),
        );
    }

    fn expect_json_api(&self, node_idx: usize, endpoint: &str, payload: &Value) -> Value {
        self.json_api(node_idx, endpoint, payload)
            .unwrap_or_else(|err| self.fail(node_idx, &err))
    }

    /// Fails the test with `message` and the tail of the node's log.
    fn fail(&self, node_idx: usize, message: &str) -> ! {
        let log = self.log(node_idx);
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        panic!(
            "Garage node {node_idx} ({}): {message}\nthe last lines of its log ({}):\n{tail}",
            self.nodes[node_idx].dir.display(),
            self.nodes[node_idx].log_path().display()
        );
    }
}

impl Drop for TestGarage {
    fn drop(&mut self) {
        for node_idx in 0..N_NODES {
            self.kill(node_idx);
        }
    }
}

/// A node's `garage.toml`. No admin, K2V or web endpoint: the tests use S3,
/// and the CLI reaches the admin API over RPC.
fn config_toml(node: &Node, rpc_secret: &str, bootstrap_peers: &[String]) -> String {
    // `{:?}` quotes a string the way TOML's basic strings do for the
    // characters paths and these addresses have
    let path = |name: &str| format!("{:?}", node.dir.join(name).display().to_string());
    format!(
        r#"metadata_dir = {metadata_dir}
data_dir = {data_dir}
db_engine = "lmdb"
metadata_fsync = true
data_fsync = true

replication_factor = 3

rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{rpc_secret}"
bootstrap_peers = {bootstrap_peers:?}

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3_port}"
"#,
        metadata_dir = path("meta"),
        data_dir = path("data"),
        rpc_port = node.rpc_port,
        s3_port = node.s3_port,
    )
}

/// `n_bytes` from the system's random source, in hex.
fn random_hex(n_bytes: usize) -> String {
    let mut bytes = vec![0; n_bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut urandom| urandom.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes.iter().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_config_names_its_own_ports_and_its_peers() {
        let node = Node {
            dir: PathBuf::from("/tmp/garage/node-1"),
            rpc_port: 4001,
            s3_port: 4002,
            id: "ab".repeat(32),
            child: None,
            n_starts: 0,
        };
        let config = config_toml(&node, &"0f".repeat(32), &["cd@127.0.0.1:4003".to_owned()]);
        assert!(config.contains("metadata_dir = \"/tmp/garage/node-1/meta\"\n"));
        assert!(config.contains("rpc_bind_addr = \"127.0.0.1:4001\"\n"));
        assert!(config.contains("api_bind_addr = \"127.0.0.1:4002\"\n"));
        assert!(config.contains("replication_factor = 3\n"));
        assert!(config.contains("bootstrap_peers = [\"cd@127.0.0.1:4003\"]\n"));
        assert!(config.contains(&format!("rpc_secret = \"{}\"\n", "0f".repeat(32))));
    }

    #[test]
    fn the_rpc_secret_is_64_hex_digits_and_differs_each_time() {
        let secret = random_hex(32);
        assert_eq!(secret.len(), 64);
        assert!(secret.bytes().all(|byte| byte.is_ascii_hexdigit()));
        assert_ne!(secret, random_hex(32));
    }
}
