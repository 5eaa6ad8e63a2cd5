//! The authorization matrix: every route of `router()` (every method of every
//! path) with six callers, and the exact status each one gets. Denied
//! requests change nothing; no caller but the admin can tell whether a folder
//! it has no token for exists.
//!
//! A route added to `router()` without a row here fails
//! `every_route_of_the_router_has_a_row_in_the_matrix`, which reads the
//! routes out of `src/routes/mod.rs`.

use std::collections::BTreeSet;
use std::path::Path;

use reqwest::{Method, StatusCode};
use syncfolder_core::Hash;
use syncfolder_core::protocol::{
    AnnounceRequest, CommitRequest, CreateFolderRequest, CreateTokenRequest, ErrorBody,
    FetchChunksRequest, FolderSettingsPatch, GcRequest, MissingChunksRequest, RestoreRequest,
    ScrubRequest, StreamChunksRequest, TokenScope, UploadResponse,
};

use crate::harness::{MetadataPool, TestServer, file_change, ok_json};

/// Who calls. Folder tokens are tokens of the folder the route names
/// (`docs`), except `OtherFolder`'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    NoToken,
    /// The read-write token of `docs` with one digit of its secret changed.
    WrongToken,
    /// The read-write token of another folder.
    OtherFolder,
    ReadOnly,
    ReadWrite,
    Admin,
}

/// In the order of the matrix's columns; the admin goes last, so that its
/// deletes (of the folder, of a token) come after everyone else's attempts.
const CALLERS: [Caller; 6] = [
    Caller::NoToken,
    Caller::WrongToken,
    Caller::OtherFolder,
    Caller::ReadOnly,
    Caller::ReadWrite,
    Caller::Admin,
];

impl Caller {
    fn name(self) -> &'static str {
        match self {
            Caller::NoToken => "no-token",
            Caller::WrongToken => "wrong-token",
            Caller::OtherFolder => "other-folder",
            Caller::ReadOnly => "read-only",
            Caller::ReadWrite => "read-write",
            Caller::Admin => "admin",
        }
    }
}

struct Row {
    method: &'static str,
    /// The path template exactly as `router()` spells it.
    path: &'static str,
    /// The status per caller, in the order of [`CALLERS`].
    statuses: [u16; 6],
}

const fn row(method: &'static str, path: &'static str, statuses: [u16; 6]) -> Row {
    Row {
        method,
        path,
        statuses,
    }
}

/// Every route and what each caller gets. Probes and metrics are open to all
/// (a token, even a wrong one, is ignored there).
#[rustfmt::skip]
const MATRIX: &[Row] = &[
    //                                                                  none wrong other  ro    rw   admin
    row("GET",    "/healthz",                                         [200,  200,  200,  200,  200,  200]),
    row("GET",    "/readyz",                                          [200,  200,  200,  200,  200,  200]),
    row("GET",    "/metrics",                                         [200,  200,  200,  200,  200,  200]),
    row("GET",    "/v1/folders/{folder}",                             [401,  401,  403,  200,  200,  200]),
    row("GET",    "/v1/folders/{folder}/changes",                     [401,  401,  403,  200,  200,  200]),
    row("GET",    "/v1/folders/{folder}/history",                     [401,  401,  403,  200,  200,  200]),
    row("POST",   "/v1/folders/{folder}/restore",                     [401,  401,  403,  403,  200,  200]),
    row("POST",   "/v1/folders/{folder}/commit",                      [401,  401,  403,  403,  200,  200]),
    row("POST",   "/v1/folders/{folder}/announce",                    [401,  401,  403,  403,  200,  200]),
    row("POST",   "/v1/folders/{folder}/chunks/stream",               [401,  401,  403,  200,  200,  200]),
    row("POST",   "/v1/folders/{folder}/chunks/missing",              [401,  401,  403,  403,  200,  200]),
    row("POST",   "/v1/folders/{folder}/chunks/upload",               [401,  401,  403,  403,  200,  200]),
    row("POST",   "/v1/folders/{folder}/chunks/fetch",                [401,  401,  403,  200,  200,  200]),
    row("PUT",    "/v1/folders/{folder}/chunks/{hash}",               [401,  401,  403,  403,  200,  200]),
    row("GET",    "/v1/folders/{folder}/chunks/{hash}",               [401,  401,  403,  200,  200,  200]),
    row("POST",   "/v1/admin/folders",                                [401,  401,  403,  403,  403,  200]),
    row("GET",    "/v1/admin/folders",                                [401,  401,  403,  403,  403,  200]),
    row("GET",    "/v1/admin/folders/{folder}",                       [401,  401,  403,  403,  403,  200]),
    row("PATCH",  "/v1/admin/folders/{folder}",                       [401,  401,  403,  403,  403,  200]),
    row("DELETE", "/v1/admin/folders/{folder}",                       [401,  401,  403,  403,  403,  200]),
    row("POST",   "/v1/admin/folders/{folder}/tokens",                [401,  401,  403,  403,  403,  200]),
    row("DELETE", "/v1/admin/folders/{folder}/tokens/{token_id}",     [401,  401,  403,  403,  403,  204]),
    row("POST",   "/v1/admin/gc",                                     [401,  401,  403,  403,  403,  200]),
    row("POST",   "/v1/admin/scrub",                                  [401,  401,  403,  403,  403,  200]),
    row("GET",    "/v1/admin/scrub",                                  [401,  401,  403,  403,  403,  200]),
];

