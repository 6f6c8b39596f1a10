//! The Redis store: several tracker instances behind a load balancer share swarms, on one
//! Redis server (`redis://`) or on a Redis Cluster (`redis+cluster://`).
//!
//! Key layout: everything an announce touches lives in its swarm's hash slot, so one Lua
//! script does the whole announce in one round trip, on a single server and on a cluster.
//! - `shoal:swarm:{<swarm id>}:m` sorted set, peer id -> last announce (ms, Redis clock)
//! - `shoal:swarm:{<swarm id>}:i` hash, peer id -> fingerprint and addresses
//! - `shoal:swarm:{<swarm id>}:k` hash, peer id -> `<peer key> <owner refreshed at ms>`
//! - `shoal:swarm:{<swarm id>}:b` sorted set, banned peer id -> end of its ban (ms)
//! - `shoal:swarm:{<swarm id>}:r:<offender>` sorted set, reporter -> time of its report
//! - `shoal:peer:{<peer id>}` string `<swarm id>`: the swarm that last claimed the peer id (its
//!   own slot; read and written only when a peer joins a swarm, see [`RedisStore::claim`])
//! - counts: `shoal:stats:peers`, `shoal:stats:swarms` (id -> last announce) and
//!   `shoal:stats:bans` (`<swarm id>\n<peer id>` -> end of the ban) on a single server; on a
//!   cluster the same three sets once per hash slot, `shoal:stats:{<slot tag>}:p|s|b`, where
//!   the slot tag is a short string that hashes to the swarm's slot.
//!
//! Expired members are pruned by score on every announce to their swarm; a swarm's keys expire
//! two intervals after its last announce, so an abandoned swarm disappears by itself.

use super::{
    new_peer_key, pack_info, BanRule, Counts, Joined, Neighbours, Reported, Store, StoreError,
    StoreFuture,
};
use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::{
    Cmd, ErrorKind, FromRedisValue, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value,
};
use shoal_proto::{AnnounceRequest, LeaveRequest, PeerId, SwarmId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Hash slots of a Redis Cluster.
const SLOTS: usize = 16384;

/// The owner record outlives the peer's membership by this factor of the peer TTL; it is
/// refreshed when half of it has passed (about every fourth TTL), off the announce's path.
const OWNER_TTL_FACTOR: u32 = 8;

/// Joins, refreshes or refuses a member, prunes the dead, samples neighbours.
/// KEYS: members, infos, keys, bans, stats peers, stats swarms.
/// ARGV: peer id, info, numwant, ttl ms, presented key, fresh key ('' when the peer id was not
/// claimed for this swarm yet), swarm id, owner refresh age ms, stats ttl ms.
/// Returns {code, key, owner refresh due, id1, info1, id2, info2, ...}; code 1 key mismatch,
/// 2 ok, 4 banned, 5 not a member yet (claim the id, then call again with a fresh key).
const SWARM_ANNOUNCE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[4])
local peer = ARGV[1]
local ban = redis.call('ZSCORE', KEYS[4], peer)
if ban and tonumber(ban) > now then return {4, '', 0} end
local seen = redis.call('ZSCORE', KEYS[1], peer)
local rec = false
if seen and tonumber(seen) >= now - ttl then rec = redis.call('HGET', KEYS[3], peer) end
local key
local stamp
local due = 0
if rec then
  local sp = string.find(rec, ' ', 1, true)
  if not sp then return redis.error_reply('shoal: malformed key record') end
  key = string.sub(rec, 1, sp - 1)
  if key ~= ARGV[5] then return {1, '', 0} end
  stamp = tonumber(string.sub(rec, sp + 1)) or 0
  if now - stamp > tonumber(ARGV[8]) then due = 1 end
else
  if ARGV[6] == '' then return {5, '', 0} end
  key = ARGV[6]
end
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - ttl - 1, 'LIMIT', 0, 256)
if #dead > 0 then
  redis.call('ZREM', KEYS[1], unpack(dead))
  redis.call('HDEL', KEYS[2], unpack(dead))
  redis.call('HDEL', KEYS[3], unpack(dead))
