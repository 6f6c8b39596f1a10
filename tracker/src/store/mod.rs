//! Swarm membership behind one trait, with an in-memory and a Redis (single server or
//! Redis Cluster) implementation.

mod memory;
mod observed;
mod redis;

pub use self::memory::MemoryStore;
pub use self::observed::Observed;
pub use self::redis::RedisStore;

use shoal_proto::{AnnounceRequest, LeaveRequest, Neighbour, PeerId, SwarmId};
use std::fmt;
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
    pub neighbours: Neighbours,
}

/// Neighbours sampled by a store, copied into one buffer: building the list and writing the
/// answer from it costs no allocation per neighbour. Each record is a peer id followed by
/// [`pack_info`]'s output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Neighbours {
    buf: String,
    /// Per record: where its id ends and where the record ends, in `buf`.
    ends: Vec<(u32, u32)>,
}

/// One neighbour of a [`Neighbours`] list, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighbourRef<'a> {
    /// Its peer id (validated when it joined).
    pub peer_id: &'a str,
    /// Hex SHA-256 of its TLS certificate, or empty.
    pub fingerprint: &'a str,
    /// Its addresses, space-separated.
    addrs: &'a str,
}

impl<'a> NeighbourRef<'a> {
    /// Its addresses, in the order it announced them.
    pub fn addrs(&self) -> impl Iterator<Item = &'a str> + Clone + use<'a> {
        self.addrs.split(' ').filter(|a| !a.is_empty())
    }
}

impl Neighbours {
    /// An empty list with room for `n` records of `bytes` in all.
    pub(crate) fn with_capacity(n: usize, bytes: usize) -> Self {
        Self {
            buf: String::with_capacity(bytes),
            ends: Vec::with_capacity(n),
        }
    }

    /// Appends a peer id (already validated: no spaces) and its packed info.
    pub(crate) fn push(&mut self, id: &str, info: &str) {
        self.buf.push_str(id);
        let id_end = self.buf.len();
        self.buf.push_str(info);
        // Ids are at most 64 bytes and infos a few hundred: a u32 offset never overflows
        // for the at most MAX_NUMWANT records of one list.
        self.ends.push((id_end as u32, self.buf.len() as u32));
    }

    /// How many neighbours.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The neighbours, in sampling order.
    pub fn iter(&self) -> impl Iterator<Item = NeighbourRef<'_>> + Clone {
        let mut start = 0;
        self.ends.iter().map(move |&(id_end, end)| {
            let (id_end, end) = (id_end as usize, end as usize);
            let info = &self.buf[id_end..end];
            let (fingerprint, addrs) = info.split_once(' ').unwrap_or((info, ""));
            let n = NeighbourRef {
                peer_id: &self.buf[start..id_end],
                fingerprint,
                addrs,
            };
            start = end;
            n
        })
    }

    /// The list as wire types (tests and tools; the API writes JSON from [`Self::iter`]).
    pub fn to_vec(&self) -> Vec<Neighbour> {
        self.iter()
            .filter_map(|n| {
                Some(Neighbour {
                    peer_id: PeerId::new(n.peer_id).ok()?,
                    addrs: n.addrs().map(str::to_owned).collect(),
                    fingerprint: n.fingerprint.to_owned(),
                })
            })
            .collect()
    }
}

impl fmt::Debug for Neighbours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
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

impl StoreError {
    /// For a failure of the store itself (not a refusal), a low-cardinality label of what
    /// failed: `unreachable` (no connection, a node down, a cluster without a master for the
    /// slot), `timeout`, `script` (a Lua script failed), `data` (keys this tracker did not
    /// write) or `other`. `None` for refusals (conflict, key mismatch, not a member, banned).
    pub fn failure_kind(&self) -> Option<&'static str> {
        use ::redis::{ErrorKind, ServerErrorKind};
        match self {
            Self::Conflict | Self::KeyMismatch | Self::NotMember | Self::Banned => None,
            Self::Corrupt(_) => Some("data"),
            Self::Redis(e) => Some(if e.is_timeout() {
                "timeout"
            } else if e.is_io_error()
                || e.is_connection_dropped()
                || e.is_connection_refusal()
                || matches!(
                    e.kind(),
                    ErrorKind::Server(
                        ServerErrorKind::ClusterDown
                            | ServerErrorKind::MasterDown
                            | ServerErrorKind::TryAgain
                            | ServerErrorKind::BusyLoading
                            | ServerErrorKind::ReadOnly
                    )
                )
            {
                "unreachable"
            } else if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
                || e.to_string().contains("script")
            {
                "script"
            } else {
                "other"
            }),
        }
    }
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

    /// Succeeds when the store answers at all (readiness); cheap, unlike [`Store::counts`].
    fn ready(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

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
pub(crate) fn pack_info(fingerprint: &str, addrs: &[String]) -> String {
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

/// True when `info` is what [`pack_info`] makes of `fingerprint` and `addrs`, without
/// building it.
fn info_is(info: &str, fingerprint: &str, addrs: &[String]) -> bool {
    let Some(mut rest) = info.strip_prefix(fingerprint) else {
        return false;
    };
    for a in addrs {
        match rest
            .strip_prefix(' ')
            .and_then(|r| r.strip_prefix(a.as_str()))
        {
            Some(r) => rest = r,
            None => return false,
        }
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_neighbours_read_back_as_pushed() {
        let cases: [(&str, &str, Vec<String>); 4] = [
            ("a", "", vec![]),
            ("b.2", "ab12", vec![]),
            ("c_3", "", vec!["1.2.3.4:5".to_string()]),
            (
                "d-4",
                "ff",
                vec!["[::1]:9".to_string(), "h.example:1".to_string()],
            ),
        ];
        let mut list = Neighbours::with_capacity(1, 0);
        for (id, fp, addrs) in &cases {
            let info = pack_info(fp, addrs);
            assert!(info_is(&info, fp, addrs), "{info:?}");
            assert!(!info_is(&info, "0", addrs) || fp.starts_with('0'));
            assert!(!info_is(
                &info,
                fp,
                &[addrs.clone(), vec!["x:1".into()]].concat()
            ));
            list.push(id, &info);
        }
        assert_eq!(list.len(), cases.len());
        let back: Vec<_> = list
            .iter()
            .map(|n| {
                let addrs: Vec<String> = n.addrs().map(str::to_owned).collect();
                (n.peer_id, n.fingerprint, addrs)
            })
            .collect();
        assert_eq!(back, cases);
        assert_eq!(list.to_vec()[3].addrs, cases[3].2);
    }

    #[test]
    fn an_address_that_is_a_prefix_of_the_stored_one_is_a_change() {
        let info = pack_info("", &["1.2.3.4:56".to_string()]);
        assert!(!info_is(&info, "", &["1.2.3.4:5".to_string()]));
        assert!(!info_is(&info, "", &[]));
    }
}