/// The content of `docs/f` version 1, stored before any cell runs.
const DATA: &[u8] = b"the content of f";

/// A server with the folders and tokens every cell needs:
/// `docs` (holding `f`, with a read-write, a read-only and a spare token),
/// `other` (with its read-write token) and `third` (no caller's folder).
struct Fixture {
    server: TestServer,
    docs_read_write: String,
    docs_read_only: String,
    other_read_write: String,
    /// A token of `docs` that the token-revoking row revokes.
    spare_token_id: String,
    db: MetadataPool,
}

impl Fixture {
    async fn start() -> Fixture {
        let server = TestServer::start().await;
        let docs = server.folder("docs").await;
        ok_json::<UploadResponse>(docs.put_chunk(DATA).await).await;
        docs.commit_one(file_change("f", 0, &[DATA])).await;
        let docs_read_only = server
            .create_token("docs", TokenScope::ReadOnly)
            .await
            .token;
        let spare_token_id = server
            .create_token("docs", TokenScope::ReadWrite)
            .await
            .token_id;
        let other_read_write = server.create_folder("other").await.token;
        server.create_folder("third").await;
        let db = MetadataPool::open(&server.data_dir).await;
        Fixture {
            docs_read_write: docs.token,
            docs_read_only,
            other_read_write,
            spare_token_id,
            server,
            db,
        }
    }

    fn token(&self, caller: Caller) -> Option<String> {
        match caller {
            Caller::NoToken => None,
            Caller::WrongToken => {
                let mut token = self.docs_read_write.clone();
                let last = token.pop().expect("token is not empty");
                token.push(if last == '0' { '1' } else { '0' });
                Some(token)
            }
            Caller::OtherFolder => Some(self.other_read_write.clone()),
            Caller::ReadOnly => Some(self.docs_read_only.clone()),
            Caller::ReadWrite => Some(self.docs_read_write.clone()),
            Caller::Admin => Some(self.server.admin_token.clone()),
        }
    }

