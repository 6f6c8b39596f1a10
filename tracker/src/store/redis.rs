//! The Redis store: several tracker instances behind a load balancer share swarms.
//!
//! Key layout (ready for Redis Cluster: every key a script touches shares one hash tag):
//! - `shoal:swarm:{<swarm id>}:m` sorted set, peer id -> last announce (ms, Redis clock)
//! - `shoal:swarm:{<swarm id>}:i` hash, peer id -> fingerprint and addresses
//! - `shoal:peer:{<peer id>}` string `<swarm id>\n<peer key>`, expiring two intervals after the
//!   peer's last announce: who owns the peer id
//! - `shoal:peer:{<peer id>}:ban:<swarm id>` present while the peer is banned from the swarm
//! - `shoal:swarm:{<swarm id>}:r:<offender>` sorted set, reporter -> time of its report
//! - `shoal:stats:peers`, `shoal:stats:swarms` sorted sets, id -> last announce: the counts
//! - `shoal:stats:bans` sorted set, `<swarm id>\n<peer id>` -> end of the ban
//!
//! Each announce runs two Lua scripts (owner, then swarm), each atomic within its key slot.
//! Expired members are pruned by score on every announce to their swarm; a swarm's keys expire
//! two intervals after its last announce, so an abandoned swarm disappears by itself.

use super::{
    new_peer_key, pack_info, BanRule, Counts, Joined, Neighbours, Reported, Store, StoreError,
    StoreFuture,
};
use ::redis::aio::ConnectionManager;
use ::redis::{ErrorKind, RedisError, Script, ServerErrorKind};
use shoal_proto::{AnnounceRequest, LeaveRequest, PeerId, SwarmId};
use std::time::Duration;

const PEERS_KEY: &str = "shoal:stats:peers";
const SWARMS_KEY: &str = "shoal:stats:swarms";
const BANS_KEY: &str = "shoal:stats:bans";

/// Claims or refreshes a peer id. KEYS: owner, ban. ARGV: swarm, presented key, fresh key,
/// ttl ms. Returns {0, ''} conflict, {1, ''} key mismatch, {2, key} refreshed, {3, key}
/// claimed, {4, ''} banned from this swarm.
const OWNER_ANNOUNCE: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return {4, ''} end
local v = redis.call('GET', KEYS[1])
if v then
  local nl = string.find(v, '\n', 1, true)
  if not nl then return redis.error_reply('shoal: malformed owner record') end
  if string.sub(v, 1, nl - 1) ~= ARGV[1] then return {0, ''} end
  local key = string.sub(v, nl + 1)
  if key ~= ARGV[2] then return {1, ''} end
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {2, key}
end
redis.call('SET', KEYS[1], ARGV[1] .. '\n' .. ARGV[3], 'PX', ARGV[4])
return {3, ARGV[3]}
";

/// Releases a peer id. KEYS: owner. ARGV: swarm, presented key.
/// Returns 0 not a member, 1 key mismatch, 2 released.
const OWNER_LEAVE: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local nl = string.find(v, '\n', 1, true)
if not nl or string.sub(v, 1, nl - 1) ~= ARGV[1] then return 0 end
if string.sub(v, nl + 1) ~= ARGV[2] then return 1 end
redis.call('DEL', KEYS[1])
return 2
";

/// Refreshes a member, prunes the dead, samples neighbours. KEYS: members, infos.
/// ARGV: peer id, info, numwant, ttl ms. Returns {id1, info1, id2, info2, ...}.
const SWARM_ANNOUNCE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[4])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - ttl - 1, 'LIMIT', 0, 256)
if #dead > 0 then
  redis.call('ZREM', KEYS[1], unpack(dead))
  redis.call('HDEL', KEYS[2], unpack(dead))
end
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
local want = tonumber(ARGV[3])
local out = {}
if want > 0 then
  local picked = {}
  for _, id in ipairs(redis.call('ZRANDMEMBER', KEYS[1], want + 1)) do
    if id ~= ARGV[1] and #picked < want then picked[#picked + 1] = id end
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

/// Removes a member. KEYS: members, infos. ARGV: peer id. Returns how many members remain.
const SWARM_LEAVE: &str = r"
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('ZCARD', KEYS[1])
";

/// Counts a report; at the threshold, removes the offender from the swarm.
/// KEYS: reports, members, infos. ARGV: reporter, offender, ttl ms, threshold.
/// Returns {distinct reporters, 1 if this report reached the threshold else 0}.
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
return {n, 1}
";

