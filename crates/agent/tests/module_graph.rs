//! The agent's files depend on each other one way: no circle of
//! `crate::…` paths between them (tests and comments aside), so that who
//! may change what can be read from the imports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each source file's module name and its code, with `#[cfg(test)]`
/// modules and comment lines left out.
fn sources() -> BTreeMap<String, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut sources = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("src") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .expect("name")
            .to_owned();
        let text = std::fs::read_to_string(&path).expect("read");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let code: Vec<&str> = code
            .lines()
            .filter(|line| !line.trim_start().starts_with("//"))
            .collect();
        sources.insert(name, code.join("\n"));
    }
    sources
}

fn identifier_at(text: &str) -> &str {
    let end = text
        .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The modules `code` names through `crate::`.
fn dependencies(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (idx, _) in code.match_indices("crate::") {
        let rest = &code[idx + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for word in group.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')) {
                if modules.contains(word) {
                    found.insert(word.to_owned());
                }
            }
        } else {
            let word = identifier_at(rest);
            if modules.contains(word) {
                found.insert(word.to_owned());
            }
        }
    }
    found
}

/// A circle through `start`, if there is one.
fn circle_from(
    start: &str,
    graph: &BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<String>,
) -> Option<Vec<String>> {
    let current = path.last().expect("a path").clone();
    for next in &graph[&current] {
        if next == start {
            let mut circle = path.clone();
            circle.push(start.to_owned());
            return Some(circle);
        }
        if path.contains(next) || next.as_str() < start {
            continue;
        }
        path.push(next.clone());
        if let Some(circle) = circle_from(start, graph, path) {
            return Some(circle);
        }
        path.pop();
    }
    None
}

#[test]
fn no_file_of_the_agent_depends_on_itself_through_others() {
    let sources = sources();
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    let graph: BTreeMap<String, BTreeSet<String>> = sources
        .iter()
        .map(|(name, code)| {
            let mut deps = dependencies(code, &modules);
            deps.remove(name);
            (name.clone(), deps)
        })
        .collect();
    assert!(graph["engine"].contains("sync_state"), "the graph was read");
    for start in &modules {
        let circle = circle_from(start, &graph, &mut vec![start.clone()]);
        assert_eq!(circle, None, "a circle of imports");
    }
}

#[test]
fn the_check_sees_a_circle() {
    let modules: BTreeSet<String> = ["a", "b"].map(str::to_owned).into();
    let graph = BTreeMap::from([
        (
            "a".to_owned(),
            dependencies("use crate::b::Thing;", &modules),
        ),
        (
            "b".to_owned(),
            dependencies("use crate::{a::Other, Result};", &modules),
        ),
    ]);
    assert_eq!(
        circle_from("a", &graph, &mut vec!["a".to_owned()]),
        Some(vec!["a".to_owned(), "b".to_owned(), "a".to_owned()])
    );
}
