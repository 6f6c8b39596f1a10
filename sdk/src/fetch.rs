//! Getting a segment: cache, then peers within a deadline, then the origin.
//!
//! [`scheduler`] decides (pure logic); [`obtain`] carries the decisions out. One fetch task per
//! segment runs detached from the player's request, so a player that hangs up does not waste
//! the transfer, and a player request and a prefetch of the same segment share one fetch (the
//! player's tighter deadline wins).

mod digest_list;

use crate::cache::PartialWriter;
use crate::metrics::{FallbackReason, Provenance, Source, SourceLabel};
use crate::node::Shared;
use crate::origin_client::OriginError;
use crate::peer::client::Progress;
use crate::peer::PeerError;
use crate::swarm::{Ask, Rules, Swarm};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use shoal_core::scheduler::verdict::{verdict, Verdict};
use shoal_core::scheduler::{self as scheduler, Decision};
use shoal_proto::{PeerId, ReportReason, ReportRequest, SegmentKey, PROTOCOL_VERSION};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tokio::sync::watch;

/// Why a segment could not be obtained.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The origin failed (peers had already been given their chance); the player gets the
    /// origin's status, or 502.
    #[error(transparent)]
    Origin(#[from] OriginError),
    /// The segment is not part of any playlist this node has seen.
    #[error("segment unknown to this swarm")]
    Unknown,
    /// Only peers were allowed (VOD read-ahead) and none delivered in time; not an error for
    /// a player.
    #[error("no peer delivered the segment in time")]
    NoPeer,
}

/// A segment and where its bytes came from.
pub type Outcome = Result<(Bytes, Provenance), FetchError>;

/// An in-progress fetch that others can join.
#[derive(Debug)]
pub struct InFlight {
    deadline: watch::Sender<Instant>,
    result: watch::Receiver<Option<Outcome>>,
    /// The deadline is a prefetch's guess, which the player's own request replaces.
    guessed: bool,
}

/// How far a fetch may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Peers until the deadline, then the origin: a player's request, whose deadline comes
    /// from its buffer.
    PeersThenOrigin,
    /// Peers until the deadline, then the origin, with a deadline guessed before the player
    /// asked (live prefetch). A player's request joining it replaces the deadline, later or
    /// earlier: a guess that expires while the player's buffer still has seconds to spare
    /// would send to the origin a segment that peers are delivering.
    Prefetch,
    /// Peers only: give up at the deadline (read-ahead that must not cost origin bytes).
    PeersOnly,
    /// A live prefetch of a segment whose name is a guess (a `$Time$` timeline's assumed
    /// cadence): the seeders ask the origin, whose answer settles the guess for the swarm;
    /// the others look to peers only, so a wrong guess costs the origin a 404 per seeder
    /// rather than one per viewer. A player's request joining it brings the origin back.
    Probe,
}

impl Mode {
    /// Whether the origin may be asked once peers ran out of time.
    fn origin_allowed(self) -> bool {
        self != Mode::PeersOnly
    }

    /// Whether the scheduler's turn to the origin, for `reason`, is taken in this mode: a
    /// probe lets only the segment's seeders settle the guess.
    fn takes_origin_for(self, reason: FallbackReason) -> bool {
        match self {
            Mode::Probe => matches!(reason, FallbackReason::Seeder | FallbackReason::Supply),
            m => m.origin_allowed(),
        }
    }
}

/// Gets `key` of `swarm` by `deadline` for P2P (origin after that, unless `mode` is
/// [`Mode::PeersOnly`]), joining a fetch already under way. Returns when the bytes are cached
/// or the fetch failed.
pub async fn obtain(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    key: &SegmentKey,
    deadline: Instant,
    mode: Mode,
) -> Outcome {
    let outcome = obtain_once(shared, swarm, key, deadline, mode).await;
    match outcome {
        // The fetch we joined was a peers-only read-ahead that gave up: go again, this time
        // with the origin allowed.
        Err(FetchError::NoPeer) if mode.origin_allowed() => {
            obtain_once(shared, swarm, key, deadline, mode).await
        }
        other => other,
    }
}

