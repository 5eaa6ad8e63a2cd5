//! [`ObjectChunkStore`] against a real Garage cluster: three nodes, three
//! copies of everything, writes and reads needing two of them (quorum 2).
//! The store talks to one node's S3 endpoint; nodes are killed with
//! SIGKILL and started again underneath it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStore as _, ObjectStoreExt as _, PutPayload};
use syncfolder_core::Hash;
use syncfolder_server::packs::PackId;
use syncfolder_server::{ChunkStore, ObjectChunkStore, ObjectStoreConfig};
use syncfolder_testkit::TestGarage;

/// The longest a request may take to fail when the cluster cannot answer:
/// the store's retries stop after 20 s, a request times out after 60 s.
const FAILS_WITHIN: Duration = Duration::from_secs(90);
/// How long the cluster gets to serve again after nodes came back.
const RECOVERS_WITHIN: Duration = Duration::from_secs(60);
/// How long a listing may lag a delete. Reading one key is a quorum read
/// and sees a delete at once; a listing merges filtered range reads, and
/// right after a delete one node's answer can still carry the key (seen
/// once in CI, for the probe `check_writable` had just deleted).
const LISTINGS_SETTLE_WITHIN: Duration = Duration::from_secs(10);

/// The cluster's bucket under `prefix`, through node `node_idx`'s endpoint.
fn config_on(garage: &TestGarage, node_idx: usize, prefix: &str) -> ObjectStoreConfig {
    let url = format!("s3://{}/{prefix}", garage.bucket());
    ObjectStoreConfig {
        endpoint: Some(garage.s3_endpoint(node_idx)),
        region: Some(garage.region().to_owned()),
        access_key_id: Some(garage.access_key_id().to_owned()),
        secret_access_key: Some(garage.secret_access_key().to_owned()),
        allow_http: Some(true),
        ..ObjectStoreConfig::from_url(&url).expect("object storage URL")
    }
}

fn store_on(garage: &TestGarage, node_idx: usize, prefix: &str) -> ObjectChunkStore {
    ObjectChunkStore::open(&config_on(garage, node_idx, prefix)).expect("open the object store")
}

/// The bucket itself, for what the chunk store does not show: stray keys,
/// the quarantine, leftover probes.
fn bucket_on(garage: &TestGarage, node_idx: usize) -> AmazonS3 {
    // object_store's own HTTP client takes the process's rustls provider
    syncfolder_testkit::install_tls_provider();
    AmazonS3Builder::new()
        .with_endpoint(garage.s3_endpoint(node_idx))
        .with_region(garage.region())
        .with_bucket_name(garage.bucket())
        .with_access_key_id(garage.access_key_id())
        .with_secret_access_key(garage.secret_access_key())
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .expect("bucket client")
}

fn chunks(seed: u8, n_chunks: u8) -> Vec<(Hash, Bytes)> {
    (0..n_chunks)
        .map(|idx| {
            let bytes = Bytes::from(vec![seed ^ idx; 1000 + usize::from(idx) * 37]);
            (Hash::of(&bytes), bytes)
        })
        .collect()
}

