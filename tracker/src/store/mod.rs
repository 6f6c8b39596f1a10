//! Swarm membership behind one trait, with an in-memory and a Redis implementation.

mod memory;
mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::RedisStore;

use shoal_proto::{AnnounceRequest, LeaveRequest, Neighbour, PeerId, SwarmId};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future, so that [`Store`] can be used as `dyn Store`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What a successful announce yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The secret the peer must present from now on (unchanged on a refresh).
    pub peer_key: String,
    /// A random sample of other live peers of the swarm, at most `numwant`.
    pub neighbours: Vec<Neighbour>,
}

/// Live peers and swarms, as far as this store can tell cheaply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Peers that announced within two intervals.
    pub peers: u64,
    /// Swarms with at least one such peer.
    pub swarms: u64,
    /// Bans in force, over all swarms.
    pub bans: u64,
}

/// When reports turn into a ban.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanRule {
    /// Distinct live reporters within two intervals that ban an offender.
    pub threshold: u32,
    /// How long a ban lasts.
    pub duration: Duration,
}

/// What a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reported {
    /// Distinct peers that reported the offender within the last two intervals, this one
    /// included (0 once the offender is banned: the count starts over after the ban).
    pub reporters: u64,
    /// Whether this report banned the offender.
    pub banned: bool,
}

/// Why a store refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The peer id is live in another swarm; the client must use one peer id per swarm.
    #[error("peer_id is already in use in another swarm: use one peer id per swarm")]
    Conflict,
    /// The peer id is live and the request did not carry its `peer_key`.
    #[error("peer_key does not match the key handed out on this peer id's first announce")]
    KeyMismatch,
    /// Leave for a peer that is not in the swarm (never joined, already left, or expired).
    #[error("peer is not in this swarm (it never joined, already left, or expired)")]
    NotMember,
    /// Enough distinct peers reported this peer that it is banned from the swarm for now.
    #[error("this peer id is banned from this swarm after reports from other peers; it may return once the ban expires")]
    Banned,
    /// Redis failed or could not be reached; retry later.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis held data this tracker did not write (another program shares the keys).
    #[error("unexpected data in redis: {0}")]
    Corrupt(String),
}

/// Swarm membership. Every method is safe to call concurrently.
pub trait Store: Send + Sync + 'static {
    /// Joins or refreshes `req.peer_id` in `req.swarm_id` (the request is already validated)
    /// and samples up to `req.numwant` other live peers.
    fn announce<'a>(&'a self, req: &'a AnnounceRequest) -> StoreFuture<'a, Joined>;

    /// Removes the peer now, if `req.peer_key` is its key.
    fn leave<'a>(&'a self, req: &'a LeaveRequest) -> StoreFuture<'a, ()>;

    /// Drops peers silent for more than two intervals and swarms left empty; returns how many
    /// peers it dropped. Call it periodically (every fraction of an interval).
    fn sweep(&self) -> StoreFuture<'_, u64>;

    /// Live peers, swarms and bans.
    fn counts(&self) -> StoreFuture<'_, Counts>;

    /// Succeeds when `peer` is a live member of `swarm` and `key` is its peer key.
    fn check_member<'a>(
        &'a self,
        swarm: &'a SwarmId,
        peer: &'a PeerId,
        key: &'a str,
    ) -> StoreFuture<'a, ()>;

    /// Records that `reporter` (a checked live member) reported `offender` in `swarm`. When
    /// `rule.threshold` distinct reporters did so within two intervals, the offender is
    /// removed from the swarm and its announces there are refused for `rule.duration`.
    fn report<'a>(
        &'a self,
        swarm: &'a SwarmId,
        reporter: &'a PeerId,
        offender: &'a PeerId,
        rule: BanRule,
    ) -> StoreFuture<'a, Reported>;
}

/// A fresh random peer key: 128 bits as hex.
fn new_peer_key() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Packs what neighbours need to know about a peer into one string: the fingerprint, then the
/// addresses, space-separated (neither may contain spaces). An empty fingerprint and no
/// addresses pack to "" which allocates nothing.
fn pack_info(fingerprint: &str, addrs: &[String]) -> String {
    if fingerprint.is_empty() && addrs.is_empty() {
        return String::new();
    }
    let mut s =
        String::with_capacity(fingerprint.len() + addrs.iter().map(|a| a.len() + 1).sum::<usize>());
    s.push_str(fingerprint);
    for a in addrs {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Inverse of [`pack_info`]: (fingerprint, addresses).
fn unpack_info(info: &str) -> (String, Vec<String>) {
    let mut parts = info.split(' ');
    let fingerprint = parts.next().unwrap_or_default().to_owned();
    (fingerprint, parts.map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_packs_and_unpacks() {
        for (fp, addrs) in [
            ("", vec![]),
            ("ab12", vec![]),
            ("", vec!["1.2.3.4:5".to_string()]),
            ("ff", vec!["[::1]:9".to_string(), "h.example:1".to_string()]),
        ] {
            let packed = pack_info(fp, &addrs);
            assert_eq!(unpack_info(&packed), (fp.to_string(), addrs));
        }
    }
}