    /// A valid request of `row` on `folder` by `caller`: authorised callers get
    /// their success status. Bodies differ per caller where a repeat would
    /// not be a success (a second folder of the same name) or would hide a
    /// write (a chunk already stored).
    fn request(
        &self,
        method: Method,
        row: &Row,
        folder: &str,
        caller: Caller,
    ) -> reqwest::RequestBuilder {
        let own_bytes = format!("a chunk uploaded by {}", caller.name()).into_bytes();
        let data_hash = Hash::of(DATA);
        let path = row.path.replace("{folder}", folder);
        let url = |path: &str| self.server.url(path);
        let http = &self.server.http;
        let request = match (row.method, row.path) {
            ("GET", "/healthz" | "/readyz" | "/metrics")
            | ("GET", "/v1/admin/scrub")
            | ("GET", "/v1/folders/{folder}")
            | ("GET", "/v1/admin/folders" | "/v1/admin/folders/{folder}")
            | ("DELETE", "/v1/admin/folders/{folder}") => http.request(method, url(&path)),
            ("GET", "/v1/folders/{folder}/changes") => {
                http.request(method, url(&format!("{path}?since=0&wait=0")))
            }
            ("GET", "/v1/folders/{folder}/history") => {
                http.request(method, url(&format!("{path}?path=f")))
            }
            ("POST", "/v1/folders/{folder}/restore") => {
                http.request(method, url(&path)).json(&RestoreRequest {
                    path: "f".to_owned(),
                    version: 1,
                })
            }
            ("POST", "/v1/folders/{folder}/commit") => {
                let change = file_change(&format!("by-{}", caller.name()), 0, &[DATA]);
                http.request(method, url(&path)).json(&CommitRequest {
                    changes: vec![change],
                })
            }
            ("POST", "/v1/folders/{folder}/announce") => {
                let change = file_change(&format!("by-{}", caller.name()), 0, &[&own_bytes]);
                http.request(method, url(&path)).json(&AnnounceRequest {
                    changes: vec![change],
                    growing: false,
                })
            }
            ("POST", "/v1/folders/{folder}/chunks/stream") => {
                http.request(method, url(&path)).json(&StreamChunksRequest {
                    hashes: vec![data_hash],
                    wait_ms: 0,
                })
            }
            ("POST", "/v1/folders/{folder}/chunks/missing") => http
                .request(method, url(&path))
                .json(&MissingChunksRequest {
                    hashes: vec![Hash::of(&own_bytes)],
                }),
            ("POST", "/v1/folders/{folder}/chunks/upload") => {
                let mut body = Vec::new();
                syncfolder_core::frame::append_chunk(&mut body, &Hash::of(&own_bytes), &own_bytes);
                http.request(method, url(&path))
                    .header("content-type", syncfolder_core::frame::CONTENT_TYPE)
                    .body(body)
            }
            ("POST", "/v1/folders/{folder}/chunks/fetch") => {
                http.request(method, url(&path)).json(&FetchChunksRequest {
                    hashes: vec![data_hash],
                })
            }
            ("PUT", "/v1/folders/{folder}/chunks/{hash}") => {
                let path = path.replace("{hash}", &Hash::of(&own_bytes).to_hex());
                http.request(method, url(&path)).body(own_bytes)
            }
            ("GET", "/v1/folders/{folder}/chunks/{hash}") => {
                http.request(method, url(&path.replace("{hash}", &data_hash.to_hex())))
            }
            ("POST", "/v1/admin/folders") => {
                http.request(method, url(&path)).json(&CreateFolderRequest {
                    name: format!("created-by-{}", caller.name()),
                    settings: Default::default(),
                })
            }
            ("PATCH", "/v1/admin/folders/{folder}") => {
                http.request(method, url(&path)).json(&FolderSettingsPatch {
                    quota_bytes: Some(1 << 30),
                    ..Default::default()
                })
            }
            ("POST", "/v1/admin/folders/{folder}/tokens") => {
                http.request(method, url(&path)).json(&CreateTokenRequest {
                    scope: TokenScope::ReadOnly,
                })
            }
            ("DELETE", "/v1/admin/folders/{folder}/tokens/{token_id}") => http.request(
                method,
                url(&path.replace("{token_id}", &self.spare_token_id)),
            ),
            ("POST", "/v1/admin/gc") => http
                .request(method, url(&path))
                .json(&GcRequest { dry_run: true }),
            ("POST", "/v1/admin/scrub") => http
                .request(method, url(&path))
                .json(&ScrubRequest::default()),
            (method, path) => panic!("the matrix has no request for {method} {path}: add one"),
        };
        match self.token(caller) {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Everything a request could have changed: the folders as the admin
    /// sees them, row counts of every table, chunk files on disk.
    async fn state(&self) -> String {
        let folders = self
            .server
            .http
            .get(self.server.url("/v1/admin/folders"))
            .bearer_auth(&self.server.admin_token)
            .send()
            .await
            .expect("list folders")
            .text()
            .await
            .expect("folders body");
        let counts: (i64, i64, i64, i64, i64, i64) = on_metadata!(self.db, pool => {
            sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM tokens), (SELECT COUNT(*) FROM tokens WHERE revoked), \
                 (SELECT COUNT(*) FROM folder_chunks), (SELECT COUNT(*) FROM files), \
                 (SELECT COUNT(*) FROM history), (SELECT COUNT(*) FROM events)",
            )
            .fetch_one(pool)
            .await
            .expect("count rows")
        });
        let n_chunk_files = count_files(&self.server.data_dir.join("chunks"));
        format!("{folders}\ntables: {counts:?}\nchunk files: {n_chunk_files}")
    }
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| match entry.file_type() {
                    Ok(kind) if kind.is_dir() => count_files(&entry.path()),
                    _ => 1,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The error code every denial answers with.
fn denial_code(status: u16) -> Option<&'static str> {
    match status {
        401 => Some("unauthorized"),
        403 => Some("forbidden"),
        _ => None,
    }
}

#[tokio::test]
async fn every_caller_gets_exactly_the_status_of_the_matrix_on_every_route() {
    let mut mismatches = Vec::new();
    for row in MATRIX {
        // a fresh server per route: the admin's delete of `docs` must not
        // change what the next route sees
        let fixture = Fixture::start().await;
        for (caller, expected) in CALLERS.into_iter().zip(row.statuses) {
            let cell = format!("{} {} as {}", row.method, row.path, caller.name());
            let before = fixture.state().await;
            // axum answers HEAD with the GET handler: the same rules apply
            if row.method == "GET" {
                let head = fixture
                    .request(Method::HEAD, row, "docs", caller)
                    .send()
                    .await
                    .expect("request");
                if head.status().as_u16() != expected {
                    mismatches.push(format!("HEAD of {cell}: {} ≠ {expected}", head.status()));
                }
            }
            let method = Method::from_bytes(row.method.as_bytes()).expect("method");
            let response = fixture
                .request(method, row, "docs", caller)
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            let text = response.text().await.expect("body");
            if status != expected {
                let excerpt: String = text.chars().take(200).collect();
                mismatches.push(format!("{cell}: {status} ≠ {expected} ({excerpt})"));
                continue;
            }
            if let Some(code) = denial_code(expected) {
                let body: ErrorBody = serde_json::from_str(&text)
                    .unwrap_or_else(|err| panic!("{cell}: {text:?} is no ErrorBody: {err}"));
                assert_eq!(body.error, code, "{cell}");
                let after = fixture.state().await;
                assert_eq!(after, before, "{cell} was denied but changed something");
            }
        }
        fixture.server.stop().await;
    }
    assert!(
        mismatches.is_empty(),
        "cells that differ from the matrix:\n{}",
        mismatches.join("\n")
    );
}

#[tokio::test]
async fn no_caller_but_the_admin_can_tell_whether_a_folder_exists() {
    let fixture = Fixture::start().await;
    for row in MATRIX.iter().filter(|row| row.path.contains("{folder}")) {
        let method = Method::from_bytes(row.method.as_bytes()).expect("method");
        for caller in CALLERS {
            let answer = |folder: &'static str| {
                let request = fixture.request(method.clone(), row, folder, caller);
                async move {
                    let response = request.send().await.expect("request");
                    (response.status(), response.text().await.expect("body"))
                }
            };
            let cell = format!("{} {} as {}", row.method, row.path, caller.name());
            let (ghost_status, ghost_body) = answer("ghost").await;
            if caller == Caller::Admin {
                // (not asked about `third`: the admin would delete it)
                assert_eq!(ghost_status, StatusCode::NOT_FOUND, "{cell}: {ghost_body}");
                assert!(
                    ghost_body.contains("folder_not_found"),
                    "{cell}: {ghost_body}"
                );
                continue;
            }
            // `third` exists, `ghost` does not; only the admin holds a token of either
            let (exists_status, exists_body) = answer("third").await;
            assert!(exists_status.is_client_error(), "{cell}: {exists_status}");
            assert_eq!(
                (exists_status, exists_body),
                (ghost_status, ghost_body),
                "{cell}: an existing and a missing folder answer differently"
            );
        }
    }
}