end
redis.call('ZADD', KEYS[1], now, peer)
redis.call('HSET', KEYS[2], peer, ARGV[2])
if due == 1 or not rec then redis.call('HSET', KEYS[3], peer, key .. ' ' .. now) end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('ZADD', KEYS[5], now, peer)
redis.call('ZADD', KEYS[6], now, ARGV[7])
redis.call('PEXPIRE', KEYS[5], ARGV[9])
redis.call('PEXPIRE', KEYS[6], ARGV[9])
local out = {2, key, due}
local want = tonumber(ARGV[3])
if want > 0 then
  local picked = {}
  for _, id in ipairs(redis.call('ZRANDMEMBER', KEYS[1], want + 1)) do
    if id ~= peer and #picked < want then picked[#picked + 1] = id end
  end
  if #picked > 0 then
    local infos = redis.call('HMGET', KEYS[2], unpack(picked))
    for i, id in ipairs(picked) do
      out[#out + 1] = id
      out[#out + 1] = infos[i] or ''
    end
  end
end
return out
";

/// Removes a member that presents its key. KEYS: members, infos, keys, stats peers,
/// stats swarms. ARGV: peer id, presented key, ttl ms, swarm id.
/// Returns 0 not a member, 1 key mismatch, 2 left.
const SWARM_LEAVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local seen = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not seen or tonumber(seen) < now - ttl then return 0 end
local rec = redis.call('HGET', KEYS[3], ARGV[1])
if not rec then return 0 end
local sp = string.find(rec, ' ', 1, true)
if not sp or string.sub(rec, 1, sp - 1) ~= ARGV[2] then return 1 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if redis.call('ZCOUNT', KEYS[1], now - ttl, '+inf') == 0 then
  redis.call('ZREM', KEYS[5], ARGV[4])
end
return 2
";

/// Whether a peer is a live member holding a key. KEYS: members, keys. ARGV: peer id,
/// presented key, ttl ms. Returns 0 not a member, 1 key mismatch, 2 member.
const SWARM_CHECK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seen = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not seen or tonumber(seen) < now - tonumber(ARGV[3]) then return 0 end
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if not rec then return 0 end
local sp = string.find(rec, ' ', 1, true)
if not sp or string.sub(rec, 1, sp - 1) ~= ARGV[2] then return 1 end
return 2
";

/// Counts a report; at the threshold, removes the offender and bans it from the swarm.
/// KEYS: reports, members, infos, keys, bans, stats peers, stats bans.
/// ARGV: reporter, offender, ttl ms, threshold, ban ms, swarm id.
/// Returns {distinct reporters, 1 if this report banned the offender else 0}.
const SWARM_REPORT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl - 1)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
local n = redis.call('ZCARD', KEYS[1])
if n < tonumber(ARGV[4]) then return {n, 0} end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('HDEL', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[6], ARGV[2])
local ban = tonumber(ARGV[5])
redis.call('ZADD', KEYS[5], now + ban, ARGV[2])
if redis.call('PTTL', KEYS[5]) < ban then redis.call('PEXPIRE', KEYS[5], ban) end
redis.call('ZADD', KEYS[7], now + ban, ARGV[6] .. '\n' .. ARGV[2])
if redis.call('PTTL', KEYS[7]) < ban then redis.call('PEXPIRE', KEYS[7], ban) end
return {n, 1}
";

/// Points a peer id at a swarm unless another swarm holds it. KEYS: owner.
/// ARGV: swarm id, the other swarm the caller found the id dead in ('' if none), ttl ms.
/// Returns '' when the id now points at the swarm, else the swarm it points at.
const OWNER_CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  local nl = string.find(v, '\n', 1, true)
  if nl then v = string.sub(v, 1, nl - 1) end
end
if not v or v == ARGV[1] or (ARGV[2] ~= '' and v == ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return ''
end
return v
";

/// Whether a peer is a live member of a swarm. KEYS: members. ARGV: peer id, ttl ms.
const SWARM_LIVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seen = redis.call('ZSCORE', KEYS[1], ARGV[1])
if seen and tonumber(seen) >= now - tonumber(ARGV[2]) then return 1 end
return 0
";

/// A Lua script run with EVALSHA, and with EVAL on the node that answers NOSCRIPT (a restarted
/// server or a promoted replica that never saw it), which also caches it there.
struct Lua {
    code: &'static str,
    hash: String,
}

impl Lua {
    fn new(code: &'static str) -> Self {
        Self {
            code,
            hash: ::redis::Script::new(code).get_hash().to_owned(),
        }
    }

    /// Runs the script; `fill` appends the keys (`nkeys` of them) and then the arguments.
    async fn run<T: FromRedisValue>(
        &self,
        conn: &mut Conn,
        nkeys: usize,
        fill: impl Fn(&mut Cmd),
    ) -> Result<T, RedisError> {
        let mut cmd = ::redis::cmd("EVALSHA");
        cmd.arg(&self.hash).arg(nkeys);
        fill(&mut cmd);
        match cmd.query_async(conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let mut cmd = ::redis::cmd("EVAL");
                cmd.arg(self.code).arg(nkeys);
                fill(&mut cmd);
                cmd.query_async(conn).await
            }
            other => other,
        }
    }
}

struct Scripts {
    announce: Lua,
    leave: Lua,
    check: Lua,
    report: Lua,
    claim: Lua,
    live: Lua,
}

/// One multiplexed connection: to a single server, or to every node of a cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// Where the count sets of a swarm are.
enum Stats {
    /// One server: three global sets.
    Global,
    /// A cluster: three sets per hash slot, named with a tag that hashes to the slot, and the
    /// time (ms) this instance last wrote each slot, so that its sweep visits only those.
    PerSlot {
        tags: Vec<String>,
        touched: Vec<AtomicU64>,
    },
}

/// Swarms in a Redis server or cluster shared by every tracker instance that points at it.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    ttl: Duration,
    scripts: Arc<Scripts>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("ttl", &self.ttl)
            .field(
                "cluster",
                &matches!(self.stats.as_ref(), Stats::PerSlot { .. }),
            )
            .finish()
    }
}

