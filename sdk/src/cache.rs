//! Byte-budgeted segment store shared by the scheduler (which fills it with verified bytes) and
//! the peer server (which serves from it and streams its `have`/`lost` events to neighbours).
//!
//! Built on `moka::sync::Cache` with a byte weigher and the **LRU** policy: moka's default
//! TinyLFU admission would refuse a fresh live segment in favour of older, more-hit ones, while
//! the swarm needs the newest live segments most. Under LRU the segments nobody has touched for
//! longest — old live segments — go first.
//!
//! A per-swarm index (swarm → keys) is kept in step with inserts and evictions so that
//! [`SegmentCache::keys`], called for every `haves` snapshot, costs O(segments of that swarm)
//! rather than a walk over the whole cache; the price is one extra copy of each key.

pub mod partial;

use bytes::Bytes;
use dashmap::DashMap;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
pub use partial::{Partial, PartialReader, RelayAborted};
use shoal_proto::{SegmentKey, SwarmId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Default budget (`--cache-size`): 256 MiB.
pub const DEFAULT_BUDGET_BYTES: u64 = 256 * 1024 * 1024;

/// Bookkeeping bytes charged per entry on top of the segment and its ids, so that many tiny
/// segments cannot hold far more memory than the budget says.
const ENTRY_OVERHEAD: u64 = 128;

/// Events buffered per subscriber before it is told it lagged.
const EVENT_CAPACITY: usize = 4096;

/// What happened to a segment in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheEventKind {
    /// The segment is now held.
    Have,
    /// The segment was evicted and is no longer held.
    Lost,
}

/// A change to the set of held segments, as announced to neighbours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEvent {
    /// Swarm the segment belongs to.
    pub swarm: SwarmId,
    /// The segment.
    pub key: SegmentKey,
    /// Held or dropped.
    pub kind: CacheEventKind,
}

type Key = (SwarmId, SegmentKey);

/// A cached segment; `generation` tells an eviction of an old copy from a newer insert of the
/// same key, so a late eviction cannot erase the newer copy from the index.
#[derive(Clone)]
struct Stored {
    bytes: Bytes,
    generation: u64,
}

/// swarm → (key → generation of the copy held).
type Index = DashMap<SwarmId, HashMap<SegmentKey, u64>>;

/// The node's segment store. Cheap to clone: clones share the same store.
#[derive(Clone)]
pub struct SegmentCache {
    inner: moka::sync::Cache<Key, Stored>,
    index: Arc<Index>,
    events: broadcast::Sender<CacheEvent>,
    generation: Arc<AtomicU64>,
    budget: u64,
    /// Segments arriving from peers right now, served onward as they arrive.
    partials: Arc<DashMap<Key, Arc<Partial>>>,
}

impl std::fmt::Debug for SegmentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentCache")
            .field("budget", &self.budget)
            .field("entries", &self.inner.entry_count())
            .finish()
    }
}

fn weight(key: &Key, bytes: &Bytes) -> u64 {
    bytes.len() as u64 + key.0.as_str().len() as u64 + key.1.as_str().len() as u64 + ENTRY_OVERHEAD
}

impl SegmentCache {
    /// A store holding at most `budget_bytes` (segment bytes plus a small per-entry overhead).
    pub fn new(budget_bytes: u64) -> Self {
        let index: Arc<Index> = Arc::default();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let listener_index = Arc::clone(&index);
        let listener_events = events.clone();
        let inner = moka::sync::Cache::builder()
            .max_capacity(budget_bytes)
            .eviction_policy(EvictionPolicy::lru())
            .weigher(|k: &Key, v: &Stored| u32::try_from(weight(k, &v.bytes)).unwrap_or(u32::MAX))
            .eviction_listener(move |key: Arc<Key>, value: Stored, cause| {
                if cause == RemovalCause::Replaced {
                    return;
                }
                let (swarm, segment) = &*key;
                if forget(&listener_index, swarm, segment, value.generation) {
                    // No receivers is fine: nobody is listening yet.
                    let _ = listener_events.send(CacheEvent {
                        swarm: swarm.clone(),
                        key: segment.clone(),
                        kind: CacheEventKind::Lost,
                    });
                }
            })
            .build();
        Self {
            inner,
            index,
            events,
            generation: Arc::default(),
            budget: budget_bytes,
            partials: Arc::default(),
        }
    }

