//! A swarm as the running node holds it: the core's [`SwarmState`] (plain data and the
//! scheduler's rules) behind one short-held mutex, and what only a running node has: the
//! wake-up of fetches waiting for a `have`, the fetches in flight, the tasks that follow each
//! neighbour's `haves`, and the byte counts not yet reported. The tasks that keep it fresh
//! (announce loop, one `haves` subscription per neighbour) live in [`crate::node`].

use crate::fetch::InFlight;
use shoal_core::swarm::CapacityChange;
pub use shoal_core::swarm::{
    Ask, Neighbour, NewSegment, Offer, PeerAddr, Rules, SegmentInfo, SwarmState,
};
use shoal_proto::{PeerId, SegmentKey, SwarmId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// One swarm this node is in.
#[derive(Debug)]
pub struct Swarm {
    /// The swarm's id.
    pub id: SwarmId,
    /// Our peer id in this swarm.
    pub peer_id: PeerId,
    /// The state (see [`Swarm::lock`]).
    state: Mutex<SwarmState>,
    /// Woken whenever a neighbour announces a segment.
    pub have_notify: Notify,
    /// Fetches under way, joined by later requests for the same segment.
    in_flight: Mutex<HashMap<SegmentKey, InFlight>>,
    /// The task following each neighbour's `haves`.
    followers: Mutex<HashMap<PeerId, AbortHandle>>,
    /// A task polls the live playlist near the moments new segments appear.
    pub edge_poller: AtomicBool,
    /// Player-bound bytes from the origin not yet reported to the tracker.
    pub unreported_cdn: AtomicU64,
    /// Bytes from peers not yet reported to the tracker.
    pub unreported_p2p: AtomicU64,
    /// Milliseconds since node start of the last player request in this swarm.
    pub last_used_ms: AtomicU64,
    /// When the last fetch of the signed digest list started; locked for a whole fetch, so
    /// one runs at a time and waiters share its result (`fetch::digest_list`).
    pub digest_list: tokio::sync::Mutex<Option<Instant>>,
}

/// Locks a mutex whose holder may have panicked: no update here leaves the data half-done in
/// a way that matters more than stopping the node would, so keep going with what is there.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Swarm {
    /// A swarm with no neighbours yet.
    pub fn new(id: SwarmId, peer_id: PeerId, discovering: bool) -> Self {
        Self {
            id,
            state: Mutex::new(SwarmState::new(peer_id.clone(), discovering)),
            peer_id,
            have_notify: Notify::new(),
            in_flight: Mutex::new(HashMap::new()),
            followers: Mutex::new(HashMap::new()),
            edge_poller: AtomicBool::new(false),
            unreported_cdn: AtomicU64::new(0),
            unreported_p2p: AtomicU64::new(0),
            last_used_ms: AtomicU64::new(0),
            digest_list: tokio::sync::Mutex::new(None),
        }
    }

    /// Locks the state; callers keep the guard short and never hold it across `.await`.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, SwarmState> {
        lock(&self.state)
    }

    /// Locks the fetches in flight (never while holding [`Swarm::lock`]'s guard).
    pub fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<SegmentKey, InFlight>> {
        lock(&self.in_flight)
    }

    fn wake_if(&self, wake: bool) {
        if wake {
            self.have_notify.notify_waiters();
        }
    }

    /// Records that `peer` holds `keys`; wakes fetches waiting for it.
    pub fn peer_has(&self, peer: &PeerId, keys: impl IntoIterator<Item = SegmentKey>) {
        let wake = self.lock().peer_has(peer, keys);
        self.wake_if(wake);
    }

    /// `peer`'s snapshot of what it holds replaces what it announced before; wakes waiters.
    pub fn peer_snapshot(&self, peer: &PeerId, keys: impl IntoIterator<Item = SegmentKey>) {
        let wake = self.lock().peer_snapshot(peer, keys);
        self.wake_if(wake);
    }

    /// A busy neighbour takes uploads again; wakes waiters.
    pub fn peer_free(&self, peer: &PeerId) {
        let wake = self.lock().peer_free(peer);
        self.wake_if(wake);
    }

    /// One awaited neighbour snapshot arrived or will never come; wakes waiters when that
    /// ended discovery.
    pub fn snapshot_settled(&self) {
        let wake = self.lock().snapshot_settled();
        self.wake_if(wake);
    }

    /// Ends discovery now (the first announce failed or found nobody).
    pub fn end_discovery(&self) {
        self.lock().discovering = false;
        self.wake_if(true);
    }

    /// Records a peer transfer's rate sample (see [`SwarmState::record_transfer_rate`]).
    pub fn record_transfer_rate(&self, bytes: u64, since_first_byte: Duration) {
        let change = self.lock().record_transfer_rate(bytes, since_first_byte);
        self.log_capacity_change(change);
    }

    /// Records a segment's size (see [`SwarmState::record_segment_size`]).
    pub fn record_segment_size(&self, key: &SegmentKey, bytes: u64) {
        let change = self.lock().record_segment_size(key, bytes);
        self.log_capacity_change(change);
    }

    fn log_capacity_change(&self, change: Option<CapacityChange>) {
        match change {
            Some(CapacityChange::BecameShort { ratio }) => tracing::info!(
                swarm = %self.id,
                ratio = format_args!("{ratio:.2}"),
                "peer transfers run slower than the stream plays: with an idle uplink, this node \
                 fetches new segments from the origin at once and passes them on"
            ),
            Some(CapacityChange::Recovered { ratio }) => tracing::info!(
                swarm = %self.id,
                ratio = format_args!("{ratio:.2}"),
                "peer transfers keep up with the stream again"
            ),
            None => {}
        }
    }

    /// Keeps `task`, which reads neighbour `peer`'s `haves`, to stop it when the neighbour is
    /// dropped; stops it at once when the neighbour is already gone.
    pub fn follow(&self, peer: &PeerId, task: AbortHandle) {
        // Lock order: the state, then the followers.
        let st = self.lock();
        if !st.neighbours.contains_key(peer) {
            task.abort();
            return;
        }
        if let Some(old) = lock(&self.followers).insert(peer.clone(), task) {
            old.abort();
        }
    }

    /// Stops the task following `peer` (its `haves` stream ends).
    pub fn stop_following(&self, peer: &PeerId) {
        if let Some(t) = lock(&self.followers).remove(peer) {
            t.abort();
        }
    }

    /// Stops every task following a neighbour.
    pub fn stop_following_all(&self) {
        for (_, t) in lock(&self.followers).drain() {
            t.abort();
        }
    }

    /// Bans `peer` for the session, drops it and stops following it.
    pub fn ban(&self, peer: &PeerId) {
        self.lock().ban(peer);
        self.stop_following(peer);
    }

    /// Takes the byte counts not yet reported.
    pub fn take_unreported(&self) -> (u64, u64) {
        (
            self.unreported_cdn.swap(0, Ordering::Relaxed),
            self.unreported_p2p.swap(0, Ordering::Relaxed),
        )
    }

    /// Puts back counts a failed announce could not report.
    pub fn restore_unreported(&self, cdn: u64, p2p: u64) {
        self.unreported_cdn.fetch_add(cdn, Ordering::Relaxed);
        self.unreported_p2p.fetch_add(p2p, Ordering::Relaxed);
    }
}
