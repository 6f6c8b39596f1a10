//! The in-memory store: one process, nothing to install.
//!
//! Layout, chosen to keep a live peer well under 200 bytes: swarms in a `DashMap` keyed by swarm id,
//! each holding an `IndexMap` of its members (so a random neighbour is one random index, with
//! no copy of the swarm), plus a map from a peer id's hash to its swarm id's hash that enforces
//! one swarm per peer id. Lock order: a swarm's shard, then an owner's shard, never the reverse.

use super::{
    info_is, pack_info, BanRule, Counts, Joined, Neighbours, Reported, Store, StoreError,
    StoreFuture,
};
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use indexmap::map::MutableKeys;
use indexmap::{Equivalent, IndexMap};
use shoal_proto::{AnnounceRequest, LeaveRequest, PeerId, SwarmId, MAX_PEER_ID_LEN};
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Swarms and their members in this process's memory.
#[derive(Debug)]
pub struct MemoryStore {
    /// A peer silent for longer than this (two intervals) is dead, in tenths of a second.
    ttl: u32,
    /// Zero of the tenth-of-a-second clock members are stamped with.
    epoch: Instant,
    swarms: DashMap<Box<str>, Swarm>,
    /// Hash of a live peer id -> hash of the swarm id it belongs to. Hashes, not ids, to save
    /// memory; a 64-bit collision between two live peer ids would only make one of them see a
    /// spurious 409, and the keyed hasher makes that unpredictable to an attacker.
    owners: DashMap<u64, u64>,
    hasher: RandomState,
    peers: AtomicU64,
    /// (swarm hash, offender hash) -> (reporter hash, when it reported), while under threshold.
    reports: DashMap<(u64, u64), Vec<(u64, u32)>>,
    /// (swarm hash, peer hash) -> when its ban ends.
    bans: DashMap<(u64, u64), u32>,
}

#[derive(Debug, Default)]
struct Swarm {
    members: IndexMap<Packed, Member>,
}

/// A member's id, fingerprint and addresses in one allocation: one character giving the id's
/// length (`'0' + len`, ids are at most 64 bytes), the id, then `pack_info`'s output. Hashed
/// and compared by the id alone; the length prefix makes every access O(1).
#[derive(Debug)]
struct Packed(Box<str>);

impl Packed {
    fn new(id: &str, info: &str) -> Self {
        let len = char::from(b'0' + id.len().min(MAX_PEER_ID_LEN) as u8);
        let mut s = String::with_capacity(1 + id.len() + info.len());
        s.push(len);
        s.push_str(id);
        s.push_str(info);
        Self(s.into_boxed_str())
    }

    fn id_end(&self) -> usize {
        1 + usize::from(self.0.as_bytes()[0] - b'0')
    }

    fn id(&self) -> &str {
        &self.0[1..self.id_end()]
    }

    fn info(&self) -> &str {
        &self.0[self.id_end()..]
    }
}

impl Hash for Packed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id().hash(state)
    }
}

impl PartialEq for Packed {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for Packed {}

/// Looks a member up by its id.
#[derive(Hash)]
struct Id<'a>(&'a str);

impl Equivalent<Packed> for Id<'_> {
    fn equivalent(&self, key: &Packed) -> bool {
        self.0 == key.id()
    }
}

#[derive(Debug)]
struct Member {
    key: u64,
    /// Tenths of a second since the store's epoch: 13 years fit in a u32.
    last_seen: u32,
}

impl MemoryStore {
    /// A store where peers silent for more than `2 * interval` expire.
    pub fn new(interval: Duration) -> Self {
        Self {
            ttl: u32::try_from(interval.as_millis() / 50).unwrap_or(u32::MAX),
            epoch: Instant::now(),
            swarms: DashMap::new(),
            owners: DashMap::new(),
            hasher: RandomState::new(),
            peers: AtomicU64::new(0),
            reports: DashMap::new(),
            bans: DashMap::new(),
        }
    }