/// Bans a peer id from a swarm and frees the id if it is held there.
/// KEYS: owner, ban. ARGV: swarm, ban ms.
const OWNER_BAN: &str = r"
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
local v = redis.call('GET', KEYS[1])
if v then
  local nl = string.find(v, '\n', 1, true)
  if nl and string.sub(v, 1, nl - 1) == ARGV[1] then redis.call('DEL', KEYS[1]) end
end
return 1
";

/// Swarms in a Redis server shared by every tracker instance that points at it.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    ttl: Duration,
    owner_announce: Script,
    owner_leave: Script,
    swarm_announce: Script,
    swarm_leave: Script,
    swarm_report: Script,
    owner_ban: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("ttl", &self.ttl)
            .finish()
    }
}

fn owner_key(peer: &PeerId) -> String {
    format!("shoal:peer:{{{peer}}}")
}

fn ban_key(peer: &PeerId, swarm: &str) -> String {
    format!("shoal:peer:{{{peer}}}:ban:{swarm}")
}

fn reports_key(swarm: &str, offender: &PeerId) -> String {
    format!("shoal:swarm:{{{swarm}}}:r:{offender}")
}

fn swarm_keys(swarm: &str) -> [String; 2] {
    [
        format!("shoal:swarm:{{{swarm}}}:m"),
        format!("shoal:swarm:{{{swarm}}}:i"),
    ]
}

fn unix_ms() -> i64 {
    crate::clock::unix_ms()
}

fn is_noscript(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}