    /// Starts receiving `key` (`len` bytes) so that neighbours can fetch it while it arrives,
    /// and announces `Have` for it. Returns `None` if it is held or already arriving. The
    /// writer must end with [`PartialWriter::finish`] after the verified bytes were
    /// [inserted](Self::insert); dropped without it, readers abort and `Lost` is announced.
    pub fn begin_partial(
        &self,
        swarm: &SwarmId,
        key: &SegmentKey,
        len: u64,
    ) -> Option<PartialWriter> {
        let k = (swarm.clone(), key.clone());
        if self.inner.contains_key(&k) || len > self.budget {
            return None;
        }
        let partial = Partial::new(len);
        match self.partials.entry(k.clone()) {
            dashmap::mapref::entry::Entry::Occupied(_) => return None,
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(Arc::clone(&partial));
            }
        }
        let _ = self.events.send(CacheEvent {
            swarm: swarm.clone(),
            key: key.clone(),
            kind: CacheEventKind::Have,
        });
        Some(PartialWriter {
            partial,
            key: k,
            cache: self.clone(),
            done: false,
        })
    }

    /// A segment arriving now, if any, to relay.
    pub fn partial(&self, swarm: &SwarmId, key: &SegmentKey) -> Option<Arc<Partial>> {
        self.partials
            .get(&(swarm.clone(), key.clone()))
            .map(|p| Arc::clone(&p))
    }

    /// Stores a segment and announces `Have` to subscribers. Only bytes whose digest was
    /// verified may be inserted (the caller's job). A segment larger than the whole budget is
    /// not stored; inserting a key already held only refreshes its recency.
    pub fn insert(&self, swarm: &SwarmId, key: &SegmentKey, bytes: Bytes) {
        let k = (swarm.clone(), key.clone());
        if weight(&k, &bytes) > self.budget || weight(&k, &bytes) > u64::from(u32::MAX) {
            tracing::debug!(%swarm, %key, len = bytes.len(), "segment larger than the cache budget; not cached");
            return;
        }
        if self.inner.get(&k).is_some() {
            return;
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        self.index
            .entry(swarm.clone())
            .or_default()
            .insert(key.clone(), generation);
        self.inner.insert(k, Stored { bytes, generation });
        let _ = self.events.send(CacheEvent {
            swarm: swarm.clone(),
            key: key.clone(),
            kind: CacheEventKind::Have,
        });
        // Evict now rather than lazily, so the budget holds and `lost` lines go out promptly.
        // Inserts happen a few times per second at most; this is cheap at that rate.
        self.inner.run_pending_tasks();
    }

    /// The segment's bytes, if held. Counts as a use for eviction order.
    pub fn get(&self, swarm: &SwarmId, key: &SegmentKey) -> Option<Bytes> {
        self.inner
            .get(&(swarm.clone(), key.clone()))
            .map(|s| s.bytes)
    }

    /// Whether the segment is held. Does not count as a use.
    pub fn contains(&self, swarm: &SwarmId, key: &SegmentKey) -> bool {
        self.inner.contains_key(&(swarm.clone(), key.clone()))
    }

    /// Every segment held for `swarm`, in no particular order (for a `haves` snapshot).
    pub fn keys(&self, swarm: &SwarmId) -> Vec<SegmentKey> {
        self.inner.run_pending_tasks();
        self.index
            .get(swarm)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A receiver of every later `Have`/`Lost`. A receiver that falls more than a few
    /// thousand events behind gets `RecvError::Lagged` and should resynchronise from
    /// [`SegmentCache::keys`].
    pub fn subscribe(&self) -> broadcast::Receiver<CacheEvent> {
        self.events.subscribe()
    }

    /// Bytes currently charged against the budget (exact: pending evictions are applied first).
    pub fn used_bytes(&self) -> u64 {
        self.inner.run_pending_tasks();
        self.inner.weighted_size()
    }

    /// The budget given at construction.
    pub fn budget_bytes(&self) -> u64 {
        self.budget
    }
}

/// The receiving end of a [`Partial`]; see [`SegmentCache::begin_partial`].
#[derive(Debug)]
pub struct PartialWriter {
    partial: Arc<Partial>,
    key: Key,
    cache: SegmentCache,
    done: bool,
}

impl PartialWriter {
    /// The segment's full length.
    pub fn len(&self) -> u64 {
        self.partial.len()
    }

    /// Whether the segment is empty (zero-length).
    pub fn is_empty(&self) -> bool {
        self.partial.is_empty()
    }

    /// Appends received bytes.
    pub fn push(&self, chunk: Bytes) {
        self.partial.push(chunk);
    }

    /// The bytes were verified and inserted in the cache: readers may complete.
    pub fn finish(mut self) {
        self.done = true;
        self.partial.verified();
        self.cache.partials.remove(&self.key);
    }
}

impl Drop for PartialWriter {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.partial.failed();
        self.cache.partials.remove(&self.key);
        if !self.cache.inner.contains_key(&self.key) {
            let _ = self.cache.events.send(CacheEvent {
                swarm: self.key.0.clone(),
                key: self.key.1.clone(),
                kind: CacheEventKind::Lost,
            });
        }
    }
}

