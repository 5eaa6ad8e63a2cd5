//! Chunk upload, download and the "which are missing" question, always per
//! folder: a folder reads only the chunks it uploaded itself.

use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use bytes::Bytes;
use syncfolder_core::Hash;
use syncfolder_core::frame;
use syncfolder_core::protocol::{
    FetchChunksRequest, MissingChunksRequest, MissingChunksResponse, StreamChunksRequest,
    UploadResponse,
};

use crate::auth::{ReadAccess, WriteAccess};
use crate::error::{Error, Result};
use crate::extract::{Body, Json, Path};
use crate::metadata::Folder;
use crate::metrics::WaitingGuard;
use crate::packs::{self, Placed};
use crate::state::AppState;
use crate::validate;

fn parse_hash(text: &str) -> Result<Hash> {
    Hash::from_hex(text).map_err(|_| Error::InvalidHash(text.to_owned()))
}

/// How long an upload waits for a chunk that a garbage collection is
/// deleting (or a scrub repairing) before it answers 503 "try again".
const WAIT_FOR_CHUNK: Duration = Duration::from_secs(30);
/// How often it looks meanwhile.
const WAIT_STEP: Duration = Duration::from_millis(50);

/// Verifies every chunk against its name, then claims them, stores them
/// durably and lets the folder read them. Nothing is stored when any chunk
/// is wrong.
///
/// The claim comes first, so that a garbage collection never deletes a
/// chunk between "the store has it" and "the folder may read it". A chunk
/// being deleted or repaired is waited for and then stored again; one that
/// a collection took over between the claim and the recording is claimed
/// and stored again too.
async fn store_for_folder(
    state: &AppState,
    folder: &Folder,
    chunks: Vec<(Hash, Bytes)>,
) -> Result<UploadResponse> {
    validate::chunk_hashes(&chunks)?;
    let received: u64 = chunks.iter().map(|(_, bytes)| bytes.len() as u64).sum();
    state.metrics.chunk_bytes_received.inc_by(received);
    let n_chunks = chunks.len() as u64;
    let mut pending = chunks;
    let mut bytes_written = 0;
    let mut n_attempts = 0;
    while !pending.is_empty() {
        n_attempts += 1;
        let sizes: Vec<(Hash, u64)> = pending
            .iter()
            .map(|(hash, bytes)| (*hash, bytes.len() as u64))
            .collect();
        let busy = state.db.claim_chunks(&sizes).await?;
        if !busy.is_empty() {
            wait_until_live(state, &busy).await?;
            continue;
        }
        let stored = packs::store(
            state.chunk_store.as_ref(),
            &state.db,
            state.pack_chunks_under,
            pending.clone(),
        )
        .await?;
        for ((_, size), newly_written) in sizes.iter().zip(&stored.newly_written) {
            if *newly_written {
                bytes_written += size;
                state.metrics.chunks_stored.inc();
            } else {
                state.metrics.chunk_dedup_hits.inc();
            }
        }
        let recorded = state
            .db
            .record_stored(folder.id, &sizes, stored.pack.as_ref())
            .await?;
        state.metrics.chunks_repaired.inc_by(recorded.n_repaired);
        if recorded.n_repaired > 0 {
            tracing::info!(folder = %folder.name, n_repaired = recorded.n_repaired, "damaged chunks uploaded again");
        }
        if !recorded.refused.is_empty() && n_attempts >= 3 {
            return Err(Error::TryAgain(
                "chunks of this upload are being garbage-collected; send them again".to_owned(),
            ));
        }
        pending.retain(|(hash, _)| recorded.refused.contains(hash));
    }
    state.metrics.chunk_bytes_stored.inc_by(bytes_written);
    state.chunks_stored();
    tracing::debug!(folder = %folder.name, n_chunks, bytes_written, "chunks stored");
    Ok(UploadResponse {
        stored: n_chunks,
        bytes_written,
    })
}

/// Waits until none of `hashes` is being deleted or repaired.
async fn wait_until_live(state: &AppState, hashes: &[Hash]) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_CHUNK;
    loop {
        tokio::select! {
            () = tokio::time::sleep(WAIT_STEP) => {}
            () = state.shutdown.cancelled() => {
                return Err(Error::TryAgain("the server is shutting down".to_owned()));
            }
        }
        if state.db.chunks_not_live(hashes).await?.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::TryAgain(
                "chunks of this upload are being garbage-collected or repaired; send them again shortly"
                    .to_owned(),
            ));
        }
    }
}