impl RedisStore {
    /// Connects to `url` (`redis://HOST:PORT[/DB]`); peers silent for more than `2 * interval`
    /// expire. The connection reconnects by itself after Redis restarts.
    pub async fn connect(url: &str, interval: Duration) -> Result<Self, StoreError> {
        let client = ::redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        let store = Self {
            conn,
            ttl: interval.saturating_mul(2),
            owner_announce: Script::new(OWNER_ANNOUNCE),
            owner_leave: Script::new(OWNER_LEAVE),
            swarm_announce: Script::new(SWARM_ANNOUNCE),
            swarm_leave: Script::new(SWARM_LEAVE),
            swarm_report: Script::new(SWARM_REPORT),
            owner_ban: Script::new(OWNER_BAN),
        };
        store.load_scripts().await?;
        Ok(store)
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Loads the scripts that run inside pipelines (where redis-rs does not reload them).
    async fn load_scripts(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        ::redis::pipe()
            .load_script(&self.swarm_announce)
            .ignore()
            .load_script(&self.swarm_leave)
            .ignore()
            .exec_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn announce_impl(&self, req: &AnnounceRequest) -> Result<Joined, StoreError> {
        let mut conn = self.conn.clone();
        let ttl_ms = self.ttl_ms();
        let swarm = req.swarm_id.as_str();
        let (code, key): (i64, String) = self
            .owner_announce
            .key(owner_key(&req.peer_id))
            .key(ban_key(&req.peer_id, swarm))
            .arg(swarm)
            .arg(req.peer_key.as_deref().unwrap_or(""))
            .arg(new_peer_key())
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        let peer_key = match (code, key) {
            (0, _) => return Err(StoreError::Conflict),
            (1, _) => return Err(StoreError::KeyMismatch),
            (4, _) => return Err(StoreError::Banned),
            (2 | 3, key) if !key.is_empty() => key,
            (code, _) => return Err(StoreError::Corrupt(format!("owner script said {code}"))),
        };
        let [members, infos] = swarm_keys(swarm);
        let info = pack_info(&req.fingerprint, &req.addrs);
        let now = unix_ms();
        let mut invocation = self.swarm_announce.key(&members);
        invocation
            .key(&infos)
            .arg(req.peer_id.as_str())
            .arg(&info)
            .arg(req.numwant)
            .arg(ttl_ms);
        let mut pipe = ::redis::pipe();
        pipe.invoke_script(&invocation)
            .zadd(PEERS_KEY, req.peer_id.as_str(), now)
            .ignore()
            .zadd(SWARMS_KEY, swarm, now)
            .ignore();
        let (flat,): (Vec<String>,) = match pipe.query_async(&mut conn).await {
            Err(e) if is_noscript(&e) => {
                // Redis restarted or flushed its script cache since we loaded them.
                self.load_scripts().await?;
                pipe.query_async(&mut conn).await?
            }
            other => other?,
        };
        let mut neighbours =
            Neighbours::with_capacity(flat.len() / 2, flat.iter().map(String::len).sum());
        for pair in flat.chunks_exact(2) {
            // Redis is outside this process: skip what this tracker would not have written.
            if PeerId::new(pair[0].as_str()).is_ok() {
                neighbours.push(&pair[0], &pair[1]);
            }
        }
        Ok(Joined {
            peer_key,
            neighbours,
        })
    }

    async fn leave_impl(&self, req: &LeaveRequest) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let swarm = req.swarm_id.as_str();
        let code: i64 = self
            .owner_leave
            .key(owner_key(&req.peer_id))
            .arg(swarm)
            .arg(&req.peer_key)
            .invoke_async(&mut conn)
            .await?;
        match code {
            0 => return Err(StoreError::NotMember),
            1 => return Err(StoreError::KeyMismatch),
            _ => {}
        }
        let [members, infos] = swarm_keys(swarm);
        let mut invocation = self.swarm_leave.key(&members);
        invocation.key(&infos).arg(req.peer_id.as_str());
        let mut pipe = ::redis::pipe();
        pipe.invoke_script(&invocation)
            .zrem(PEERS_KEY, req.peer_id.as_str())
            .ignore();
        let (remaining,): (u64,) = match pipe.query_async(&mut conn).await {
            Err(e) if is_noscript(&e) => {
                self.load_scripts().await?;
                pipe.query_async(&mut conn).await?
            }
            other => other?,
        };
        if remaining == 0 {
            // A peer joining right now re-adds the swarm on its next announce.
            let _: () = ::redis::cmd("ZREM")
                .arg(SWARMS_KEY)
                .arg(swarm)
                .query_async(&mut conn)
                .await?;
        }
        Ok(())
    }

    async fn sweep_impl(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let cutoff = unix_ms() - i64::try_from(self.ttl_ms()).unwrap_or(i64::MAX) - 1;
        let (peers, _swarms, _bans): (u64, u64, u64) = ::redis::pipe()
            .zrembyscore(PEERS_KEY, "-inf", cutoff)
            .zrembyscore(SWARMS_KEY, "-inf", cutoff)
            .zrembyscore(BANS_KEY, "-inf", unix_ms())
            .query_async(&mut conn)
            .await?;
        Ok(peers)
    }

    async fn counts_impl(&self) -> Result<Counts, StoreError> {
        let mut conn = self.conn.clone();
        let since = unix_ms() - i64::try_from(self.ttl_ms()).unwrap_or(i64::MAX);
        let (peers, swarms, bans): (u64, u64, u64) = ::redis::pipe()
            .zcount(PEERS_KEY, since, "+inf")
            .zcount(SWARMS_KEY, since, "+inf")
            .zcount(BANS_KEY, format!("({}", unix_ms()), "+inf")
            .query_async(&mut conn)
            .await?;
        Ok(Counts {
            peers,
            swarms,
            bans,
        })
    }

    async fn check_member_impl(
        &self,
        swarm: &SwarmId,
        peer: &PeerId,
        key: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let record: Option<String> = ::redis::cmd("GET")
            .arg(owner_key(peer))
            .query_async(&mut conn)
            .await?;
        let Some((owner_swarm, held_key)) = record.as_deref().and_then(|r| r.split_once('\n'))
        else {
            return Err(StoreError::NotMember);
        };
        if owner_swarm != swarm.as_str() {
            return Err(StoreError::NotMember);
        }
        if held_key != key {
            return Err(StoreError::KeyMismatch);
        }
        Ok(())
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
        let [members, infos] = swarm_keys(s);
        let (reporters, reached): (u64, u8) = self
            .swarm_report
            .key(reports_key(s, offender))
            .key(&members)
            .key(&infos)
            .arg(reporter.as_str())
            .arg(offender.as_str())
            .arg(self.ttl_ms())
            .arg(rule.threshold)
            .invoke_async(&mut conn)
            .await?;
        if reached == 0 {
            return Ok(Reported {
                reporters,
                banned: false,
            });
        }
        let ban_ms = u64::try_from(rule.duration.as_millis()).unwrap_or(u64::MAX);
        let () = self
            .owner_ban
            .key(owner_key(offender))
            .key(ban_key(offender, s))
            .arg(s)
            .arg(ban_ms)
            .invoke_async(&mut conn)
            .await?;
        let until = unix_ms().saturating_add(i64::try_from(ban_ms).unwrap_or(i64::MAX));
        let _: () = ::redis::pipe()
            .zadd(BANS_KEY, format!("{s}\n{offender}"), until)
            .ignore()
            .zrem(PEERS_KEY, offender.as_str())
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(Reported {
            reporters,
            banned: true,
        })
    }
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
