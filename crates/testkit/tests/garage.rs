//! The Garage cluster the object-store tests run on, checked the way an
//! operator would: `garage status` on each node, the bucket and its key,
//! the S3 port of each node, and a node killed and started again.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use syncfolder_testkit::garage::N_NODES;
use syncfolder_testkit::{TestGarage, wait_until};

/// The nodes `garage status` lists, by index: healthy (connected) and
/// failed (in the layout, not connected).
#[derive(Debug, PartialEq)]
struct StatusTable {
    healthy: Vec<usize>,
    failed: Vec<usize>,
}

/// Runs `garage status` against node `node_idx` and reads its two tables,
/// whose rows start with the first 16 hex digits of a node's ID.
fn garage_status(garage: &TestGarage, node_idx: usize) -> StatusTable {
    let output = garage
        .command(node_idx)
        .arg("status")
        .output()
        .expect("running garage status");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "garage status on node {node_idx} failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut table = StatusTable {
        healthy: Vec::new(),
        failed: Vec::new(),
    };
    let mut in_failed = false;
    for line in stdout.lines() {
        match line.trim() {
            "==== HEALTHY NODES ====" => in_failed = false,
            "==== FAILED NODES ====" => in_failed = true,
            row => {
                let Some(id_prefix) = row.split_whitespace().next() else {
                    continue;
                };
                let Some(listed_idx) = (0..N_NODES).find(|&idx| {
                    id_prefix.len() == 16 && garage.node_id(idx).starts_with(id_prefix)
                }) else {
                    continue;
                };
                if in_failed {
                    table.failed.push(listed_idx);
                } else {
                    table.healthy.push(listed_idx);
                }
            }
        }
    }
    table.healthy.sort_unstable();
    table.failed.sort_unstable();
    table
}

fn cluster_health(garage: &TestGarage, node_idx: usize) -> Value {
    garage
        .json_api(node_idx, "GetClusterHealth", &Value::Null)
        .unwrap_or_else(|err| panic!("{err}"))
}

/// The status code of an unsigned `GET /<bucket>` on node `node_idx`'s S3
/// port, or `None` when nothing answers there.
fn unsigned_list_status(garage: &TestGarage, node_idx: usize) -> Option<u16> {
    syncfolder_testkit::install_tls_provider();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let url = format!("{}/{}", garage.s3_endpoint(node_idx), garage.bucket());
    http.get(url)
        .send()
        .ok()
        .map(|response| response.status().as_u16())
}

#[test]
fn three_nodes_see_each_other_serve_the_bucket_and_recover_from_a_killed_node() {
    let started = Instant::now();
    let mut garage = TestGarage::start();
    eprintln!("3-node Garage cluster up in {:?}", started.elapsed());

    let all = StatusTable {
        healthy: vec![0, 1, 2],
        failed: vec![],
    };
    for node_idx in 0..N_NODES {
        assert_eq!(
            garage_status(&garage, node_idx),
            all,
            "seen from node {node_idx}"
        );
        assert_eq!(cluster_health(&garage, node_idx)["status"], "healthy");
        // anonymous access is refused, which shows the S3 API is there
        assert_eq!(unsigned_list_status(&garage, node_idx), Some(403));
    }

    let bucket = garage
        .json_api(
            1,
            "GetBucketInfo",
            &json!({ "globalAlias": garage.bucket() }),
        )
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(bucket["globalAliases"], json!([garage.bucket()]));
    assert_eq!(
        bucket["keys"],
        json!([{
            "accessKeyId": garage.access_key_id(),
            "name": garage.bucket(),
            "permissions": { "read": true, "write": true, "owner": true },
            "bucketLocalAliases": [],
        }])
    );
    assert_eq!(garage.region(), "garage");
    assert!(!garage.secret_access_key().is_empty());

    let killed = Instant::now();
    garage.kill(2);
    assert!(!garage.is_running(2));
    let one_down = StatusTable {
        healthy: vec![0, 1],
        failed: vec![2],
    };
    // Garage notices a dead peer at its next write to it: within ~20 s
    let mut seen = Vec::new();
    let noticed = wait_until(Duration::from_secs(40), || {
        seen = (0..2)
            .map(|node_idx| garage_status(&garage, node_idx))
            .collect();
        seen.iter().all(|status| status == &one_down)
    });
    assert!(
        noticed,
        "nodes 0 and 1 did not both see node 2 down: {seen:?}"
    );
    eprintln!("node 2 seen down after {:?}", killed.elapsed());
    // two of three copies still make a quorum
    assert_eq!(cluster_health(&garage, 0)["status"], "degraded");
    assert_eq!(unsigned_list_status(&garage, 2), None);

    let restarted = Instant::now();
    garage.start_again(2);
    eprintln!("node 2 back in {:?}", restarted.elapsed());
    assert!(garage.is_running(2));
    for node_idx in 0..N_NODES {
        assert_eq!(
            garage_status(&garage, node_idx),
            all,
            "seen from node {node_idx}"
        );
        assert_eq!(cluster_health(&garage, node_idx)["status"], "healthy");
    }
    assert_eq!(unsigned_list_status(&garage, 2), Some(403));
}