/// `PUT /v1/folders/{folder}/chunks/{hash}`: one chunk, raw bytes.
pub async fn put_chunk(
    State(state): State<AppState>,
    WriteAccess(folder): WriteAccess,
    Path((_, hash)): Path<(String, String)>,
    Body(bytes): Body,
) -> Result<axum::Json<UploadResponse>> {
    let hash = parse_hash(&hash)?;
    let response = store_for_folder(&state, &folder, vec![(hash, bytes)]).await?;
    Ok(axum::Json(response))
}

/// `POST /v1/folders/{folder}/chunks/upload`: many chunks, framed.
pub async fn upload(
    State(state): State<AppState>,
    WriteAccess(folder): WriteAccess,
    Body(body): Body,
) -> Result<axum::Json<UploadResponse>> {
    let frames = frame::split_frames(&body)?;
    validate::upload_frames(&frames, &state.limits)?;
    let chunks = frames
        .into_iter()
        .map(|(hash, bytes)| (hash, body.slice_ref(bytes)))
        .collect();
    let response = store_for_folder(&state, &folder, chunks).await?;
    Ok(axum::Json(response))
}

/// `POST /v1/folders/{folder}/chunks/missing`: which of these the folder lacks.
pub async fn missing(
    State(state): State<AppState>,
    WriteAccess(folder): WriteAccess,
    Json(request): Json<MissingChunksRequest>,
) -> Result<axum::Json<MissingChunksResponse>> {
    validate::missing_chunks_request(&request, &state.limits)?;
    let missing = state.db.missing_chunks(folder.id, &request.hashes).await?;
    Ok(axum::Json(MissingChunksResponse { missing }))
}

/// The bytes of a chunk the folder may read.
async fn read_for_folder(state: &AppState, folder: &Folder, hash: Hash) -> Result<Bytes> {
    let Some(placed) = state
        .db
        .readable_chunks(folder.id, &[hash])
        .await?
        .remove(&hash)
    else {
        return Err(Error::ChunkNotFound(hash));
    };
    let mut read = read_readable(state, folder, vec![placed]).await?;
    read.pop()
        .map(|(_, bytes)| bytes)
        .ok_or(Error::ChunkNotFound(hash))
}

/// The bytes of chunks the folder was found to read, in the order asked,
/// read from the store in one go (one ranged read per pack).
async fn read_readable(
    state: &AppState,
    folder: &Folder,
    placed: Vec<Placed>,
) -> Result<Vec<(Hash, Bytes)>> {
    if placed.is_empty() {
        return Ok(Vec::new());
    }
    let mut read = packs::read(state.chunk_store.as_ref(), &placed)
        .await
        .map_err(Error::io("reading a chunk"))?;
    // a pack that garbage collection rewrote and deleted after the lookup:
    // look where its chunks are now, once
    let moved: Vec<usize> = (0..placed.len())
        .filter(|idx| placed[*idx].slot.is_some() && read[*idx].is_none())
        .collect();
    if !moved.is_empty() {
        let hashes: Vec<Hash> = moved.iter().map(|idx| placed[*idx].hash).collect();
        let now = state.db.readable_chunks(folder.id, &hashes).await?;
        let again: Vec<(usize, Placed)> = moved
            .into_iter()
            .filter_map(|idx| Some((idx, now.get(&placed[idx].hash)?.clone())))
            .collect();
        let retried: Vec<Placed> = again.iter().map(|(_, chunk)| chunk.clone()).collect();
        let bytes = packs::read(state.chunk_store.as_ref(), &retried)
            .await
            .map_err(Error::io("reading a chunk"))?;
        for ((idx, _), bytes) in again.iter().zip(bytes) {
            read[*idx] = bytes;
        }
    }
    let mut chunks = Vec::with_capacity(placed.len());
    for (hash, bytes) in placed.into_iter().map(|chunk| chunk.hash).zip(read) {
        let Some(bytes) = bytes else {
            tracing::error!(folder = %folder.name, %hash, "chunk recorded for the folder is absent from the store");
            return Err(Error::ChunkNotFound(hash));
        };
        state.metrics.chunk_bytes_sent.inc_by(bytes.len() as u64);
        state.metrics.chunks_sent.inc();
        chunks.push((hash, bytes));
    }
    Ok(chunks)
}

/// `GET /v1/folders/{folder}/chunks/{hash}`: one chunk, raw bytes.
pub async fn get_chunk(
    State(state): State<AppState>,
    ReadAccess(folder): ReadAccess,
    Path((_, hash)): Path<(String, String)>,
) -> Result<impl IntoResponse> {
    let hash = parse_hash(&hash)?;
    let bytes = read_for_folder(&state, &folder, hash).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes))
}

