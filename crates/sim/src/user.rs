//! What users do to their trees while the agents sync: create, modify,
//! append, truncate, delete, rename files and directories, make links, flip
//! the executable bit, write the same content on two agents, edit one file
//! on two agents, delete on one while editing on another. Paths come from
//! a small namespace so that actions collide.

use rand::Rng;
use rand::rngs::StdRng;

use crate::fs::{Node, SimFs};
use crate::journal::{Journal, digest};

const DIRS: [&str; 4] = ["", "a", "b", "a/c"];
const NAMES: [&str; 4] = ["x", "y", "z", "w"];

fn random_file_path(rng: &mut StdRng) -> String {
    let dir = DIRS[rng.random_range(0..DIRS.len())];
    let name = NAMES[rng.random_range(0..NAMES.len())];
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn random_dir(rng: &mut StdRng) -> &'static str {
    DIRS[rng.random_range(1..DIRS.len())]
}

/// Fresh content nobody wrote before (never empty, so a torn empty file is
/// never mistaken for a user's).
fn new_content(rng: &mut StdRng, n_contents: &mut u64) -> Vec<u8> {
    *n_contents += 1;
    let mut data = format!("content #{n_contents}\n").into_bytes();
    let len = match rng.random_range(0..10) {
        0..=5 => rng.random_range(0..200),
        6..=8 => rng.random_range(200..3000),
        _ => rng.random_range(3000..9000),
    };
    data.extend((0..len).map(|_| rng.random::<u8>()));
    data
}

/// An existing file of `fs`, if any (conflict copies included).
fn existing_file(fs: &SimFs, rng: &mut StdRng) -> Option<String> {
    let tree = fs.tree();
    let files: Vec<&String> = tree
        .visible()
        .filter(|(_, node)| matches!(node, Node::File(_)))
        .map(|(path, _)| path)
        .collect();
    if files.is_empty() {
        return None;
    }
    Some(files[rng.random_range(0..files.len())].clone())
}

pub struct Users {
    pub n_contents: u64,
    journal: Journal,
}

impl Users {
    pub fn new(journal: Journal) -> Users {
        Users {
            n_contents: 0,
            journal,
        }
    }

    fn remember(&self, data: &[u8]) {
        self.journal.lock().complete.insert(digest(data));
        self.journal.wrote();
    }

    /// Writes `data` at `path` on `fs`; in place or by replacing the file as editors do.
    fn write(&self, fs: &SimFs, path: &str, data: Vec<u8>, rng: &mut StdRng) -> bool {
        self.remember(&data);
        fs.user_write(path, data, rng.random_bool(0.3))
    }