    fn now(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_millis() / 100).unwrap_or(u32::MAX)
    }

    fn live(&self, m: &Member, now: u32) -> bool {
        now.saturating_sub(m.last_seen) <= self.ttl
    }

    fn announce_at(&self, req: &AnnounceRequest, now: u32) -> Result<Joined, StoreError> {
        let peer = req.peer_id.as_str();
        let swarm_id = req.swarm_id.as_str();
        let ph = self.hasher.hash_one(peer);
        let sh = self.hasher.hash_one(swarm_id);
        if self.bans.get(&(sh, ph)).is_some_and(|until| *until > now) {
            return Err(StoreError::Banned);
        }
        // Cheap check first so that a conflicting request does not create a swarm.
        if self.owners.get(&ph).is_some_and(|o| *o != sh) {
            return Err(StoreError::Conflict);
        }
        let presented = req
            .peer_key
            .as_deref()
            .and_then(|k| u64::from_str_radix(k, 16).ok());
        let mut swarm = match self.swarms.get_mut(swarm_id) {
            Some(s) => s,
            None => self.swarms.entry(swarm_id.into()).or_default(),
        };
        let key = match swarm.members.get_full_mut2(&Id(peer)) {
            Some((_, packed, m)) => {
                if self.live(m, now) {
                    if presented != Some(m.key) {
                        return Err(StoreError::KeyMismatch);
                    }
                } else {
                    // Expired but not swept yet: the id is free again, like after a sweep.
                    m.key = rand::random();
                }
                m.last_seen = now;
                if !info_is(packed.info(), &req.fingerprint, &req.addrs) {
                    *packed = Packed::new(peer, &pack_info(&req.fingerprint, &req.addrs));
                }
                m.key
            }
            None => {
                match self.owners.entry(ph) {
                    Entry::Occupied(o) if *o.get() != sh => {
                        let empty = swarm.members.is_empty();
                        drop(o);
                        drop(swarm);
                        if empty {
                            self.swarms.remove_if(swarm_id, |_, s| s.members.is_empty());
                        }
                        return Err(StoreError::Conflict);
                    }
                    Entry::Occupied(_) => {}
                    Entry::Vacant(v) => {
                        v.insert(sh);
                    }
                }
                let key = rand::random::<u64>();
                swarm.members.insert(
                    Packed::new(peer, &pack_info(&req.fingerprint, &req.addrs)),
                    Member {
                        key,
                        last_seen: now,
                    },
                );
                self.peers.fetch_add(1, Ordering::Relaxed);
                key
            }
        };
        let neighbours = self.sample(&swarm, peer, req.numwant as usize, now);
        Ok(Joined {
            peer_key: format!("{key:016x}"),
            neighbours,
        })
    }

    /// Up to `want` random live members other than `me`, without copying the swarm. Ids were
    /// validated when their peers joined, so records are copied as they are.
    fn sample(&self, swarm: &Swarm, me: &str, want: usize, now: u32) -> Neighbours {
        let Some(me_at) = swarm.members.get_index_of(&Id(me)) else {
            return Neighbours::default();
        };
        let others = swarm.members.len() - 1;
        let amount = want.min(others);
        let picks = rand::seq::index::sample(&mut rand::rng(), others, amount);
        // Random members are cache misses. Each pass below makes only independent reads, so
        // the CPU overlaps their misses instead of waiting for one after the other: first
        // the entries (liveness), then each record's first byte (where its id ends), and only
        // then the copies.
        let live: Vec<&Packed> = picks
            .into_iter()
            .filter_map(|i| {
                let at = if i >= me_at { i + 1 } else { i };
                let (packed, m) = swarm.members.get_index(at)?;
                self.live(m, now).then_some(packed)
            })
            .collect();
        let id_ends: Vec<usize> = live.iter().map(|p| p.id_end()).collect();
        // The boxes' lengths live in the entries already read.
        let bytes = live.iter().map(|p| p.0.len()).sum();
        let mut list = Neighbours::with_capacity(live.len(), bytes);
        for (packed, id_end) in live.iter().zip(id_ends) {
            list.push(&packed.0[1..id_end], &packed.0[id_end..]);
        }
        list
    }

    fn leave_now(&self, req: &LeaveRequest, now: u32) -> Result<(), StoreError> {
        self.check_member_at(&req.swarm_id, &req.peer_id, &req.peer_key, now)?;
        self.remove_member(req.swarm_id.as_str(), req.peer_id.as_str());
        Ok(())
    }

    fn check_member_at(
        &self,
        swarm: &SwarmId,
        peer: &PeerId,
        key: &str,
        now: u32,
    ) -> Result<(), StoreError> {
        let swarm = self
            .swarms
            .get(swarm.as_str())
            .ok_or(StoreError::NotMember)?;
        let m = swarm
            .members
            .get(&Id(peer.as_str()))
            .filter(|m| self.live(m, now))
            .ok_or(StoreError::NotMember)?;
        if u64::from_str_radix(key, 16).ok() != Some(m.key) {
            return Err(StoreError::KeyMismatch);
        }
        Ok(())
    }

    /// Removes a member (live or not) and frees its id; drops the swarm if it is left empty.
    fn remove_member(&self, swarm_id: &str, peer: &str) {
        let Some(mut swarm) = self.swarms.get_mut(swarm_id) else {
            return;
        };
        if swarm.members.swap_remove(&Id(peer)).is_none() {
            return;
        }
        let sh = self.hasher.hash_one(swarm_id);
        self.owners
            .remove_if(&self.hasher.hash_one(peer), |_, s| *s == sh);
        self.peers.fetch_sub(1, Ordering::Relaxed);
        let empty = swarm.members.is_empty();
        drop(swarm);
        if empty {
            self.swarms.remove_if(swarm_id, |_, s| s.members.is_empty());
        }
    }

    fn report_at(
        &self,
        swarm: &SwarmId,
        reporter: &PeerId,
        offender: &PeerId,
        rule: BanRule,
        now: u32,
    ) -> Reported {
        let at = (
            self.hasher.hash_one(swarm.as_str()),
            self.hasher.hash_one(offender.as_str()),
        );
        let by = self.hasher.hash_one(reporter.as_str());
        let reporters = {
            let mut list = self.reports.entry(at).or_default();
            list.retain(|(_, when)| now.saturating_sub(*when) <= self.ttl);
            match list.iter_mut().find(|(r, _)| *r == by) {
                Some(entry) => entry.1 = now,
                None => list.push((by, now)),
            }
            list.len() as u64
        };
        if reporters < u64::from(rule.threshold) {
            return Reported {
                reporters,
                banned: false,
            };
        }
        self.reports.remove(&at);
        let tenths = u32::try_from(rule.duration.as_millis() / 100).unwrap_or(u32::MAX);
        self.bans.insert(at, now.saturating_add(tenths));
        self.remove_member(swarm.as_str(), offender.as_str());
        Reported {
            reporters,
            banned: true,
        }
    }

    fn sweep_at(&self, now: u32) -> u64 {
        let mut expired = 0u64;
        self.swarms.retain(|swarm_id, swarm| {
            let sh = self.hasher.hash_one(&**swarm_id);
            swarm.members.retain(|peer, m| {
                if self.live(m, now) {
                    return true;
                }
                self.owners
                    .remove_if(&self.hasher.hash_one(peer.id()), |_, s| *s == sh);
                expired += 1;
                false
            });
            // Give memory back after a crowd left, without thrashing on small changes.
            if swarm.members.capacity() > 64 && swarm.members.len() < swarm.members.capacity() / 4 {
                swarm.members.shrink_to_fit();
            }
            !swarm.members.is_empty()
        });
        self.peers.fetch_sub(expired, Ordering::Relaxed);
        self.bans.retain(|_, until| *until > now);
        self.reports.retain(|_, list| {
            list.retain(|(_, when)| now.saturating_sub(*when) <= self.ttl);
            !list.is_empty()
        });
        expired
    }
}