async fn obtain_once(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    key: &SegmentKey,
    deadline: Instant,
    mode: Mode,
) -> Outcome {
    if let Some(bytes) = shared.cache.get(&swarm.id, key) {
        return Ok((bytes, swarm.lock().provenance(key)));
    }
    let mut rx = {
        let mut in_flight = swarm.in_flight();
        if let Some(f) = in_flight.get_mut(key) {
            let guessed = f.guessed;
            f.guessed &= mode != Mode::PeersThenOrigin;
            f.deadline.send_if_modified(|d| {
                let joined = joined_deadline(*d, guessed, deadline, mode);
                std::mem::replace(d, joined) != joined
            });
            f.result.clone()
        } else {
            let (dtx, drx) = watch::channel(deadline);
            let (rtx, rrx) = watch::channel(None);
            in_flight.insert(
                key.clone(),
                InFlight {
                    deadline: dtx,
                    result: rrx.clone(),
                    guessed: matches!(mode, Mode::Prefetch | Mode::Probe),
                },
            );
            let (shared, swarm, key) = (shared.clone(), swarm.clone(), key.clone());
            tokio::spawn(async move {
                let started = crate::clock::now();
                let outcome = run(&shared, &swarm, &key, drx, mode).await;
                if let Ok((bytes, source)) = &outcome {
                    // A split fetch was finished by the origin: its time is the origin's.
                    let label = match source {
                        Provenance::Whole(s) => *s,
                        Provenance::Split { .. } => Source::Cdn,
                    };
                    shared
                        .metrics
                        .fetch_seconds
                        .get_or_create(&SourceLabel { source: label })
                        .observe(started.elapsed().as_secs_f64());
                    swarm.lock().sources.insert(key.clone(), *source);
                    swarm.record_segment_size(&key, bytes.len() as u64);
                    shared.cache.insert(&swarm.id, &key, bytes.clone());
                }
                swarm.in_flight().remove(&key);
                let _ = rtx.send(Some(outcome));
            });
            rrx
        }
    };
    let result = match rx.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or(Err(FetchError::Unknown)),
        Err(_) => Err(FetchError::Unknown),
    };
    result
}

/// The deadline of an in-flight fetch once a request with `mode` and `asked` joins it: the
/// tighter of the two, except that a player's request replaces a prefetch's guess.
fn joined_deadline(current: Instant, guessed: bool, asked: Instant, mode: Mode) -> Instant {
    if guessed && mode == Mode::PeersThenOrigin {
        asked
    } else {
        current.min(asked)
    }
}

async fn run(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    key: &SegmentKey,
    mut deadline: watch::Receiver<Instant>,
    mode: Mode,
) -> Outcome {
    let cfg = &shared.config;
    let rules = Rules {
        origin_seeders: cfg.origin_seeders,
        min_peer_time: cfg.min_peer_time,
    };
    let mut tried: HashSet<PeerId> = HashSet::new();
    loop {
        // Register for `have` wake-ups before looking, so none is missed in between.
        let notified = swarm.have_notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let now = crate::clock::now();
        let until = *deadline.borrow_and_update();
        let cached = shared.cache.contains(&swarm.id, key);
        let ask = Ask {
            now,
            deadline: until,
            key,
            cached,
            tried: &tried,
            uplink: shared.uplink(),
        };
        let (decision, addr) = swarm.lock().decide(&ask, &rules);
        match decision {
            Decision::Cache => {
                if let Some(bytes) = shared.cache.get(&swarm.id, key) {
                    return Ok((bytes, swarm.lock().provenance(key)));
                }
            }
            Decision::Peer(peer) => {
                let split = match addr {
                    Some(_) => try_split(shared, swarm, key, until, &mut tried).await,
                    None => None,
                };
                tried.insert(peer.clone());
                let Some(addr) = addr else { continue };
                let outcome = match split {
                    Some(o) => o,
                    None => {
                        let origin = mode.origin_allowed();
                        from_peer(shared, swarm, key, &peer, addr, &mut deadline, origin).await
                    }
                };
                match outcome {
                    PeerOutcome::Verified(bytes) => {
                        swarm
                            .unreported_p2p
                            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        return Ok((bytes, Provenance::Whole(Source::P2p)));
                    }
                    PeerOutcome::Failed => {}
                    // Out of time part way: the origin sends only what is missing, and
                    // neighbours relaying the segment from us get the rest from that.
                    PeerOutcome::Late { prefix, relay } if mode.origin_allowed() => {
                        let outcome =
                            complete_from_origin(shared, swarm, key, &peer, prefix.clone()).await;
                        if let (Ok((bytes, _)), Some(relay)) = (&outcome, relay) {
                            finish_relay(shared, swarm, key, relay, &prefix, bytes);
                        }
                        return outcome;
                    }
                    PeerOutcome::Late { .. } => {}
                    // Asked to come back later: it may be asked again then.
                    PeerOutcome::Busy => {
                        tried.remove(&peer);
                    }
                    PeerOutcome::Unverifiable if !mode.origin_allowed() => {
                        return Err(FetchError::NoPeer)
                    }
                    PeerOutcome::Unverifiable => {
                        return from_origin(shared, swarm, key, FallbackReason::Unverifiable).await
                    }
                }
            }
            Decision::Wait { until } => {
                tokio::select! {
                    _ = &mut notified => {}
                    _ = crate::clock::sleep_until(until) => {}
                    _ = deadline.changed() => {}
                }
            }
            Decision::Origin(reason) => {
                if !mode.takes_origin_for(reason) {
                    return Err(FetchError::NoPeer);
                }
                return from_origin(shared, swarm, key, reason).await;
            }
        }
    }
}

