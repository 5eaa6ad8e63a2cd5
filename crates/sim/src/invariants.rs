//! The invariants, checked after the world has settled (atomicity and
//! spurious conflicts are also checked the moment they could break, in
//! [`crate::fs`]):
//!
//! 1. convergence: every agent's tree equals the server's, and each agent's
//!    base records are the server's current versions;
//! 2. no lost write: every content the engine removed or replaced on any
//!    agent is in a final tree or in the server's history;
//! 3. an edit beats a delete its agent never saw: every content the engine
//!    deleted locally was committed at that path before (so the deleter saw it);
//! 4. atomicity: every file under a real name holds content a user wrote;
//! 5. no spurious work: no conflict copy of identical content (in `fs`), and
//!    an idle settled world sends nothing (in `world`);
//! 6. storage: every chunk a record or history version of any folder
//!    references is in the store (after every garbage collection), and after
//!    a last collection the store holds exactly those.
//!
//! The tombstone horizon forgets deleted paths with their history: a content
//! that was in the history of such a path when it was forgotten is not a
//! lost write where that path is concerned (a user deleted it, and an agent
//! may apply that deletion late); everything else still must survive.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use syncfolder_client::Client;
use syncfolder_core::Hash;
use syncfolder_core::protocol::{Content, FileRecord};
use syncfolder_server::packs::Placed;

use crate::agent::Statuses;
use crate::fs::{Node, SimFs};
use crate::journal::{Journal, digest};
use crate::remote::FOLDER;

/// An entry as both sides can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File { content: Hash, executable: bool },
    Dir,
    Symlink(String),
}

pub struct Checked {
    pub n_entries: usize,
}

fn tree_of(fs: &SimFs) -> BTreeMap<String, Entry> {
    fs.tree()
        .visible()
        .map(|(path, node)| {
            let entry = match node {
                Node::Dir => Entry::Dir,
                Node::Symlink(target) => Entry::Symlink(target.clone()),
                Node::File(file) => Entry::File {
                    content: digest(&file.data),
                    executable: file.executable,
                },
            };
            (path.clone(), entry)
        })
        .collect()
}

fn entry_of(record: &FileRecord) -> Option<Entry> {
    match record.content.as_ref()? {
        Content::File {
            content_hash,
            executable,
            ..
        } => Some(Entry::File {
            content: *content_hash,
            executable: *executable,
        }),
        Content::Directory => Some(Entry::Dir),
        Content::Symlink { target } => Some(Entry::Symlink(target.clone())),
    }
}

fn differences(left: &BTreeMap<String, Entry>, right: &BTreeMap<String, Entry>) -> String {
    let paths: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    paths
        .into_iter()
        .filter(|path| left.get(*path) != right.get(*path))
        .take(8)
        .map(|path| format!("{path}: {:?} vs {:?}", left.get(path), right.get(path)))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn server_records(client: &Client) -> Result<BTreeMap<String, FileRecord>, String> {
    folder_records(client, FOLDER).await
}

/// The current records of `folder`, tombstones included.
pub async fn folder_records(
    client: &Client,
    folder: &str,
) -> Result<BTreeMap<String, FileRecord>, String> {
    let mut records = BTreeMap::new();
    let mut since = 0;
    loop {
        let page = client
            .changes(folder, since, 1000, std::time::Duration::ZERO)
            .await
            .map_err(|err| format!("reading the server's records: {err}"))?;
        for record in page.records {
            since = since.max(record.version);
            records.insert(record.path.clone(), record);
        }
        if !page.more {
            return Ok(records);
        }
    }
}

pub async fn check_all(
    client: &Client,
    filesystems: &[SimFs],
    statuses: &Statuses,
    journal: &Journal,
) -> Result<Checked, String> {
    let records = server_records(client).await?;
    let server_tree: BTreeMap<String, Entry> = records
        .iter()
        .filter_map(|(path, record)| Some((path.clone(), entry_of(record)?)))
        .collect();
    let server_versions: BTreeMap<String, u64> = records
        .iter()
        .filter(|(_, record)| !record.is_deleted())
        .map(|(path, record)| (path.clone(), record.version))
        .collect();

    // 1. convergence
    let trees: Vec<BTreeMap<String, Entry>> = filesystems.iter().map(tree_of).collect();
    for (agent_idx, tree) in trees.iter().enumerate() {
        if *tree != server_tree {
            return Err(format!(
                "convergence: agent-{agent_idx}'s tree differs from the server's: {}",
                differences(tree, &server_tree)
            ));
        }
        let base = statuses.lock()[agent_idx].base.clone();
        if base != server_versions {
            let paths: BTreeSet<&String> = base.keys().chain(server_versions.keys()).collect();
            let wrong: Vec<String> = paths
                .into_iter()
                .filter(|path| base.get(*path) != server_versions.get(*path))
                .take(8)
                .map(|path| {
                    format!(
                        "{path}: base {:?}, server {:?}",
                        base.get(path),
                        server_versions.get(path)
                    )
                })
                .collect();
            return Err(format!(
                "convergence: agent-{agent_idx}'s base records differ from the server's: {}",
                wrong.join("; ")
            ));
        }
    }

    // the server's whole history, by path
    let mut history: BTreeMap<String, HashSet<Hash>> = BTreeMap::new();
    for path in records.keys() {
        let versions = client
            .history(FOLDER, path)
            .await
            .map_err(|err| format!("reading the history of {path}: {err}"))?;
        let contents = history.entry(path.clone()).or_default();
        for version in versions {
            if let Some(Content::File { content_hash, .. }) = version.content {
                contents.insert(content_hash);
            }
        }
    }
    let everywhere: HashSet<Hash> = history
        .values()
        .flatten()
        .copied()
        .chain(server_tree.values().filter_map(|entry| match entry {
            Entry::File { content, .. } => Some(*content),
            _ => None,
        }))
        .collect();

    let journal = journal.lock();
    for destroyed in &journal.destroyed {
        // what the horizon forgot with a deleted path is gone by design
        if journal.forgot(&destroyed.path, &destroyed.content) {
            continue;
        }
        // 2. no lost write
        if !everywhere.contains(&destroyed.content) {
            return Err(format!(
                "lost write: agent-{} {} {} at step {}, and that content is in no tree and not in the server's history",
                destroyed.agent_idx,
                if destroyed.deleted {
                    "deleted"
                } else {
                    "replaced"
                },
                destroyed.path,
                destroyed.step
            ));
        }
        // 3. an edit beats a delete its agent never saw
        if destroyed.deleted
            && !history
                .get(&destroyed.path)
                .is_some_and(|contents| contents.contains(&destroyed.content))
        {
            return Err(format!(
                "an unseen edit was deleted: agent-{} deleted {} at step {} holding content never committed at that path",
                destroyed.agent_idx, destroyed.path, destroyed.step
            ));
        }
    }
    // 4. atomicity (also checked at every rename and crash)
    for (path, entry) in &server_tree {
        if let Entry::File { content, .. } = entry
            && !journal.complete.contains(content)
        {
            return Err(format!("atomicity: {path} holds content no user wrote"));
        }
    }
    if let Some(violation) = journal.violations.first() {
        return Err(violation.clone());
    }
    Ok(Checked {
        n_entries: server_tree.len(),
    })
}

/// Every chunk that a current record or a history version of any folder
/// references (read with the admin token, which reads every folder).
pub async fn referenced_chunks(admin: &Client) -> Result<BTreeSet<Hash>, String> {
    let mut referenced = BTreeSet::new();
    let folders = admin
        .list_folders()
        .await
        .map_err(|err| format!("listing folders: {err}"))?;
    for folder in folders {
        for path in folder_records(admin, &folder.name).await?.into_keys() {
            let versions = admin
                .history(&folder.name, &path)
                .await
                .map_err(|err| format!("reading the history of {path}: {err}"))?;
            for version in versions {
                referenced.extend(version.chunks.iter().map(|chunk| chunk.hash));
            }
        }
    }
    Ok(referenced)
}

/// The chunks the server's store holds (loose files under `chunks/`).
pub fn stored_chunks(data_dir: &Path) -> BTreeSet<Hash> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![data_dir.join("chunks")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if let Some(hash) = path
                .file_name()
                .and_then(|name| Hash::from_hex(&name.to_string_lossy()).ok())
            {
                found.insert(hash);
            }
        }
    }
    found
}