/// Drops `key` from the index if the evicted copy is the one indexed. Returns whether it was.
fn forget(index: &Index, swarm: &SwarmId, key: &SegmentKey, generation: u64) -> bool {
    let removed = match index.get_mut(swarm) {
        Some(mut keys) if keys.get(key) == Some(&generation) => {
            keys.remove(key);
            true
        }
        _ => false,
    };
    // Separate call: removing while holding the guard above would deadlock.
    index.remove_if(swarm, |_, keys| keys.is_empty());
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swarm(s: &str) -> SwarmId {
        SwarmId::new(s).unwrap()
    }
    fn key(s: &str) -> SegmentKey {
        SegmentKey::new(s).unwrap()
    }
    fn seg(len: usize) -> Bytes {
        Bytes::from(vec![7u8; len])
    }

    fn drain(rx: &mut broadcast::Receiver<CacheEvent>) -> Vec<(String, CacheEventKind)> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push((e.key.to_string(), e.kind));
        }
        out
    }

    #[test]
    fn insert_get_contains_keys() {
        let c = SegmentCache::new(1 << 20);
        let s = swarm("a/live.m3u8");
        c.insert(&s, &key("seg/1.ts"), seg(10));
        assert_eq!(c.get(&s, &key("seg/1.ts")), Some(seg(10)));
        assert!(c.contains(&s, &key("seg/1.ts")));
        assert!(!c.contains(&swarm("other"), &key("seg/1.ts")));
        assert_eq!(c.keys(&s), vec![key("seg/1.ts")]);
        assert!(c.keys(&swarm("other")).is_empty());
        assert!(c.used_bytes() >= 10);
    }

    #[test]
    fn oldest_unused_segments_are_evicted_first_and_announced_lost() {
        // Room for three 1000-byte segments with their overhead, not four.
        let c = SegmentCache::new(3 * 1200);
        let s = swarm("live");
        let mut rx = c.subscribe();
        for i in 1..=3 {
            c.insert(&s, &key(&format!("{i}")), seg(1000));
        }
        // Touch 1 so that 2 is now the least recently used.
        assert!(c.get(&s, &key("1")).is_some());
        c.insert(&s, &key("4"), seg(1000));
        assert!(c.used_bytes() <= c.budget_bytes());
        assert!(!c.contains(&s, &key("2")));
        for k in ["1", "3", "4"] {
            assert!(c.contains(&s, &key(k)), "{k} should still be held");
        }
        let mut keys: Vec<_> = c.keys(&s).iter().map(|k| k.to_string()).collect();
        keys.sort();
        assert_eq!(keys, ["1", "3", "4"]);
        use CacheEventKind::*;
        let events = drain(&mut rx);
        assert_eq!(
            events,
            [
                ("1".into(), Have),
                ("2".into(), Have),
                ("3".into(), Have),
                ("4".into(), Have),
                ("2".into(), Lost)
            ]
        );
    }

    #[test]
    fn fresh_live_segments_are_admitted_when_full() {
        // TinyLFU would reject a never-seen key in favour of hot ones; LRU must admit it.
        let c = SegmentCache::new(2 * 1200);
        let s = swarm("live");
        c.insert(&s, &key("old"), seg(1000));
        for _ in 0..50 {
            c.get(&s, &key("old"));
        }
        c.insert(&s, &key("mid"), seg(1000));
        c.insert(&s, &key("new"), seg(1000));
        assert!(c.contains(&s, &key("new")));
        assert!(c.contains(&s, &key("mid")));
    }

    #[test]
    fn segment_larger_than_budget_is_not_cached() {
        let c = SegmentCache::new(1000);
        let s = swarm("live");
        let mut rx = c.subscribe();
        c.insert(&s, &key("big"), seg(2000));
        assert!(!c.contains(&s, &key("big")));
        assert!(drain(&mut rx).is_empty());
        assert_eq!(c.used_bytes(), 0);
    }

    #[test]
    fn reinsert_is_not_announced_twice() {
        let c = SegmentCache::new(1 << 20);
        let s = swarm("vod");
        let mut rx = c.subscribe();
        c.insert(&s, &key("k"), seg(5));
        c.insert(&s, &key("k"), seg(5));
        assert_eq!(drain(&mut rx).len(), 1);
        assert_eq!(c.keys(&s).len(), 1);
    }

    #[test]
    fn swarms_are_kept_apart() {
        let c = SegmentCache::new(1 << 20);
        c.insert(&swarm("a"), &key("1"), seg(1));
        c.insert(&swarm("b"), &key("1"), Bytes::from_static(b"b"));
        assert_eq!(c.get(&swarm("a"), &key("1")), Some(seg(1)));
        assert_eq!(
            c.get(&swarm("b"), &key("1")),
            Some(Bytes::from_static(b"b"))
        );
    }
}