/// `POST /v1/folders/{folder}/chunks/fetch`: many chunks, framed, in the
/// order asked. Fails whole (404) when any is not readable by the folder.
pub async fn fetch(
    State(state): State<AppState>,
    ReadAccess(folder): ReadAccess,
    Json(request): Json<FetchChunksRequest>,
) -> Result<impl IntoResponse> {
    let limits = &state.limits;
    validate::fetch_chunks_request(&request, limits)?;
    let readable = state.db.readable_chunks(folder.id, &request.hashes).await?;
    let mut total: u64 = 0;
    let mut placed = Vec::with_capacity(request.hashes.len());
    for hash in &request.hashes {
        let chunk = readable.get(hash).ok_or(Error::ChunkNotFound(*hash))?;
        total = total.saturating_add(chunk.size);
        placed.push(chunk.clone());
    }
    if total > limits.max_fetch_bytes {
        return Err(Error::InvalidRequest(format!(
            "the chunks asked for hold {total} bytes, over the limit of {} per fetch: ask for fewer",
            limits.max_fetch_bytes
        )));
    }
    Ok(framed(read_readable(&state, &folder, placed).await?))
}

/// Chunks framed as [`frame`] describes, sent as they are read (each
/// header, then the chunk's own bytes) instead of copied into one buffer.
fn framed(chunks: Vec<(Hash, Bytes)>) -> impl IntoResponse {
    let body_len: usize = chunks
        .iter()
        .map(|(_, bytes)| frame::HEADER_LEN + bytes.len())
        .sum();
    let pieces = frame::encode_pieces(chunks);
    let body = axum::body::Body::from_stream(futures::stream::iter(
        pieces.into_iter().map(Ok::<_, std::convert::Infallible>),
    ));
    (
        [
            (header::CONTENT_TYPE, frame::CONTENT_TYPE.to_owned()),
            (header::CONTENT_LENGTH, body_len.to_string()),
        ],
        body,
    )
}

/// `POST /v1/folders/{folder}/chunks/stream` (streaming sync): the asked
/// chunks stored now, framed, in the order asked; when none is, waits up to
/// `wait_ms` (capped like a long-poll) for chunks to be stored, then answers
/// with what there is, possibly nothing. A chunk that is neither readable by
/// the folder nor named by one of its open announcements fails the request
/// (404), so nobody waits for a chunk that is not coming.
pub async fn stream(
    State(state): State<AppState>,
    ReadAccess(folder): ReadAccess,
    Json(request): Json<StreamChunksRequest>,
) -> Result<impl IntoResponse> {
    let limits = &state.limits;
    validate::stream_chunks_request(&request, limits)?;
    let wait = std::time::Duration::from_millis(request.wait_ms)
        .min(std::time::Duration::from_secs(limits.max_long_poll_secs));
    let deadline = tokio::time::Instant::now() + wait;
    let mut waiting = None;
    loop {
        // subscribe before looking, so a store in between still wakes us
        let mut stored = state.announcements.subscribe_stored();
        let stored_now = state.db.readable_chunks(folder.id, &request.hashes).await?;
        let mut readable = Vec::new();
        let mut total: u64 = 0;
        for hash in &request.hashes {
            match stored_now.get(hash) {
                Some(chunk) => {
                    total = total.saturating_add(chunk.size);
                    if total > limits.max_fetch_bytes && !readable.is_empty() {
                        // the rest next time
                        break;
                    }
                    readable.push(chunk.clone());
                }
                None => {
                    if crate::announcements::chunk_size(&state, folder.id, hash)
                        .await?
                        .is_none()
                    {
                        return Err(Error::ChunkNotFound(*hash));
                    }
                }
            }
        }
        let parked =
            usize::try_from(state.metrics.chunk_stream_waiting.get()).unwrap_or(usize::MAX);
        if !readable.is_empty()
            || tokio::time::Instant::now() >= deadline
            || (waiting.is_none() && parked >= limits.max_waiting_requests)
        {
            return Ok(framed(read_readable(&state, &folder, readable).await?));
        }
        waiting.get_or_insert_with(|| WaitingGuard::new(&state.metrics.chunk_stream_waiting));
        tokio::select! {
            _ = stored.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = state.shutdown.cancelled() => {
                return Ok(framed(Vec::new()));
            }
        }
    }
}