/// The referenced chunks whose bytes are at their place in a pack file:
/// read from the file and hashed, not taken on the metadata's word.
fn packed_chunks(data_dir: &Path, placed: &[Placed]) -> BTreeSet<Hash> {
    use std::os::unix::fs::FileExt;
    let mut found = BTreeSet::new();
    for chunk in placed {
        let Some(slot) = &chunk.slot else { continue };
        let name = slot.pack.as_str();
        let Ok(file) = std::fs::File::open(data_dir.join("packs").join(&name[..2]).join(name))
        else {
            continue;
        };
        let mut bytes = vec![0; usize::try_from(chunk.size).unwrap_or(0)];
        if file.read_exact_at(&mut bytes, slot.offset).is_ok() && Hash::of(&bytes) == chunk.hash {
            found.insert(chunk.hash);
        }
    }
    found
}

/// The pack files in the store, by name.
fn pack_files(data_dir: &Path) -> BTreeSet<String> {
    let Ok(fan_outs) = std::fs::read_dir(data_dir.join("packs")) else {
        return BTreeSet::new();
    };
    fan_outs
        .flatten()
        .filter_map(|fan_out| std::fs::read_dir(fan_out.path()).ok())
        .flat_map(|packs| packs.flatten())
        .map(|pack| pack.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Invariant 6: every referenced chunk is stored, as a loose file or at its
/// place in a pack (`placed`: where the metadata says the referenced chunks
/// are); with `exactly`, nothing else is: no loose file nothing references,
/// no pack no referenced chunk is in.
pub fn check_store(
    referenced: &BTreeSet<Hash>,
    placed: &[Placed],
    data_dir: &Path,
    exactly: bool,
) -> Result<(), String> {
    let loose = stored_chunks(data_dir);
    let mut stored = loose.clone();
    stored.extend(packed_chunks(data_dir, placed));
    if let Some(lost) = referenced.difference(&stored).next() {
        return Err(format!(
            "storage: chunk {lost} is referenced by a record or history version but gone from the store"
        ));
    }
    if exactly && let Some(extra) = loose.difference(referenced).next() {
        return Err(format!(
            "storage: after a last garbage collection the store still holds chunk {extra}, which nothing references ({} stored, {} referenced)",
            loose.len(),
            referenced.len()
        ));
    }
    if exactly {
        let in_use: BTreeSet<String> = placed
            .iter()
            .filter_map(|chunk| Some(chunk.slot.as_ref()?.pack.to_string()))
            .collect();
        if let Some(dead) = pack_files(data_dir).difference(&in_use).next() {
            return Err(format!(
                "storage: after a last garbage collection the store still holds pack {dead}, which holds no referenced chunk"
            ));
        }
    }
    Ok(())
}