fn owner_key(peer: &str) -> String {
    format!("shoal:peer:{{{peer}}}")
}

fn reports_key(swarm: &str, offender: &PeerId) -> String {
    format!("shoal:swarm:{{{swarm}}}:r:{offender}")
}

/// Members, infos, keys and bans of a swarm.
fn swarm_keys(swarm: &str) -> [String; 4] {
    ["m", "i", "k", "b"].map(|s| format!("shoal:swarm:{{{swarm}}}:{s}"))
}

fn unix_ms() -> i64 {
    crate::clock::unix_ms()
}

/// The hash slot Redis Cluster puts `key` in: CRC16 (XMODEM) of its hash tag, or of the whole
/// key when it has none, modulo 16384.
fn key_slot(key: &str) -> usize {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    usize::from(crc16::State::<crc16::XMODEM>::calculate(
        tagged.unwrap_or(bytes),
    )) % SLOTS
}

/// For every slot, a short tag (a decimal number) that hashes to it.
fn slot_tags() -> Vec<String> {
    let mut tags = vec![String::new(); SLOTS];
    let mut left = SLOTS;
    // Every slot is hit well before 2^22 candidates (about 170 000 on average).
    for n in 0u32..(1 << 22) {
        let tag = n.to_string();
        let slot = key_slot(&tag);
        if tags[slot].is_empty() {
            tags[slot] = tag;
            left -= 1;
            if left == 0 {
                break;
            }
        }
    }
    tags
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

/// The masters of a cluster and the slot ranges each serves, from `CLUSTER SLOTS`.
async fn masters(
    conn: &mut ClusterConnection,
) -> Result<Vec<(String, u16, Vec<usize>)>, StoreError> {
    let mut cmd = ::redis::cmd("CLUSTER");
    cmd.arg("SLOTS");
    let reply = conn
        .route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
        .await?;
    let Value::Array(ranges) = reply else {
        return Err(corrupt("CLUSTER SLOTS is not an array"));
    };
    let mut out: Vec<(String, u16, Vec<usize>)> = Vec::new();
    for range in &ranges {
        let Value::Array(r) = range else {
            return Err(corrupt("CLUSTER SLOTS range is not an array"));
        };
        let (Some(start), Some(end), Some(Value::Array(master))) =
            (r.first().and_then(int), r.get(1).and_then(int), r.get(2))
        else {
            return Err(corrupt("CLUSTER SLOTS range has no master"));
        };
        let (Some(host), Some(port)) = (
            master.first().and_then(text),
            master
                .get(1)
                .and_then(int)
                .and_then(|p| u16::try_from(p).ok()),
        ) else {
            return Err(corrupt("CLUSTER SLOTS master has no address"));
        };
        let slots = (start.max(0) as usize)..=(end.max(0) as usize).min(SLOTS - 1);
        match out.iter_mut().find(|(h, p, _)| *h == host && *p == port) {
            Some((_, _, s)) => s.extend(slots),
            None => out.push((host, port, slots.collect())),
        }
    }
    Ok(out)
}

impl RedisStore {
    /// Connects to one server at `url` (`redis://HOST:PORT[/DB]`); peers silent for more than
    /// `2 * interval` expire. The connection reconnects by itself after Redis restarts.
    pub async fn connect(url: &str, interval: Duration) -> Result<Self, StoreError> {
        Self::connect_with_ca(url, interval, None).await
    }

    /// Like [`RedisStore::connect`]; a `rediss://` server is verified against the PEM CA
    /// certificates `ca` (the system's roots when `None`).
    pub async fn connect_with_ca(
        url: &str,
        interval: Duration,
        ca: Option<Vec<u8>>,
    ) -> Result<Self, StoreError> {
        let client = match ca {
            Some(root_cert) => ::redis::Client::build_with_tls(
                url,
                ::redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )?,
            None => ::redis::Client::open(url)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self::new(Conn::Single(conn), Stats::Global, interval))
    }

    /// Connects to the Redis Cluster that `nodes` (`redis://HOST:PORT`, at least one of them
    /// up) belong to. Redirections (MOVED, ASK), reconnects and failovers are the client's: a
    /// request retries a few times within about three seconds, then fails.
    pub async fn connect_cluster(nodes: &[String], interval: Duration) -> Result<Self, StoreError> {
        Self::connect_cluster_with_ca(nodes, interval, None).await
    }

    /// Like [`RedisStore::connect_cluster`]; `rediss://` nodes are verified against the PEM
    /// CA certificates `ca` (the system's roots when `None`).
    pub async fn connect_cluster_with_ca(
        nodes: &[String],
        interval: Duration,
        ca: Option<Vec<u8>>,
    ) -> Result<Self, StoreError> {
        let mut builder = ClusterClient::builder(nodes.iter().map(String::as_str))
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(Duration::from_secs(1))
            .overall_response_timeout(Some(Duration::from_secs(3)))
            .retries(4)
            .min_retry_wait(50)
            .max_retry_wait(800);
        if let Some(root_cert) = ca {
            builder = builder.certs(::redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            });
        }
        let client = builder.build()?;
        let conn = client.get_async_connection().await?;
        let stats = Stats::PerSlot {
            tags: slot_tags(),
            touched: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        };
        Ok(Self::new(Conn::Cluster(conn), stats, interval))
    }

    fn new(conn: Conn, stats: Stats, interval: Duration) -> Self {
        Self {
            conn,
            ttl: interval.saturating_mul(2),
            scripts: Arc::new(Scripts {
                announce: Lua::new(SWARM_ANNOUNCE),
                leave: Lua::new(SWARM_LEAVE),
                check: Lua::new(SWARM_CHECK),
                report: Lua::new(SWARM_REPORT),
                claim: Lua::new(OWNER_CLAIM),
                live: Lua::new(SWARM_LIVE),
            }),
            stats: Arc::new(stats),
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// The count sets keep entries twice as long as members live, so that a sweep still finds
    /// (and counts) an expired entry before its set expires with the swarm's last activity.
    fn stats_ttl_ms(&self) -> u64 {
        self.ttl_ms().saturating_mul(2)
    }

    fn owner_ttl_ms(&self) -> u64 {
        self.ttl_ms().saturating_mul(u64::from(OWNER_TTL_FACTOR))
    }

    /// Peers, swarms and bans count sets for `swarm` (and notes that this instance wrote them).
    fn stats_keys(&self, swarm: &str) -> [String; 3] {
        match self.stats.as_ref() {
            Stats::Global => [
                "shoal:stats:peers".to_owned(),
                "shoal:stats:swarms".to_owned(),
                "shoal:stats:bans".to_owned(),
            ],
            Stats::PerSlot { tags, touched } => {
                let slot = key_slot(&swarm_keys(swarm)[0]);
                touched[slot].store(unix_ms().max(0) as u64, Ordering::Relaxed);
                slot_stats_keys(&tags[slot])
            }
        }
    }

    async fn announce_once(
        &self,
        conn: &mut Conn,
        req: &AnnounceRequest,
        keys: &[String; 4],
        stats: &[String; 3],
        info: &str,
        fresh: &str,
    ) -> Result<Vec<Value>, StoreError> {
        let ttl_ms = self.ttl_ms();
        Ok(self
            .scripts
            .announce
            .run(conn, 6, |c| {
                c.arg(&keys[..])
                    .arg(&stats[0])
                    .arg(&stats[1])
                    .arg(req.peer_id.as_str())
                    .arg(info)
                    .arg(req.numwant)
                    .arg(ttl_ms)
                    .arg(req.peer_key.as_deref().unwrap_or(""))
                    .arg(fresh)
                    .arg(req.swarm_id.as_str())
                    .arg(self.owner_ttl_ms() / 2)
                    .arg(self.stats_ttl_ms());
            })
            .await?)
    }

    async fn announce_impl(&self, req: &AnnounceRequest) -> Result<Joined, StoreError> {
        let mut conn = self.conn.clone();
        let swarm = req.swarm_id.as_str();
        let keys = swarm_keys(swarm);
        let stats = self.stats_keys(swarm);
        let info = pack_info(&req.fingerprint, &req.addrs);
        let mut reply = self
            .announce_once(&mut conn, req, &keys, &stats, &info, "")
            .await?;
        let mut code = reply.first().and_then(int);
        if code == Some(5) {
            // Not a member: the peer id must not be live in another swarm.
            self.claim(&mut conn, &req.peer_id, swarm).await?;
            reply = self
                .announce_once(&mut conn, req, &keys, &stats, &info, &new_peer_key())
                .await?;
            code = reply.first().and_then(int);
        }
        match code {
            Some(2) => {}
            Some(1) => return Err(StoreError::KeyMismatch),
            Some(4) => return Err(StoreError::Banned),
            other => {
                return Err(StoreError::Corrupt(format!(
                    "announce script said {other:?}"
                )))
            }
        }
        let peer_key = reply
            .get(1)
            .and_then(text)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| corrupt("announce script returned no key"))?;
        if reply.get(2).and_then(int) == Some(1) {
            self.refresh_owner(&req.peer_id, swarm);
        }
        let pairs = reply.get(3..).unwrap_or_default();
        let mut neighbours = Neighbours::with_capacity(
            pairs.len() / 2,
            pairs
                .iter()
                .map(|v| match v {
                    Value::BulkString(b) => b.len(),
                    _ => 0,
                })
                .sum(),
        );
        for pair in pairs.chunks_exact(2) {
            // Redis is outside this process: skip what this tracker would not have written.
            if let (Some(id), Some(info)) = (text(&pair[0]), text(&pair[1])) {
                if PeerId::new(id.as_str()).is_ok() {
                    neighbours.push(&id, &info);
                }
            }
        }
        Ok(Joined {
            peer_key,
            neighbours,
        })
    }

    /// Points `peer`'s owner record at `swarm`, unless it is live in another swarm
    /// ([`StoreError::Conflict`]). The record names the swarm that last claimed the id; whether
    /// the peer is still live there is read from that swarm's members, so a record left behind
    /// by a peer that left, expired or was banned is taken over.
    async fn claim(&self, conn: &mut Conn, peer: &PeerId, swarm: &str) -> Result<(), StoreError> {
        let owner = owner_key(peer.as_str());
        let mut dead_in = String::new();
        // Each pass either claims, or finds the id live elsewhere, or finds that the record
        // changed under it (another claim raced); a few passes settle any such race.
        for _ in 0..4 {
            let holder: String = self
                .scripts
                .claim
                .run(conn, 1, |c| {
                    c.arg(&owner)
                        .arg(swarm)
                        .arg(&dead_in)
                        .arg(self.owner_ttl_ms());
                })
                .await?;
            if holder.is_empty() {
                return Ok(());
            }
            let [members, ..] = swarm_keys(&holder);
            let live: i64 = self
                .scripts
                .live
                .run(conn, 1, |c| {
                    c.arg(&members).arg(peer.as_str()).arg(self.ttl_ms());
                })
                .await?;
            if live == 1 {
                return Err(StoreError::Conflict);
            }
            dead_in = holder;
        }
        Err(StoreError::Conflict)
    }

    /// Renews the owner record of a live member, off the announce's path: it only has to
    /// outlive the membership, and a failed renewal is retried at the next announce.
    fn refresh_owner(&self, peer: &PeerId, swarm: &str) {
        let store = self.clone();
        let owner = owner_key(peer.as_str());
        let swarm = swarm.to_owned();
        tokio::spawn(async move {
            let mut conn = store.conn.clone();
            let result: Result<String, _> = store
                .scripts
                .claim
                .run(&mut conn, 1, |c| {
                    c.arg(&owner).arg(&swarm).arg("").arg(store.owner_ttl_ms());
                })
                .await;
            match result {
                Ok(h) if h.is_empty() => {}
                Ok(h) => tracing::debug!(%owner, holder = %h, "owner record names another swarm"),
                Err(e) => tracing::debug!(%owner, error = %e, "owner record not renewed"),
            }
        });
    }

    async fn leave_impl(&self, req: &LeaveRequest) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let swarm = req.swarm_id.as_str();
        let keys = swarm_keys(swarm);
        let stats = self.stats_keys(swarm);
        let code: i64 = self
            .scripts
            .leave
            .run(&mut conn, 5, |c| {
                c.arg(&keys[..3])
                    .arg(&stats[0])
                    .arg(&stats[1])
                    .arg(req.peer_id.as_str())
                    .arg(&req.peer_key)
                    .arg(self.ttl_ms())
                    .arg(swarm);
            })
            .await?;
        match code {
            0 => Err(StoreError::NotMember),
            1 => Err(StoreError::KeyMismatch),
            _ => Ok(()),
        }
    }

    async fn sweep_impl(&self) -> Result<u64, StoreError> {
        let cutoff = unix_ms() - i64::try_from(self.ttl_ms()).unwrap_or(i64::MAX) - 1;
        match (&self.conn, self.stats.as_ref()) {
            (Conn::Single(c), _) => {
                let mut conn = c.clone();
                let (peers, _swarms, _bans): (u64, u64, u64) = ::redis::pipe()
                    .zrembyscore("shoal:stats:peers", "-inf", cutoff)
                    .zrembyscore("shoal:stats:swarms", "-inf", cutoff)
                    .zrembyscore("shoal:stats:bans", "-inf", unix_ms())
                    .query_async(&mut conn)
                    .await?;
                Ok(peers)
            }
            (Conn::Cluster(c), Stats::PerSlot { tags, touched }) => {
                // Only the slots this instance wrote while their sets can still hold entries;
                // the sets of slots nobody writes expire by themselves.
                let since = (unix_ms() - 2 * self.stats_ttl_ms() as i64).max(0) as u64;
                let slots: Vec<usize> = (0..SLOTS)
                    .filter(|&s| {
                        let t = touched[s].load(Ordering::Relaxed);
                        t != 0 && t >= since
                    })
                    .collect();
                if slots.is_empty() {
                    return Ok(0);
                }
                let mut conn = c.clone();
                let replies = per_master(&mut conn, &slots, |pipe, slot| {
                    let [p, s, b] = slot_stats_keys(&tags[slot]);
                    pipe.zrembyscore(p, "-inf", cutoff)
                        .zrembyscore(s, "-inf", cutoff)
                        .zrembyscore(b, "-inf", unix_ms());
                })
                .await?;
                Ok(replies
                    .iter()
                    .step_by(3)
                    .filter_map(int)
                    .map(|n| n.max(0) as u64)
                    .sum())
            }
            (Conn::Cluster(_), Stats::Global) => Err(corrupt("cluster store without slot sets")),
        }
    }

    async fn counts_impl(&self) -> Result<Counts, StoreError> {
        let since = unix_ms() - i64::try_from(self.ttl_ms()).unwrap_or(i64::MAX);
        let ban_floor = format!("({}", unix_ms());
        match (&self.conn, self.stats.as_ref()) {
            (Conn::Single(c), _) => {
                let mut conn = c.clone();
                let (peers, swarms, bans): (u64, u64, u64) = ::redis::pipe()
                    .zcount("shoal:stats:peers", since, "+inf")
                    .zcount("shoal:stats:swarms", since, "+inf")
                    .zcount("shoal:stats:bans", &ban_floor, "+inf")
                    .query_async(&mut conn)
                    .await?;
                Ok(Counts {
                    peers,
                    swarms,
                    bans,
                })
            }
            (Conn::Cluster(c), Stats::PerSlot { tags, .. }) => {
                // Every slot: three ZCOUNTs per slot, one pipeline per master.
                let mut conn = c.clone();
                let all: Vec<usize> = (0..SLOTS).collect();
                let replies = per_master(&mut conn, &all, |pipe, slot| {
                    let [p, s, b] = slot_stats_keys(&tags[slot]);
                    pipe.zcount(p, since, "+inf")
                        .zcount(s, since, "+inf")
                        .zcount(b, &ban_floor, "+inf");
                })
                .await?;
                let mut c = Counts::default();
                for triple in replies.chunks_exact(3) {
                    let n = |v: &Value| int(v).unwrap_or(0).max(0) as u64;
                    c.peers += n(&triple[0]);
                    c.swarms += n(&triple[1]);
                    c.bans += n(&triple[2]);
                }
                Ok(c)
            }
            (Conn::Cluster(_), Stats::Global) => Err(corrupt("cluster store without slot sets")),
        }
    }

    async fn ready_impl(&self) -> Result<(), StoreError> {
        match &self.conn {
            Conn::Single(c) => {
                let mut conn = c.clone();
                let () = ::redis::cmd("PING").query_async(&mut conn).await?;
            }
            Conn::Cluster(c) => {
                // One node answering is enough: a cluster missing a master fails only that
                // master's slots, and only until a replica takes over.
                let mut conn = c.clone();
                conn.route_command(
                    ::redis::cmd("PING"),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn check_member_impl(
        &self,
        swarm: &SwarmId,
        peer: &PeerId,
        key: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let [members, _, keys, _] = swarm_keys(swarm.as_str());
        let code: i64 = self
            .scripts
            .check
            .run(&mut conn, 2, |c| {
                c.arg(&members)
                    .arg(&keys)
                    .arg(peer.as_str())
                    .arg(key)
                    .arg(self.ttl_ms());
            })
            .await?;
        match code {
            2 => Ok(()),
            1 => Err(StoreError::KeyMismatch),
            _ => Err(StoreError::NotMember),
        }
    }

    async fn report_impl(
        &self,
        swarm: &SwarmId,
        reporter: &PeerId,
        offender: &PeerId,
        rule: BanRule,
    ) -> Result<Reported, StoreError> {
        let mut conn = self.conn.clone();
        let s = swarm.as_str();
        let keys = swarm_keys(s);
        let stats = self.stats_keys(s);
        let ban_ms = u64::try_from(rule.duration.as_millis()).unwrap_or(u64::MAX);
        let (reporters, banned): (u64, u8) = self
            .scripts
            .report
            .run(&mut conn, 7, |c| {
                c.arg(reports_key(s, offender))
                    .arg(&keys[..])
                    .arg(&stats[0])
                    .arg(&stats[2])
                    .arg(reporter.as_str())
                    .arg(offender.as_str())
                    .arg(self.ttl_ms())
                    .arg(rule.threshold)
                    .arg(ban_ms.max(1))
                    .arg(s);
            })
            .await?;
        Ok(Reported {
            reporters,
            banned: banned == 1,
        })
    }
}

fn slot_stats_keys(tag: &str) -> [String; 3] {
    ["p", "s", "b"].map(|k| format!("shoal:stats:{{{tag}}}:{k}"))
}

/// Runs the commands `add` makes for each of `slots`, as one pipeline per master (the slots it
/// serves), and returns the replies in the order of `slots` within each master.
async fn per_master(
    conn: &mut ClusterConnection,
    slots: &[usize],
    add: impl Fn(&mut Pipeline, usize),
) -> Result<Vec<Value>, StoreError> {
    let mut wanted = vec![false; SLOTS];
    for &s in slots {
        wanted[s] = true;
    }
    let mut out = Vec::new();
    for (host, port, served) in masters(conn).await? {
        let mut pipe = ::redis::pipe();
        for s in served.into_iter().filter(|&s| wanted[s]) {
            add(&mut pipe, s);
        }
        let n = pipe.len();
        if n == 0 {
            continue;
        }
        let replies = conn
            .route_pipeline(pipe, 0, n, SingleNodeRoutingInfo::ByAddress { host, port })
            .await?;
        out.extend(replies);
    }
    Ok(out)
}

impl Store for RedisStore {
    fn announce<'a>(&'a self, req: &'a AnnounceRequest) -> StoreFuture<'a, Joined> {
        Box::pin(self.announce_impl(req))
    }

    fn leave<'a>(&'a self, req: &'a LeaveRequest) -> StoreFuture<'a, ()> {
        Box::pin(self.leave_impl(req))
    }

    fn sweep(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.sweep_impl())
    }

    fn counts(&self) -> StoreFuture<'_, Counts> {
        Box::pin(self.counts_impl())
    }

    fn ready(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.ready_impl())
    }

    fn check_member<'a>(
        &'a self,
        swarm: &'a SwarmId,
        peer: &'a PeerId,
        key: &'a str,
    ) -> StoreFuture<'a, ()> {
        Box::pin(self.check_member_impl(swarm, peer, key))
    }

    fn report<'a>(
        &'a self,
        swarm: &'a SwarmId,
        reporter: &'a PeerId,
        offender: &'a PeerId,
        rule: BanRule,
    ) -> StoreFuture<'a, Reported> {
        Box::pin(self.report_impl(swarm, reporter, offender, rule))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster_and_every_slot_has_a_tag() {
        // Values from the Redis Cluster specification's CRC16 reference and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot("123456789"), 0x31C3 % SLOTS);
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        let tags = slot_tags();
        for (slot, tag) in tags.iter().enumerate() {
            assert!(!tag.is_empty(), "slot {slot} has no tag");
            assert_eq!(key_slot(&slot_stats_keys(tag)[0]), slot);
        }
        let keys = swarm_keys("cdn.example.com/v/720p");
        assert!(keys
            .iter()
            .all(|k| key_slot(k) == key_slot("{cdn.example.com/v/720p}")));
    }
}