/// What one peer attempt gave.
enum PeerOutcome {
    /// Bytes whose digest matches the trusted one.
    Verified(Bytes),
    /// The transfer failed, stalled, ran out of time, or the bytes were wrong (the peer is
    /// recorded or banned).
    Failed,
    /// The peer was busy and said when to come back.
    Busy,
    /// The bytes arrived but no trusted digest could be had: they are dropped.
    Unverifiable,
    /// The deadline came while the bytes were arriving: these are the ones received so far
    /// (not verified yet; the rest is for the origin to send, and the whole is verified),
    /// and the relay of them to neighbours, if the origin is to finish it.
    Late {
        prefix: Bytes,
        relay: Option<PartialWriter>,
    },
}

/// One transfer attempt from a neighbour, bounded by the deadline (which a player's request
/// may tighten while it runs), with the trusted digest fetched alongside. No byte is returned
/// unless its SHA-256 and size match the digest.
///
/// The transfer runs as its own task. When the deadline comes first it is cut, and when
/// `origin_finishes` the relay of its bytes to neighbours (see `cache::partial`) is handed
/// to the caller with the bytes so far: the origin sends the rest to us, and we to them.
/// Without that hand-over the uploader would go on sending the rest of a segment we already
/// have, on the uplink capacity other members are waiting for (at a low upload cap, what
/// P2P lacks). Only when the origin may not be asked (`PeersOnly`) does a relayed transfer
/// go on to its end; its bytes, once verified, still fill the cache and complete the relays.
async fn from_peer(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    key: &SegmentKey,
    peer: &PeerId,
    addr: crate::peer::PeerAddr,
    deadline: &mut watch::Receiver<Instant>,
    origin_finishes: bool,
) -> PeerOutcome {
    swarm.lock().transfer_started(peer);
    let started = crate::clock::now();
    let budget = deadline.borrow().saturating_duration_since(started);
    tracing::debug!(me = %swarm.peer_id, %peer, %key, ?budget, "peer transfer started");
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let cancel = tokio_util::sync::CancellationToken::new();
    let received = Arc::new(std::sync::Mutex::new(Received::default()));
    tokio::spawn({
        let (shared, swarm, key, peer) = (shared.clone(), swarm.clone(), key.clone(), peer.clone());
        let (cancel, received) = (cancel.clone(), received.clone());
        async move {
            let outcome = tokio::select! {
                o = attempt(&shared, &swarm, &key, &peer, addr, &received) => o,
                _ = cancel.cancelled() => {
                    swarm.lock().transfer_abandoned(&peer);
                    PeerOutcome::Failed
                }
            };
            // A relay neither finished (verified) nor handed over fails its readers now.
            drop(lock(&received).relay.take());
            // Finished or cut, the transfer's rate feeds the swarm's capacity estimate.
            sample_rate(&swarm, &received);
            let _ = tx.send(outcome);
        }
    });
    loop {
        let until = *deadline.borrow_and_update();
        tokio::select! {
            r = &mut rx => return r.unwrap_or(PeerOutcome::Failed),
            _ = crate::clock::sleep_until(until) => break,
            // Tightened by a player: look again at the new deadline.
            changed = deadline.changed() => if changed.is_err() {
                // The fetch's owner is gone; finish with the deadline we had.
                if let Ok(Ok(r)) = tokio::time::timeout_at(until.into(), &mut rx).await {
                    return r;
                }
                break;
            },
        }
    }
    let relayed = shared
        .cache
        .partial(&swarm.id, key)
        .is_some_and(|p| p.readers() > 0);
    let (prefix, relay) = {
        let mut r = lock(&received);
        // Handed over, the relay has exactly `prefix`: later bytes of the transfer go nowhere.
        r.detached = origin_finishes;
        (r.snapshot(), r.relay.take_if(|_| origin_finishes))
    };
    if origin_finishes || !relayed {
        cancel.cancel();
    }
    tracing::debug!(
        me = %swarm.peer_id,
        %peer,
        %key,
        ?budget,
        elapsed = ?started.elapsed(),
        relayed,
        received = prefix.len(),
        "peer transfer too late for the player; the origin sends the rest"
    );
    shared.metrics.peer_failures.inc();
    if prefix.is_empty() {
        PeerOutcome::Failed
    } else {
        PeerOutcome::Late { prefix, relay }
    }
}