/// A chunk name under a fan-out directory that is not its own.
fn misplaced_key(hash: &Hash) -> String {
    let hex = hash.to_hex();
    let fan_out = if hex.starts_with("00") { "01" } else { "00" };
    format!("contract/chunks/{fan_out}/{hex}")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn keys_under(bucket: &AmazonS3, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = bucket
        .list(Some(&Path::from(prefix)))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .expect("list the bucket");
    keys.sort_unstable();
    keys
}

/// The keys under `prefix` once the listing shows `expected`, or what it
/// still shows when [`LISTINGS_SETTLE_WITHIN`] has passed.
async fn keys_settled_under(bucket: &AmazonS3, prefix: &str, expected: &[String]) -> Vec<String> {
    let deadline = Instant::now() + LISTINGS_SETTLE_WITHIN;
    loop {
        let keys = keys_under(bucket, prefix).await;
        if keys == expected || Instant::now() > deadline {
            return keys;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Reads every chunk back and checks its bytes.
async fn assert_all_readable(store: &ObjectChunkStore, stored: &[(Hash, Bytes)]) {
    let hashes: Vec<Hash> = stored.iter().map(|(hash, _)| *hash).collect();
    let read = store.get_many(hashes).await.expect("get many");
    let expected: Vec<Option<Bytes>> = stored
        .iter()
        .map(|(_, bytes)| Some(bytes.clone()))
        .collect();
    assert!(read == expected, "some chunks did not read back as stored");
}

#[test]
fn the_store_keeps_the_chunk_store_contract_on_garage() {
    let garage = TestGarage::start();
    runtime().block_on(async {
        let store = store_on(&garage, 0, "contract");
        let bucket = bucket_on(&garage, 1);

        store.check_writable().await.expect("writable");
        assert_eq!(
            keys_settled_under(&bucket, "contract/probe", &[]).await,
            Vec::<String>::new(),
            "the probe is deleted"
        );
        let space = store.space().await.expect("space");
        assert_eq!(
            (space.total_bytes, space.available_bytes),
            (u64::MAX, u64::MAX)
        );

        // store and read back: the store does not look before it writes, so
        // every distinct chunk is "written"; a repeat in the batch is not
        let bytes = Bytes::from_static(b"hello chunk");
        let hash = Hash::of(&bytes);
        let absent = Hash::of(b"absent");
        let written = store
            .put_batch(vec![(hash, bytes.clone()), (hash, bytes.clone())])
            .await
            .expect("put");
        assert_eq!(written, vec![true, false]);
        assert_eq!(store.get(hash).await.expect("get"), Some(bytes.clone()));
        assert_eq!(
            store
                .put_batch(vec![(hash, bytes.clone())])
                .await
                .expect("put again"),
            vec![true]
        );
        let hex = hash.to_hex();
        assert_eq!(
            keys_under(&bucket, "contract/chunks").await,
            vec![format!("contract/chunks/{}/{hex}", &hex[..2])]
        );
        assert_eq!(store.get(absent).await.expect("get"), None);
        assert_eq!(
            store
                .get_many(vec![absent, hash, absent])
                .await
                .expect("get many"),
            vec![None, Some(bytes), None]
        );

        // list in hash order, a page at a time, skipping keys that are no chunk
        let stored = chunks(7, 50);
        let written = store.put_batch(stored.clone()).await.expect("put 50");
        assert_eq!(written, vec![true; 50]);
        for stray in [
            "contract/chunks/zz/not-a-hash".to_owned(),
            format!("contract/chunks/{}/{hex}.tmp", &hex[..2]),
            format!("contract/chunks/{hex}"),
            misplaced_key(&Hash::of(b"misplaced")),
        ] {
            bucket
                .put(
                    &Path::from(stray.as_str()),
                    PutPayload::from_static(b"stray"),
                )
                .await
                .expect("put a stray object");
        }
        let mut expected: Vec<(Hash, u64)> = stored
            .iter()
            .map(|(hash, bytes)| (*hash, bytes.len() as u64))
            .chain([(hash, 11)])
            .collect();
        expected.sort_unstable();
        let mut listed = Vec::new();
        let mut after = None;
        loop {
            let page = store.list_after(after, 7).await.expect("list");
            assert!(page.len() <= 7);
            if page.is_empty() {
                break;
            }
            after = page.last().map(|(hash, _)| *hash);
            listed.extend(page);
        }
        assert_eq!(listed, expected);
        assert_eq!(
            store
                .list_after(Some(expected[9].0), 3)
                .await
                .expect("list"),
            expected[10..13]
        );
        assert_eq!(store.list_after(None, 0).await.expect("list"), vec![]);

        // delete: a chunk that was never stored is no error
        let (gone, _) = expected[3];
        store
            .delete_many(vec![gone, Hash::of(b"never stored")])
            .await
            .expect("delete");
        assert_eq!(store.get(gone).await.expect("get"), None);
        store.delete_many(vec![gone]).await.expect("delete again");

        // quarantine: moved aside once, with its bytes
        let (aside, _) = expected[4];
        let aside_bytes = store.get(aside).await.expect("get").expect("stored");
        assert!(store.quarantine(aside).await.expect("quarantine"));
        assert!(
            !store.quarantine(aside).await.expect("quarantine again"),
            "moved once"
        );
        assert_eq!(store.get(aside).await.expect("get"), None);
        let quarantined = Path::from(format!("contract/quarantine/{}", aside.to_hex()).as_str());
        let kept = bucket
            .get(&quarantined)
            .await
            .expect("quarantined object")
            .bytes()
            .await
            .expect("its bytes");
        assert_eq!(kept, aside_bytes);
        assert!(!store.quarantine(absent).await.expect("quarantine absent"));

        // packs: written once, read back by ranges (near ones in one GET,
        // far ones in their own), absent as None, deleted idempotently;
        // listing chunks never shows them
        let pack = PackId::random();
        let mut pack_bytes = vec![0u8; 3 << 20];
        for (idx, byte) in pack_bytes.iter_mut().enumerate() {
            *byte = (idx % 251) as u8;
        }
        store
            .put_pack(&pack, Bytes::from(pack_bytes.clone()))
            .await
            .expect("put pack");
        let name = pack.as_str();
        assert_eq!(
            keys_under(&bucket, "contract/packs").await,
            vec![format!("contract/packs/{}/{name}", &name[..2])]
        );
        let ranges = vec![(3 << 20) - 10..3 << 20, 5..17, 20..20, 1_000..1_100];
        let parts = store
            .get_pack_ranges(&pack, ranges.clone())
            .await
            .expect("ranges")
            .expect("the pack is stored");
        assert_eq!(parts.len(), ranges.len());
        for (range, part) in ranges.iter().zip(&parts) {
            let expected = &pack_bytes[range.start as usize..range.end as usize];
            assert_eq!(part.as_ref(), expected, "range {range:?}");
        }
        assert_eq!(
            store
                .get_pack_ranges(&PackId::random(), vec![0..1, 1..1])
                .await
                .expect("absent pack"),
            None
        );
        store
            .keep_aside(absent, Bytes::from_static(b"bad bytes"))
            .await
            .expect("keep aside");
        let kept = bucket
            .get(&Path::from(
                format!("contract/quarantine/{}", absent.to_hex()).as_str(),
            ))
            .await
            .expect("kept aside")
            .bytes()
            .await
            .expect("its bytes");
        assert_eq!(kept.as_ref(), b"bad bytes");
        assert_eq!(
            store.list_packs_after(None, 10).await.expect("list packs"),
            vec![pack.clone()]
        );
        assert_eq!(
            store
                .list_packs_after(Some(pack.clone()), 10)
                .await
                .expect("list packs"),
            vec![]
        );
        store
            .delete_packs(vec![pack.clone(), PackId::random()])
            .await
            .expect("delete packs");
        assert_eq!(
            store
                .get_pack_ranges(&pack, vec![0..1, 1..1])
                .await
                .expect("gone"),
            None
        );
        store.delete_packs(vec![pack]).await.expect("delete again");

        let deadline = Instant::now() + LISTINGS_SETTLE_WITHIN;
        let remaining = loop {
            let remaining = store.list_after(None, 100).await.expect("list");
            if remaining.len() == 49 || Instant::now() > deadline {
                break remaining;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(remaining.len(), 49);
        assert!(
            !remaining
                .iter()
                .any(|(hash, _)| *hash == gone || *hash == aside)
        );

        // refused credentials say so
        let wrong_secret = ObjectChunkStore::open(&ObjectStoreConfig {
            secret_access_key: Some("0".repeat(64)),
            ..config_on(&garage, 0, "contract")
        })
        .expect("open");
        let err = wrong_secret.get(hash).await.expect_err("wrong secret");
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        let err = wrong_secret
            .check_writable()
            .await
            .expect_err("wrong secret");
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        assert!(
            err.to_string()
                .contains("writing a probe s3://syncfolder-test/contract/probe/"),
            "{err}"
        );

        // another prefix is another store
        let other = store_on(&garage, 2, "other");
        assert_eq!(other.list_after(None, 100).await.expect("list"), vec![]);
        assert_eq!(other.get(hash).await.expect("get"), None);
    });
}

#[test]
fn a_put_fails_in_bounded_time_without_quorum_and_everything_is_back_after_the_nodes_return() {
    let mut garage = TestGarage::start();
    let runtime = runtime();
    let store = store_on(&garage, 0, "outage");
    let all_up = chunks(1, 20);
    runtime.block_on(async {
        store
            .put_batch(all_up.clone())
            .await
            .expect("put with all nodes up");
    });

    // one node of three down: two copies are still a quorum, through any
    // surviving node, before and after the others notice
    garage.kill(2);
    let one_down = chunks(2, 20);
    runtime.block_on(async {
        let started = Instant::now();
        store
            .put_batch(one_down.clone())
            .await
            .expect("put with one node down");
        eprintln!("put with node 2 just killed: {:?}", started.elapsed());
        assert_all_readable(&store, &all_up).await;
        assert_all_readable(&store, &one_down).await;
        let through_node_1 = store_on(&garage, 1, "outage");
        assert_all_readable(&through_node_1, &all_up).await;
        assert_all_readable(&through_node_1, &one_down).await;
    });
    garage.wait_until_connected();
    let one_down_noticed = chunks(3, 20);
    runtime.block_on(async {
        store
            .put_batch(one_down_noticed.clone())
            .await
            .expect("put with node 2 seen down");
        assert_all_readable(&store, &one_down_noticed).await;
    });

    // two down: no quorum; a put fails rather than hangs
    garage.kill(1);
    let no_quorum = chunks(4, 3);
    runtime.block_on(async {
        let started = Instant::now();
        let result = store.put_batch(no_quorum.clone()).await;
        let elapsed = started.elapsed();
        let err = result.expect_err("a put without quorum must fail");
        eprintln!("put without quorum failed after {elapsed:?}: {err}");
        assert!(elapsed < FAILS_WITHIN, "failed only after {elapsed:?}");
        assert!(
            err.to_string().contains("storing chunk s3://"),
            "the error names the operation and the object: {err}"
        );
        let started = Instant::now();
        let read = store.get(all_up[0].0).await;
        eprintln!(
            "get without quorum after {:?}: {read:?}",
            started.elapsed().as_secs_f32()
        );
        assert!(started.elapsed() < FAILS_WITHIN);

        // a store whose endpoint is the dead node fails as soon
        let through_dead_node = store_on(&garage, 1, "outage");
        let started = Instant::now();
        let err = through_dead_node
            .check_writable()
            .await
            .expect_err("node 1 is down");
        eprintln!(
            "probe through a dead node failed after {:?}: {err}",
            started.elapsed()
        );
        assert!(started.elapsed() < FAILS_WITHIN);
    });

    garage.start_again(1);
    garage.start_again(2);
    runtime.block_on(async {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            match store.put_batch(no_quorum.clone()).await {
                Ok(_) => break,
                Err(err) if started.elapsed() < RECOVERS_WITHIN => {
                    eprintln!("put after the restart, attempt {attempts}: {err}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(err) => panic!("no put within {RECOVERS_WITHIN:?} of the restart: {err}"),
            }
        }
        eprintln!(
            "put works {:?} after both nodes were back ({attempts} attempts)",
            started.elapsed()
        );
        for node_idx in 0..3 {
            let through = store_on(&garage, node_idx, "outage");
            for stored in [&all_up, &one_down, &one_down_noticed, &no_quorum] {
                assert_all_readable(&through, stored).await;
            }
        }
        let n_listed = store.list_after(None, 1000).await.expect("list").len();
        assert_eq!(n_listed, 20 + 20 + 20 + 3);
    });
}