impl Store for MemoryStore {
    fn announce<'a>(&'a self, req: &'a AnnounceRequest) -> StoreFuture<'a, Joined> {
        Box::pin(std::future::ready(self.announce_at(req, self.now())))
    }

    fn leave<'a>(&'a self, req: &'a LeaveRequest) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(self.leave_now(req, self.now())))
    }

    fn sweep(&self) -> StoreFuture<'_, u64> {
        Box::pin(std::future::ready(Ok(self.sweep_at(self.now()))))
    }

    fn counts(&self) -> StoreFuture<'_, Counts> {
        Box::pin(std::future::ready(Ok(Counts {
            peers: self.peers.load(Ordering::Relaxed),
            swarms: self.swarms.len() as u64,
            bans: self.bans.len() as u64,
        })))
    }

    fn check_member<'a>(
        &'a self,
        swarm: &'a SwarmId,
        peer: &'a PeerId,
        key: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(std::future::ready(self.check_member_at(
            swarm,
            peer,
            key,
            self.now(),
        )))
    }

    fn report<'a>(
        &'a self,
        swarm: &'a SwarmId,
        reporter: &'a PeerId,
        offender: &'a PeerId,
        rule: BanRule,
    ) -> StoreFuture<'a, Reported> {
        Box::pin(std::future::ready(Ok(self.report_at(
            swarm,
            reporter,
            offender,
            rule,
            self.now(),
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{ByteCounters, SwarmId, PROTOCOL_VERSION};

    fn announce(peer: &str, swarm: &str, key: Option<&str>, numwant: u32) -> AnnounceRequest {
        AnnounceRequest {
            proto: PROTOCOL_VERSION,
            peer_id: PeerId::new(peer).unwrap(),
            swarm_id: SwarmId::new(swarm).unwrap(),
            addrs: vec![format!("10.0.0.1:{}", peer.len())],
            fingerprint: "ab".into(),
            counters: ByteCounters::default(),
            connections: Default::default(),
            numwant,
            client_version: "test".into(),
            peer_key: key.map(str::to_owned),
            token: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peers_expire_after_two_intervals_and_their_swarm_goes() {
        let store = MemoryStore::new(Duration::from_secs(10));
        let a = store.announce(&announce("a", "s", None, 5)).await.unwrap();
        store.announce(&announce("b", "s", None, 5)).await.unwrap();
        tokio::time::advance(Duration::from_secs(15)).await;
        // a refreshes, b stays silent.
        store
            .announce(&announce("a", "s", Some(&a.peer_key), 5))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            store.sweep().await.unwrap(),
            1,
            "b was silent for 21s > 20s"
        );
        let c = store.counts().await.unwrap();
        assert_eq!((c.peers, c.swarms), (1, 1));
        // a last announced at 15s; now is 21s.
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(
            store.sweep().await.unwrap(),
            0,
            "a was silent for exactly 20s"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(store.sweep().await.unwrap(), 1);
        assert_eq!(store.counts().await.unwrap(), Counts::default());
        // The id is free again, in any swarm.
        store
            .announce(&announce("a", "other", None, 5))
            .await
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_peer_is_never_a_neighbour_even_before_the_sweep() {
        let store = MemoryStore::new(Duration::from_secs(1));
        store
            .announce(&announce("old", "s", None, 5))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_millis(2100)).await;
        let j = store
            .announce(&announce("new", "s", None, 5))
            .await
            .unwrap();
        assert!(j.neighbours.is_empty(), "{:?}", j.neighbours);
    }

    #[tokio::test]
    async fn sampling_spreads_over_a_large_swarm() {
        let store = MemoryStore::new(Duration::from_secs(20));
        let mut keys = Vec::new();
        for i in 0..1000 {
            let j = store
                .announce(&announce(&format!("p{i}"), "big", None, 0))
                .await
                .unwrap();
            keys.push(j.peer_key);
        }
        let mut seen = std::collections::HashSet::new();
        for (i, key) in keys.iter().enumerate().take(50) {
            let j = store
                .announce(&announce(&format!("p{i}"), "big", Some(key), 20))
                .await
                .unwrap();
            assert_eq!(j.neighbours.len(), 20);
            for n in j.neighbours.to_vec() {
                assert_ne!(n.peer_id.as_str(), format!("p{i}"));
                seen.insert(n.peer_id);
            }
        }
        // 50 asks of 20 out of 999: "first N" would give 20 distinct, random gives ~630.
        assert!(seen.len() > 300, "only {} distinct neighbours", seen.len());
    }
}