/// The routes `router()` declares, as `(METHOD, path)`, read from its source.
fn routes_in_router() -> BTreeSet<(String, String)> {
    let source = include_str!("../../src/routes/mod.rs");
    let body = source
        .split_once("pub fn router(")
        .expect("routes/mod.rs defines router()")
        .1;
    let body: String = body
        .lines()
        .map(|line| line.split_once("//").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n");
    for construct in [".nest(", ".nest_service(", ".route_service("] {
        assert!(
            !body.contains(construct),
            "router() uses {construct}: teach routes_in_router() to read its routes"
        );
    }
    assert_eq!(
        body.matches(".merge(").count(),
        body.matches(".merge(limited)").count(),
        "router() merges a router other than `limited`: teach routes_in_router() to read it"
    );
    let mut routes = BTreeSet::new();
    for call in body.split(".route(").skip(1) {
        let arguments = up_to_closing_paren(call);
        let path = arguments
            .split('"')
            .nth(1)
            .unwrap_or_else(|| panic!("a .route( without a path literal: {arguments}"));
        for method in [
            "get", "post", "put", "patch", "delete", "head", "options", "trace", "connect", "any",
        ] {
            if calls(arguments, method) {
                routes.insert((method.to_uppercase(), path.to_owned()));
            }
        }
    }
    routes
}

/// The text of a call's arguments, up to the parenthesis that closes it.
fn up_to_closing_paren(text: &str) -> &str {
    let mut depth = 1;
    for (idx, byte) in text.bytes().enumerate() {
        match byte {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[..idx];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses in router(): {text}")
}

/// True when `text` calls the function `name` (`get(`, `routing::delete(`).
fn calls(text: &str, name: &str) -> bool {
    let pattern = format!("{name}(");
    text.match_indices(&pattern).any(|(idx, _)| {
        !text[..idx]
            .chars()
            .next_back()
            .is_some_and(|before| before.is_alphanumeric() || before == '_')
    })
}

#[test]
fn every_route_of_the_router_has_a_row_in_the_matrix() {
    let declared = routes_in_router();
    assert!(
        declared.len() >= 20,
        "routes_in_router() found only {declared:?}: did router() change shape?"
    );
    let in_matrix: BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|row| (row.method.to_owned(), row.path.to_owned()))
        .collect();
    assert_eq!(in_matrix.len(), MATRIX.len(), "a route has two rows");
    let missing: Vec<_> = declared.difference(&in_matrix).collect();
    let stale: Vec<_> = in_matrix.difference(&declared).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "routes without a row in MATRIX: {missing:?}; rows for routes router() lacks: {stale:?}"
    );
}