/// Completes a relay handed over by a late peer transfer with the rest of `whole` (what the
/// origin completed it with), once `whole` is cached; if `whole` does not begin with the
/// bytes relayed so far (the origin's copy replaced bad peer bytes), the relay fails.
fn finish_relay(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    key: &SegmentKey,
    relay: PartialWriter,
    prefix: &Bytes,
    whole: &Bytes,
) {
    if whole.len() != relay.len() as usize || !whole.starts_with(prefix) {
        return;
    }
    relay.push(whole.slice(prefix.len()..));
    shared.cache.insert(&swarm.id, key, whole.clone());
    relay.finish();
}

/// Feeds the swarm's capacity estimate with the rate a transfer ran at since its first byte.
fn sample_rate(swarm: &Swarm, received: &std::sync::Mutex<Received>) {
    let (len, first_at) = {
        let r = lock(received);
        (r.len as u64, r.first_at)
    };
    if let Some(first_at) = first_at {
        swarm.record_transfer_rate(len, first_at.elapsed());
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The bytes of a peer transfer received so far, in arrival order, and their relay to
/// neighbours (each chunk goes to both at once, so the relay holds exactly these bytes).
#[derive(Debug, Default)]
struct Received {
    chunks: Vec<Bytes>,
    len: usize,
    /// When the first byte arrived.
    first_at: Option<Instant>,
    relay: Option<PartialWriter>,
    /// The relay was handed to the origin's completion: later bytes are dropped.
    detached: bool,
}

impl Received {
    fn push(&mut self, data: &Bytes) {
        self.first_at.get_or_insert_with(crate::clock::now);
        self.len += data.len();
        self.chunks.push(data.clone());
        if let Some(w) = self.relay.as_ref() {
            w.push(data.clone());
        }
    }

    /// The bytes so far as one buffer (copied once; the transfer may go on meanwhile).
    fn snapshot(&self) -> Bytes {
        let mut out = bytes::BytesMut::with_capacity(self.len);
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        out.freeze()
    }
}

/// The transfer of [`from_peer`], run to its end. Verified bytes go into the cache even when
/// the player was served by the origin meanwhile.
async fn attempt(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    key: &SegmentKey,
    peer: &PeerId,
    addr: crate::peer::PeerAddr,
    received: &std::sync::Mutex<Received>,
) -> PeerOutcome {
    // Bytes are relayed to neighbours while they arrive (see `cache::partial`); the writer
    // is finished only after verification, and dropped (aborting the relays) otherwise.
    let transfer = shared.peer_client.fetch_with(
        &addr,
        &swarm.id,
        key,
        shared.config.stall_timeout,
        |progress| {
            let mut r = lock(received);
            if r.detached {
                return;
            }
            match progress {
                Progress::Started { len } => {
                    r.relay = shared.cache.begin_partial(&swarm.id, key, len);
                }
                Progress::Data(data) => r.push(data),
            }
        },
    );
    let (transfer, digest) =
        futures::future::join(transfer, trusted_digest(shared, swarm, key)).await;
    let now = crate::clock::now();
    let transfer = match transfer {
        Ok(t) => t,
        Err(e) => return peer_error(shared, swarm, key, peer, e, now),
    };
    let n = transfer.bytes.len() as u64;
    swarm
        .lock()
        .record_transfer(peer, now, Ok((n, transfer.elapsed)));
    let Some((sha256, size)) = digest else {
        tracing::debug!(%key, "no trusted digest; peer bytes dropped");
        return PeerOutcome::Unverifiable;
    };
    if size != n || Sha256::digest(&transfer.bytes).as_slice() != sha256 {
        ban_for_bad_bytes(shared, swarm, peer, key);
        return PeerOutcome::Failed;
    }
    shared.metrics.peer_bytes.inc_by(n);
    tracing::debug!(me = %swarm.peer_id, %peer, %key, elapsed = ?transfer.elapsed, "peer transfer verified");
    shared.cache.insert(&swarm.id, key, transfer.bytes.clone());
    if let Some(w) = lock(received).relay.take() {
        w.finish();
    }
    PeerOutcome::Verified(transfer.bytes)
}

/// Bans `peer` for the session and reports it: it sent bytes of `key` that fail the trusted
/// digest.
fn ban_for_bad_bytes(shared: &Arc<Shared>, swarm: &Arc<Swarm>, peer: &PeerId, key: &SegmentKey) {
    tracing::warn!(%peer, %key, "peer sent bytes that fail the trusted digest: banned and reported");
    shared.metrics.integrity_failures.inc();
    shared.metrics.peers_banned.inc();
    swarm.ban(peer);
    report(shared, swarm, peer, key, ReportReason::Integrity);
}

/// Records a failed transfer from `peer` (busy, failed, misbehaving: struck, and banned and
/// reported at the threshold, by `shoal_core::scheduler::verdict`'s rules) and says what it
/// means for the fetch.
fn peer_error(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    key: &SegmentKey,
    peer: &PeerId,
    e: PeerError,
    now: Instant,
) -> PeerOutcome {
    let v = verdict(e.failure(), rand::random::<f64>());
    let ban = swarm.lock().record_verdict(peer, now, v);
    if let Verdict::Busy { wait } = v {
        tracing::debug!(me = %swarm.peer_id, %peer, %key, ?wait, "peer busy");
        return PeerOutcome::Busy;
    }
    tracing::debug!(%peer, %key, error = %e, "peer transfer failed");
    shared.metrics.peer_failures.inc();
    if let Some(reason) = ban {
        tracing::warn!(%peer, ?reason, "peer keeps misbehaving: banned and reported");
        swarm.ban(peer);
        shared.metrics.peers_banned.inc();
        report(shared, swarm, peer, key, reason);
    }
    PeerOutcome::Failed
}

/// Most peers one segment is fetched from in parts.
const MAX_PARTS: usize = 4;
/// After a split fetch fails its digest, whole transfers only for this long.
const NO_SPLIT_AFTER_BAD_BYTES: Duration = Duration::from_secs(30);

/// Fetches `key` in parts from several idle holders at once when no single one could send it
/// in the time left (a low upload cap); `None` when a split is not worth it.
async fn try_split(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    key: &SegmentKey,
    until: Instant,
    tried: &mut HashSet<PeerId>,
) -> Option<PeerOutcome> {
    let holders = swarm.lock().idle_holders(key, crate::clock::now(), tried);
    if holders.len() < 2 {
        return None;
    }
    let rates: Vec<f64> = holders.iter().map(|h| h.2).collect();
    let left = until.saturating_duration_since(crate::clock::now());
    let (sha256, size) = trusted_digest(shared, swarm, key).await?;
    let k = scheduler::parts_for(size, &rates, left, MAX_PARTS);
    tracing::trace!(%key, holders = holders.len(), ?rates, ?left, k, "parts to fetch");
    if k < 2 || size < k as u64 {
        return None;
    }
    let chosen = &holders[..k];
    for (p, _, _) in chosen {
        tried.insert(p.clone());
        swarm.lock().transfer_started(p);
    }
    let step = size / k as u64;
    let parts = chosen.iter().enumerate().map(|(i, (peer, addr, _))| {
        let offset = step * i as u64;
        let len = if i + 1 == k { size - offset } else { step };
        async move {
            let r = shared
                .peer_client
                .fetch_part(
                    addr,
                    &swarm.id,
                    key,
                    shared.config.stall_timeout,
                    offset,
                    len,
                )
                .await;
            (peer, r)
        }
    });
    let Ok(results) = tokio::time::timeout_at(until.into(), futures::future::join_all(parts)).await
    else {
        for (p, _, _) in chosen {
            swarm.lock().transfer_abandoned(p);
        }
        shared.metrics.peer_failures.inc();
        return Some(PeerOutcome::Failed);
    };
    let now = crate::clock::now();
    let mut body = bytes::BytesMut::with_capacity(size as usize);
    let mut outcome = None;
    for (peer, r) in results {
        match r {
            Ok(t) => {
                swarm
                    .lock()
                    .record_transfer(peer, now, Ok((t.bytes.len() as u64, t.elapsed)));
                body.extend_from_slice(&t.bytes);
            }
            Err(e) => {
                let o = peer_error(shared, swarm, key, peer, e, now);
                // One busy part makes the whole worth retrying soon; any failure ends it.
                if !matches!(outcome, Some(PeerOutcome::Failed)) {
                    outcome = Some(o);
                }
            }
        }
    }
    if let Some(o) = outcome {
        if matches!(o, PeerOutcome::Busy) {
            for (p, _, _) in chosen {
                tried.remove(p);
            }
        }
        return Some(o);
    }
    if body.len() as u64 != size || Sha256::digest(&body).as_slice() != sha256 {
        // Which part was wrong cannot be told: no ban, and whole transfers only for a while,
        // so that the liar is caught and banned by one of them.
        tracing::warn!(%key, "segment fetched in parts failed its digest; whole transfers only for a while");
        shared.metrics.integrity_failures.inc();
        swarm.lock().no_split_until = Some(now + NO_SPLIT_AFTER_BAD_BYTES);
        return Some(PeerOutcome::Failed);
    }
    let body = body.freeze();
    shared.metrics.peer_bytes.inc_by(size);
    shared.cache.insert(&swarm.id, key, body.clone());
    Some(PeerOutcome::Verified(body))
}

/// The trusted digest of `key`: remembered, or asked of the tracker; with a provider key
/// configured, from the provider's signed digest list only. `None` when neither can vouch for
/// it (unreachable, refused, malformed answer, bad signature).
async fn trusted_digest(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    key: &SegmentKey,
) -> Option<([u8; 32], u64)> {
    let peer_key = {
        let st = swarm.lock();
        if let Some(d) = st.digests.get(key) {
            return Some(*d);
        }
        st.peer_key.clone()
    };
    if let Some(provider) = &shared.config.digest_list_key {
        return digest_list::digest(shared, swarm, key, provider).await;
    }
    let (tracker, peer_key) = (shared.tracker.as_ref()?, peer_key?);
    let answer = tracker
        .digest(&swarm.id, key, &swarm.peer_id, &peer_key)
        .await;
    let d = match answer {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(%key, error = %e, "digest unavailable");
            return None;
        }
    };
    let mut sha = [0u8; 32];
    hex::decode_to_slice(&d.sha256, &mut sha).ok()?;
    swarm.lock().digests.insert(key.clone(), (sha, d.size));
    Some((sha, d.size))
}

/// Tells the tracker, in the background, that `peer` misbehaved.
fn report(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    peer: &PeerId,
    key: &SegmentKey,
    reason: ReportReason,
) {
    let (Some(tracker), Some(peer_key)) = (shared.tracker.clone(), swarm.lock().peer_key.clone())
    else {
        return;
    };
    let req = ReportRequest {
        proto: PROTOCOL_VERSION,
        peer_id: swarm.peer_id.clone(),
        swarm_id: swarm.id.clone(),
        peer_key,
        offender: peer.clone(),
        reason,
        segment: Some(key.clone()),
    };
    tokio::spawn(async move {
        if let Err(e) = tracker.report(&req).await {
            tracing::debug!(error = %e, "report not delivered");
        }
    });
}

async fn from_origin(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    key: &SegmentKey,
    reason: FallbackReason,
) -> Outcome {
    let (url, range) = {
        let st = swarm.lock();
        let info = st.segments.get(key).ok_or(FetchError::Unknown)?;
        (info.url.clone(), info.range)
    };
    shared.metrics.fallback(reason);
    tracing::debug!(me = %swarm.peer_id, %key, ?reason, "origin fetch");
    let fetched =
        counted_origin_fetch(shared, swarm, &url, range.map(|r| (r.offset, r.length))).await?;
    Ok((fetched.body, Provenance::Whole(Source::Cdn)))
}

/// Fetches `range` of `url` from the origin, timing it (for players' deadlines) and counting
/// its bytes as origin bytes of the node and the swarm.
async fn counted_origin_fetch(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    url: &url::Url,
    range: Option<(u64, u64)>,
) -> Result<crate::origin_client::Fetched, FetchError> {
    let started = crate::clock::now();
    let fetched = shared
        .origin
        .fetch(url, range, shared.config.max_segment_bytes())
        .await?;
    swarm.lock().record_origin_time(started.elapsed());
    let n = fetched.body.len() as u64;
    shared.metrics.origin_bytes.inc_by(n);
    swarm.unreported_cdn.fetch_add(n, Ordering::Relaxed);
    Ok(fetched)
}

/// Finishes a peer transfer that ran out of time: the origin sends only the bytes after
/// `prefix` (a range request), and the whole is verified against the trusted digest before
/// anyone sees it. Falls back to a whole origin fetch when no digest is at hand (counted as
/// `unverifiable`), the origin ignores or refuses the range, or the whole does not verify
/// (and then, if the origin's copy matches the digest, the peer sent bad bytes: it is banned
/// and reported).
///
/// A transfer cut at the deadline has typically delivered most of the segment (three
/// quarters on average in the swarm benchmark at 32 nodes), so fetching it again whole
/// would bill the CDN for bytes the viewer already had.
async fn complete_from_origin(
    shared: &Arc<Shared>,
    swarm: &Arc<Swarm>,
    key: &SegmentKey,
    peer: &PeerId,
    prefix: Bytes,
) -> Outcome {
    // Only a digest already at hand: the transfer asked for it when it started, and waiting
    // now (a signed list is fetched again at most once a second) would spend the margin the
    // player's deadline keeps for the origin. Without one, the peer's bytes cannot be
    // verified in time and the origin sends the whole segment.
    let known = swarm.lock().digests.get(key).copied();
    let Some((sha256, size)) = known else {
        return from_origin(shared, swarm, key, FallbackReason::Unverifiable).await;
    };
    let have = prefix.len() as u64;
    if have == 0 || have >= size {
        return from_origin(shared, swarm, key, FallbackReason::PeerFailed).await;
    }
    let (url, base) = {
        let st = swarm.lock();
        let info = st.segments.get(key).ok_or(FetchError::Unknown)?;
        (info.url.clone(), info.range.map_or(0, |r| r.offset))
    };
    shared.metrics.fallback(FallbackReason::PeerFailed);
    let fetched =
        counted_origin_fetch(shared, swarm, &url, Some((base + have, size - have))).await?;
    let rest = match rest_of(&fetched, base + have, size - have) {
        Some(r) => r,
        None => {
            tracing::debug!(%key, status = fetched.status, got = fetched.body.len(), "origin did not answer the range; fetching the segment whole");
            return from_origin(shared, swarm, key, FallbackReason::PeerFailed).await;
        }
    };
    let mut whole = bytes::BytesMut::with_capacity(size as usize);
    whole.extend_from_slice(&prefix);
    whole.extend_from_slice(&rest);
    if Sha256::digest(&whole).as_slice() != sha256 {
        let again = from_origin(shared, swarm, key, FallbackReason::Integrity).await?;
        let origin_ok = Sha256::digest(&again.0).as_slice() == sha256;
        if origin_ok && again.0.get(..prefix.len()) != Some(&prefix[..]) {
            ban_for_bad_bytes(shared, swarm, peer, key);
        }
        return Ok(again);
    }
    shared.metrics.origin_completions.inc();
    shared.metrics.peer_bytes.inc_by(have);
    swarm.unreported_p2p.fetch_add(have, Ordering::Relaxed);
    Ok((whole.freeze(), Provenance::Split { p2p: have }))
}

/// The bytes `offset..offset + len` of the resource out of an origin answer to a range
/// request for them: a `206` carrying exactly those bytes, or a `200` carrying the whole
/// resource (an origin that ignores ranges). `None` for anything else.
fn rest_of(fetched: &crate::origin_client::Fetched, offset: u64, len: u64) -> Option<Bytes> {
    let body = &fetched.body;
    match fetched.status {
        206 if body.len() as u64 == len => Some(body.clone()),
        200 => {
            let start = usize::try_from(offset).ok()?;
            let end = usize::try_from(offset.checked_add(len)?).ok()?;
            (end <= body.len()).then(|| body.slice(start..end))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &'static [u8]) -> crate::origin_client::Fetched {
        crate::origin_client::Fetched {
            status,
            content_type: None,
            cache_control: None,
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn the_rest_of_a_segment_comes_from_a_206_or_out_of_a_200() {
        // A range answer with exactly the bytes asked for.
        assert_eq!(
            rest_of(&answer(206, b"6789"), 6, 4).as_deref(),
            Some(&b"6789"[..])
        );
        // An origin that ignores ranges sends the whole resource: the rest is cut from it.
        assert_eq!(
            rest_of(&answer(200, b"0123456789"), 6, 4).as_deref(),
            Some(&b"6789"[..])
        );
        // A short or wrong answer is not used (the node fetches the segment whole).
        assert_eq!(rest_of(&answer(206, b"678"), 6, 4), None);
        assert_eq!(rest_of(&answer(200, b"01234567"), 6, 4), None);
        assert_eq!(rest_of(&answer(204, b""), 6, 4), None);
        assert_eq!(rest_of(&answer(200, b"0"), u64::MAX, 4), None);
    }

    #[test]
    fn received_bytes_are_kept_in_order() {
        let mut r = Received::default();
        assert!(r.snapshot().is_empty());
        r.push(&Bytes::from_static(b"abc"));
        r.push(&Bytes::from_static(b"de"));
        assert_eq!(&r.snapshot()[..], b"abcde");
    }

    #[test]
    fn a_player_replaces_a_prefetch_guess_and_otherwise_the_tighter_deadline_wins() {
        let t0 = crate::clock::now();
        let (early, late) = (t0 + Duration::from_secs(2), t0 + Duration::from_secs(5));
        // The player's buffer allows more than the prefetch guessed: P2P gets the time.
        assert_eq!(
            joined_deadline(early, true, late, Mode::PeersThenOrigin),
            late
        );
        // ... and less: the origin is asked sooner.
        assert_eq!(
            joined_deadline(late, true, early, Mode::PeersThenOrigin),
            early
        );
        // Two players, or a prefetch joining anything: never later.
        assert_eq!(
            joined_deadline(early, false, late, Mode::PeersThenOrigin),
            early
        );
        assert_eq!(
            joined_deadline(late, false, early, Mode::PeersThenOrigin),
            early
        );
        assert_eq!(joined_deadline(early, true, late, Mode::Prefetch), early);
        assert_eq!(joined_deadline(early, true, late, Mode::PeersOnly), early);
    }
}