    /// One random action on agent `agent_idx`; returns what it did (for the
    /// trace) and the paths a watcher would report.
    pub fn act(
        &mut self,
        agents: &[SimFs],
        agent_idx: usize,
        rng: &mut StdRng,
    ) -> (String, Vec<(usize, String)>) {
        let fs = &agents[agent_idx];
        let other_idx = (agent_idx + rng.random_range(1..agents.len())) % agents.len();
        let other = &agents[other_idx];
        let roll = rng.random_range(0..100);
        match roll {
            0..=24 => {
                let path = random_file_path(rng);
                let data = new_content(rng, &mut self.n_contents);
                let done = self.write(fs, &path, data, rng);
                (format!("write {path} ({done})"), vec![(agent_idx, path)])
            }
            25..=34 => {
                let Some(path) = existing_file(fs, rng) else {
                    return ("append: no file".to_owned(), Vec::new());
                };
                let mut data = fs.file_data(&path).unwrap_or_default();
                data.extend(new_content(rng, &mut self.n_contents));
                self.write(fs, &path, data, rng);
                (format!("append {path}"), vec![(agent_idx, path)])
            }
            35..=39 => {
                let Some(path) = existing_file(fs, rng) else {
                    return ("truncate: no file".to_owned(), Vec::new());
                };
                let data = fs.file_data(&path).unwrap_or_default();
                if data.len() < 2 {
                    return ("truncate: too short".to_owned(), Vec::new());
                }
                let keep = rng.random_range(1..data.len());
                self.write(fs, &path, data[..keep].to_vec(), rng);
                (
                    format!("truncate {path} to {keep}"),
                    vec![(agent_idx, path)],
                )
            }
            40..=49 => {
                let Some(path) = existing_file(fs, rng) else {
                    return ("delete: no file".to_owned(), Vec::new());
                };
                fs.user_remove(&path);
                self.journal.wrote();
                (format!("delete {path}"), vec![(agent_idx, path)])
            }
            50..=56 => {
                let Some(from) = existing_file(fs, rng) else {
                    return ("rename: no file".to_owned(), Vec::new());
                };
                let to = random_file_path(rng);
                let done = fs.user_rename(&from, &to);
                self.journal.wrote();
                (
                    format!("rename {from} -> {to} ({done})"),
                    vec![(agent_idx, from), (agent_idx, to)],
                )
            }
            57..=60 => {
                let dir = random_dir(rng);
                let target = random_dir(rng);
                let to = if target == dir || target.starts_with(&format!("{dir}/")) {
                    format!("{dir}-moved")
                } else {
                    format!("{target}/moved")
                };
                let done = fs.user_rename(dir, &to);
                self.journal.wrote();
                (
                    format!("rename dir {dir} -> {to} ({done})"),
                    vec![(agent_idx, dir.to_owned()), (agent_idx, to)],
                )
            }
            61..=64 => {
                let dir = random_dir(rng);
                let done = fs.user_remove(dir);
                self.journal.wrote();
                (
                    format!("rm -r {dir} ({done})"),
                    vec![(agent_idx, dir.to_owned())],
                )
            }
            65..=67 => {
                let dir = random_dir(rng);
                let done = fs.user_mkdir(dir);
                self.journal.wrote();
                (
                    format!("mkdir {dir} ({done})"),
                    vec![(agent_idx, dir.to_owned())],
                )
            }
            68..=70 => {
                let Some(path) = existing_file(fs, rng) else {
                    return ("chmod: no file".to_owned(), Vec::new());
                };
                fs.user_chmod(&path);
                self.journal.wrote();
                (format!("chmod {path}"), vec![(agent_idx, path)])
            }
            71..=73 => {
                let path = random_file_path(rng);
                let target = format!("../{}", NAMES[rng.random_range(0..NAMES.len())]);
                let done = fs.user_symlink(&path, &target);
                self.journal.wrote();
                (
                    format!("symlink {path} -> {target} ({done})"),
                    vec![(agent_idx, path)],
                )
            }
            74..=81 => {
                // the same content written on two agents: never a conflict
                let Some(path) = existing_file(other, rng) else {
                    return ("identical write: no file".to_owned(), Vec::new());
                };
                let data = other.file_data(&path).unwrap_or_default();
                let done = self.write(fs, &path, data, rng);
                (
                    format!("identical write {path} as agent-{other_idx} ({done})"),
                    vec![(agent_idx, path)],
                )
            }
            82..=90 => {
                // one file edited on two agents at once
                let path = existing_file(fs, rng).unwrap_or_else(|| random_file_path(rng));
                let mine = new_content(rng, &mut self.n_contents);
                let theirs = new_content(rng, &mut self.n_contents);
                self.write(fs, &path, mine, rng);
                self.write(other, &path, theirs, rng);
                (
                    format!("edit {path} on agent-{agent_idx} and agent-{other_idx}"),
                    vec![(agent_idx, path.clone()), (other_idx, path)],
                )
            }
            _ => {
                // deleted on one agent, edited on another
                let Some(path) = existing_file(fs, rng) else {
                    return ("delete vs edit: no file".to_owned(), Vec::new());
                };
                fs.user_remove(&path);
                self.journal.wrote();
                let data = new_content(rng, &mut self.n_contents);
                self.write(other, &path, data, rng);
                (
                    format!("delete {path} on agent-{agent_idx}, edit on agent-{other_idx}"),
                    vec![(agent_idx, path.clone()), (other_idx, path)],
                )
            }
        }
    }
}
