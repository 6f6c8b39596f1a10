//! Configuration: defaults, overridden by a TOML file, overridden by `SHOAL_TRACKER_*` env vars,
//! overridden by flags.

use crate::client_addr::{ClientAddrs, ForwardedHeader};
use crate::digest::{DigestConfig, Scheme};
use crate::policy::{Policies, PolicyError, PolicyRule};
use crate::store::BanRule;
use bytesize::ByteSize;
use clap::Parser;
use serde::{Deserialize, Serialize};
use shoal_proto::SwarmPolicy;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Shortest announce interval: the wire carries whole seconds.
pub const MIN_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);
/// Longest announce interval (one hour): past that, dead peers linger for hours.
pub const MAX_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(3600);

/// Everything a tracker instance needs to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address and port the HTTP API (announce, leave, metrics, healthz) listens on.
    pub listen: SocketAddr,
    /// Where swarms live: `memory` (this process only, nothing to install),
    /// `redis://HOST:PORT` or `redis+cluster://HOST:PORT,HOST:PORT,...` (shared by every
    /// tracker instance pointed at the same Redis or Redis Cluster).
    pub store: StoreSpec,
    /// Origins (`host` or `host:port`) the digest service may fetch segments from.
    pub origins: Vec<String>,
    /// Origins reached over plain HTTP, as `HOST=http` (local test origins); others use HTTPS.
    pub origin_schemes: Vec<String>,
    /// Take a segment's digest from the origin's `Repr-Digest` (RFC 9530) answer to a HEAD
    /// request when it sends one, instead of fetching the body.
    pub repr_digest: bool,
    /// How long the digest service keeps a segment's digest, e.g. "10m".
    #[serde(with = "humantime_serde")]
    pub digest_ttl: Duration,
    /// Most digests kept in memory.
    pub digest_cache_entries: u64,
    /// Largest segment the digest service fetches, e.g. "64 MiB".
    pub max_segment_size: ByteSize,
    /// Distinct peers whose reports within two intervals ban a peer from a swarm.
    pub ban_threshold: u32,
    /// How long a ban lasts, e.g. "1h".
    #[serde(with = "humantime_serde")]
    pub ban_duration: Duration,
    /// File of access-token keys, one `<key id> <base64url secret>` per line (see
    /// `shoal-tracker token keygen`). The secrets never appear in this config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_keys_file: Option<PathBuf>,
    /// Refuse announces without a valid access token (needs `auth_keys_file`).
    pub auth_required: bool,
    /// Per-swarm rules, first match wins: `[[policy]] swarm = "prefix*"`, `p2p = false`,
    /// `exclude = ["10.0.0.0/8"]`.
    pub policy: Vec<PolicyRule>,
    /// How often peers must announce, e.g. "20s"; a peer silent for two intervals expires.
    #[serde(with = "humantime_serde")]
    pub announce_interval: Duration,
    /// Whether swarms allow peers to exchange segments; when false, peers use the origin only.
    pub p2p: bool,
    /// Log line format: "text" for people, "json" for log collectors.
    pub log_format: LogFormat,
    /// Load balancers and proxies (CIDRs or addresses) whose `forwarded_header` gives the
    /// client's address; from any other peer the header is ignored.
    pub trusted_proxies: Vec<String>,
    /// The header the trusted proxies append the client's address to: `x-forwarded-for` or
    /// `forwarded` (RFC 7239).
    pub forwarded_header: ForwardedHeader,
    /// PEM certificate chain (leaf first) to serve HTTPS with; needs `tls_key`. Re-read on
    /// SIGHUP. Unset: plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1). Re-read on SIGHUP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// Connections from `trusted_proxies` start with a PROXY protocol header (v1 or v2) naming
    /// the client; connections from other peers are served as direct clients.
    pub proxy_protocol: bool,
    /// PEM file of the CA certificates a `rediss://` or `rediss+cluster://` store is verified
    /// against. Unset: the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_ca: Option<PathBuf>,
}

/// One line of documentation per config key, in file order, for `--print-config`.
const FIELD_DOCS: &[(&str, &str)] = &[
    (
        "listen",
        "Address and port the HTTP API (announce, leave, metrics, healthz) listens on.",
    ),
    (
        "store",
        "Where swarms live: \"memory\" (this process only), \"redis://HOST:PORT\" or \"redis+cluster://HOST:PORT,HOST:PORT,...\" (shared by instances).",
    ),
    (
        "origins",
        "Origins (\"host\" or \"host:port\") the digest service may fetch segments from.",
    ),
    (
        "origin_schemes",
        "Origins reached over plain HTTP, as \"HOST=http\" (local test origins); others use HTTPS.",
    ),
    (
        "repr_digest",
        "Take digests from the origin's Repr-Digest header (RFC 9530) on a HEAD request when it sends one.",
    ),
    (
        "digest_ttl",
        "How long the digest service keeps a segment's digest, e.g. \"10m\".",
    ),
    ("digest_cache_entries", "Most digests kept in memory."),
    (
        "max_segment_size",
        "Largest segment the digest service fetches, e.g. \"64 MiB\".",
    ),
    (
        "ban_threshold",
        "Distinct peers whose reports within two intervals ban a peer from a swarm.",
    ),
    ("ban_duration", "How long a ban lasts, e.g. \"1h\"."),
    (
        "auth_keys_file",
        "File of access-token keys, one \"<key id> <base64url secret>\" per line (shoal-tracker token keygen).",
    ),
    (
        "auth_required",
        "Refuse announces without a valid access token (needs auth_keys_file).",
    ),
    (
        "policy",
        "Per-swarm rules, first match wins: { swarm = \"prefix*\", p2p = false, exclude = [\"10.0.0.0/8\"] }.",
    ),
    (
        "announce_interval",
        "How often peers must announce, e.g. \"20s\"; a peer silent for two intervals expires.",
    ),
    (
        "p2p",
        "Whether swarms allow peers to exchange segments; when false, peers use the origin only.",
    ),
    (
        "log_format",
        "Log line format: \"text\" for people, \"json\" for log collectors.",
    ),
    (
        "trusted_proxies",
        "Load balancers (CIDRs or addresses) whose forwarded_header gives the client's address, e.g. [\"10.0.0.0/8\"].",
    ),
    (
        "forwarded_header",
        "Header the trusted proxies append the client's address to: \"x-forwarded-for\" or \"forwarded\" (RFC 7239).",
    ),
    (
        "tls_cert",
        "PEM certificate chain (leaf first) to serve HTTPS with; needs tls_key; re-read on SIGHUP. Unset: plain HTTP.",
    ),
    (
        "tls_key",
        "PEM private key of tls_cert (PKCS#8, PKCS#1 or SEC1); re-read on SIGHUP.",
    ),
    (
        "proxy_protocol",
        "Connections from trusted_proxies start with a PROXY protocol v1/v2 header naming the client; others are direct clients.",
    ),
    (
        "redis_ca",
        "PEM file of the CA certificates a rediss:// or rediss+cluster:// store is verified against. Unset: the system's roots.",
    ),
];

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 7070)),
            store: StoreSpec::Memory,
            origins: Vec::new(),
            origin_schemes: Vec::new(),
            repr_digest: false,
            digest_ttl: Duration::from_secs(600),
            digest_cache_entries: 100_000,
            max_segment_size: ByteSize::mib(64),
            ban_threshold: 2,
            ban_duration: Duration::from_secs(3600),
            auth_keys_file: None,
            auth_required: false,
            policy: Vec::new(),
            announce_interval: Duration::from_secs(20),
            p2p: true,
            log_format: LogFormat::Text,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            tls_cert: None,
            tls_key: None,
            proxy_protocol: false,
            redis_ca: None,
        }
    }
}

impl Config {
    /// Reads a TOML config file; keys it leaves out keep their defaults.
    pub fn from_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_owned(),
                source,
            },
            other => other,
        })
    }

    /// Parses TOML text; keys it leaves out keep their defaults.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::new(),
            source: Box::new(source),
        })?;
        config.check()?;
        Ok(config)
    }

    /// Rejects values the tracker cannot run with.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.announce_interval < MIN_ANNOUNCE_INTERVAL
            || self.announce_interval > MAX_ANNOUNCE_INTERVAL
        {
            return Err(ConfigError::Interval(self.announce_interval));
        }
        for s in &self.origin_schemes {
            let ok = s.split_once('=').is_some_and(|(host, scheme)| {
                matches!(scheme, "http" | "https")
                    && self.origins.iter().any(|o| o.eq_ignore_ascii_case(host))
            });
            if !ok {
                return Err(ConfigError::OriginScheme(s.clone()));
            }
        }
        if self.ban_threshold == 0 {
            return Err(ConfigError::BanThreshold);
        }
        if self.auth_required && self.auth_keys_file.is_none() {
            return Err(ConfigError::AuthWithoutKeys);
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::TlsPair);
        }
        if self.proxy_protocol && self.trusted_proxies.is_empty() {
            return Err(ConfigError::ProxyProtocolWithoutProxies);
        }
        if self.redis_ca.is_some() && !self.store.is_tls() {
            return Err(ConfigError::RedisCaWithoutTls);
        }
        self.policies()?;
        self.client_addrs()?;
        Ok(())
    }

    /// How client addresses are read: the trusted proxies and their header.
    pub fn client_addrs(&self) -> Result<ClientAddrs, ConfigError> {
        let nets = self
            .trusted_proxies
            .iter()
            .map(|e| {
                crate::policy::parse_net(e).ok_or_else(|| ConfigError::TrustedProxy(e.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ClientAddrs::new(nets, self.forwarded_header))
    }

    /// The digest service's settings.
    pub fn digest(&self) -> DigestConfig {
        let origins = self
            .origins
            .iter()
            .map(|o| {
                let http = self.origin_schemes.iter().any(|s| {
                    s.split_once('=')
                        .is_some_and(|(h, sch)| h.eq_ignore_ascii_case(o) && sch == "http")
                });
                let scheme = if http { Scheme::Http } else { Scheme::Https };
                (o.to_ascii_lowercase(), scheme)
            })
            .collect();
        DigestConfig {
            origins,
            ttl: self.digest_ttl,
            capacity: self.digest_cache_entries,
            max_segment_bytes: self.max_segment_size.as_u64(),
            repr_digest: self.repr_digest,
            fetch_timeout: Duration::from_secs(30),
        }
    }

    /// The per-swarm policies, over the global `p2p` switch.
    pub fn policies(&self) -> Result<Policies, ConfigError> {
        let default = SwarmPolicy {
            p2p: self.p2p,
            ..SwarmPolicy::default()
        };
        Ok(Policies::new(&self.policy, default)?)
    }

    /// When reports ban a peer.
    pub fn ban_rule(&self) -> BanRule {
        BanRule {
            threshold: self.ban_threshold,
            duration: self.ban_duration,
        }
    }

    /// The announce interval in whole seconds, as the wire carries it.
    pub fn interval_secs(&self) -> u32 {
        u32::try_from(self.announce_interval.as_secs()).unwrap_or(u32::MAX)
    }

    /// The config as a TOML file with a comment above every key (what `--print-config` shows).
    pub fn to_documented_toml(&self) -> String {
        let table = toml::Table::try_from(self).unwrap_or_default();
        let mut out = String::from("# shoal-tracker configuration. Every key is optional.\n");
        for (key, doc) in FIELD_DOCS {
            if let Some(value) = table.get(*key) {
                out.push_str(&format!("\n# {doc}\n{key} = {value}\n"));
            }
        }
        out
    }
}

/// Which store holds swarm membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StoreSpec {
    /// In this process's memory.
    Memory,
    /// In the Redis server at this URL (`redis://HOST:PORT[/DB]`).
    Redis(String),
    /// In the Redis Cluster with these seed nodes
    /// (`redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]`).
    RedisCluster(String),
}

/// Scheme of a Redis Cluster store URL.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";
/// Scheme of a Redis Cluster store URL reached over TLS.
pub const TLS_CLUSTER_SCHEME: &str = "rediss+cluster://";

impl StoreSpec {
    /// Whether the store is reached over TLS (`rediss://`, `rediss+cluster://`).
    pub fn is_tls(&self) -> bool {
        match self {
            Self::Memory => false,
            Self::Redis(url) => url.starts_with("rediss://"),
            Self::RedisCluster(url) => url.starts_with(TLS_CLUSTER_SCHEME),
        }
    }
}

/// The seed nodes of a `redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]` URL, each as
/// `redis://[USER:PASSWORD@]HOST:PORT` (the credentials apply to every node); of a
/// `rediss+cluster://` URL, each as `rediss://...` (TLS to every node). The client discovers
/// the other nodes from any seed that answers.
pub fn cluster_nodes(url: &str) -> Result<Vec<String>, ConfigError> {
    let bad = |why: &str| ConfigError::ClusterUrl {
        url: url.to_owned(),
        why: why.to_owned(),
    };
    let (rest, node_scheme) = if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
        (rest, "redis://")
    } else if let Some(rest) = url.strip_prefix(TLS_CLUSTER_SCHEME) {
        (rest, "rediss://")
    } else {
        return Err(bad(
            "it must start with redis+cluster:// (or rediss+cluster:// for TLS)",
        ));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), rest),
    };
    if hosts.contains(['/', '?', '#']) {
        return Err(bad(
            "a cluster has no databases or options: give only HOST:PORT,HOST:PORT,...",
        ));
    }
    let mut nodes = Vec::new();
    for node in hosts.split(',') {
        let (host, port) = node
            .rsplit_once(':')
            .ok_or_else(|| bad(&format!("node {node:?} has no :PORT")))?;
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(bad(&format!("node {node:?} has no host")));
        }
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad(&format!("node {node:?} has no valid port")));
        }
        nodes.push(format!("{node_scheme}{auth}{host}:{port}"));
    }
    Ok(nodes)
}

impl FromStr for StoreSpec {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "memory" {
            Ok(Self::Memory)
        } else if s.starts_with("redis://") || s.starts_with("rediss://") {
            Ok(Self::Redis(s.to_owned()))
        } else if s.starts_with(CLUSTER_SCHEME) || s.starts_with(TLS_CLUSTER_SCHEME) {
            cluster_nodes(s)?;
            Ok(Self::RedisCluster(s.to_owned()))
        } else {
            Err(ConfigError::Store(s.to_owned()))
        }
    }
}

impl TryFrom<String> for StoreSpec {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<StoreSpec> for String {
    fn from(s: StoreSpec) -> Self {
        s.to_string()
    }
}

impl fmt::Display for StoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory => f.write_str("memory"),
            Self::Redis(url) | Self::RedisCluster(url) => f.write_str(url),
        }
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this config.
    #[error("config file {path:?} is invalid: {source}")]
    Parse {
        /// The file (empty when parsing text).
        path: PathBuf,
        /// What the parser said (names the key).
        source: Box<toml::de::Error>,
    },
    /// The store is neither `memory` nor a Redis URL.
    #[error("store {0:?} is not understood: use \"memory\", \"redis://HOST:PORT\" or \"redis+cluster://HOST:PORT,HOST:PORT,...\"")]
    Store(String),
    /// A `redis+cluster://` URL that cannot be used.
    #[error("store {url:?} is not a usable Redis Cluster URL: {why}")]
    ClusterUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// The announce interval is out of range.
    #[error("announce interval {0:?} is out of range: use 1s..=1h")]
    Interval(Duration),
    /// An origin scheme entry is malformed or names a host not in `origins`.
    #[error(
        "origin scheme {0:?} must look like HOST=http or HOST=https, with HOST in the origin list"
    )]
    OriginScheme(String),
    /// `ban_threshold` is 0.
    #[error("ban_threshold must be at least 1")]
    BanThreshold,
    /// A `trusted_proxies` entry is neither a CIDR nor an address.
    #[error("trusted proxy {0:?} is neither a CIDR (10.0.0.0/8, fd00::/8) nor an IP address")]
    TrustedProxy(String),
    /// The `redis_ca` file could not be read.
    #[error("cannot read the redis_ca file {path}: {source}")]
    RedisCaRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Only one of `tls_cert` and `tls_key` is set.
    #[error("tls_cert and tls_key go together: give both (the certificate chain and its private key) or neither")]
    TlsPair,
    /// `proxy_protocol` without proxies to accept the header from.
    #[error("proxy_protocol is set but trusted_proxies is empty: list the load balancers that send the PROXY header (--trusted-proxies CIDR,...)")]
    ProxyProtocolWithoutProxies,
    /// `redis_ca` with a store that does not use TLS.
    #[error("redis_ca is set but the store is not reached over TLS: use a rediss:// or rediss+cluster:// store URL")]
    RedisCaWithoutTls,
    /// `auth_required` without keys to check tokens with.
    #[error("auth_required is set but no auth_keys_file is given: the tracker could not verify any token")]
    AuthWithoutKeys,
    /// A `[[policy]]` rule is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The access-token key file is unreadable or malformed.
    #[error(transparent)]
    Keys(#[from] crate::token::KeyFileError),
}

/// Command line of `shoal-tracker`. Every flag can also come from the environment variable
/// named beside it, or from the TOML file given with `--config`; flags win over the
/// environment, which wins over the file, which wins over the defaults.
#[derive(Debug, Parser)]
#[command(
    name = "shoal-tracker",
    version,
    about = "Shoal tracker: groups peers watching the same video into swarms, hands each peer \
             neighbours to fetch segments from, and sums everyone's byte reports into \
             Prometheus metrics.",
    long_about = None,
    after_help = "Examples:\n  shoal-tracker                                   # memory store on 0.0.0.0:7070\n  \
                  shoal-tracker --store redis://127.0.0.1:6379    # share swarms with other instances\n  \
                  shoal-tracker --store redis+cluster://r1:6379,r2:6379,r3:6379   # on a Redis Cluster\n  \
                  shoal-tracker --tls-cert tls.crt --tls-key tls.key   # HTTPS; SIGHUP re-reads both\n  \
                  shoal-tracker --print-config > tracker.toml     # a config file to edit"
)]
pub struct Cli {
    /// TOML config file; see --print-config for every key and its default.
    #[arg(long, env = "SHOAL_TRACKER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address and port to listen on [default: 0.0.0.0:7070].
    #[arg(long, env = "SHOAL_TRACKER_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Where swarms live: "memory", or to share them between instances "redis://HOST:PORT" (one
    /// Redis server) or "redis+cluster://HOST:PORT,HOST:PORT,..." (seed nodes of a Redis
    /// Cluster); "rediss://" and "rediss+cluster://" for TLS [default: memory].
    #[arg(
        long,
        env = "SHOAL_TRACKER_STORE",
        value_name = "memory|redis://HOST:PORT|redis+cluster://HOST:PORT,..."
    )]
    pub store: Option<StoreSpec>,
    /// Origins the digest service may fetch segments from, comma-separated.
    #[arg(
        long = "origin",
        env = "SHOAL_TRACKER_ORIGIN",
        value_name = "HOST[,HOST...]",
        value_delimiter = ','
    )]
    pub origins: Option<Vec<String>>,
    /// Plain-HTTP origins for the digest service, as HOST=http, comma-separated.
    #[arg(
        long = "origin-scheme",
        env = "SHOAL_TRACKER_ORIGIN_SCHEME",
        value_name = "HOST=http[,...]",
        value_delimiter = ','
    )]
    pub origin_schemes: Option<Vec<String>>,
    /// Take digests from the origin's Repr-Digest header on HEAD when present [default: false].
    #[arg(long, env = "SHOAL_TRACKER_REPR_DIGEST", value_name = "true|false")]
    pub repr_digest: Option<bool>,
    /// Distinct reporters that ban a peer from a swarm [default: 2].
    #[arg(long, env = "SHOAL_TRACKER_BAN_THRESHOLD", value_name = "N")]
    pub ban_threshold: Option<u32>,
    /// File of access-token keys (`<key id> <secret>` lines; see `token keygen`).
    #[arg(long, env = "SHOAL_TRACKER_AUTH_KEYS_FILE", value_name = "FILE")]
    pub auth_keys_file: Option<PathBuf>,
    /// Refuse announces without a valid access token [default: false].
    #[arg(long, env = "SHOAL_TRACKER_AUTH_REQUIRED", value_name = "true|false")]
    pub auth_required: Option<bool>,
    /// How often peers announce, e.g. 20s or 1m; silent for two intervals expires [default: 20s].
    #[arg(long, env = "SHOAL_TRACKER_ANNOUNCE_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub announce_interval: Option<Duration>,
    /// Allow peer-to-peer exchange in swarms (false: origin only) [default: true].
    #[arg(long, env = "SHOAL_TRACKER_P2P", value_name = "true|false")]
    pub p2p: Option<bool>,
    /// Log format [default: text]. Set the level with RUST_LOG, e.g. RUST_LOG=debug.
    #[arg(long, env = "SHOAL_TRACKER_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Load balancers whose forwarded header gives the client's address (CIDRs or addresses,
    /// comma-separated); from other peers the header is ignored [default: none].
    #[arg(
        long,
        env = "SHOAL_TRACKER_TRUSTED_PROXIES",
        value_name = "CIDR[,CIDR...]",
        value_delimiter = ','
    )]
    pub trusted_proxies: Option<Vec<String>>,
    /// Header the trusted proxies append the client's address to [default: x-forwarded-for].
    #[arg(long, env = "SHOAL_TRACKER_FORWARDED_HEADER", value_enum)]
    pub forwarded_header: Option<ForwardedHeader>,
    /// Serve HTTPS with this PEM certificate chain (leaf first); needs --tls-key. Send SIGHUP
    /// to re-read both files after renewing them [default: plain HTTP].
    #[arg(long, env = "SHOAL_TRACKER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "SHOAL_TRACKER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Connections from --trusted-proxies start with a PROXY protocol header (v1 or v2) that
    /// names the client (an L4 load balancer's send-proxy); other peers are direct clients
    /// [default: false].
    #[arg(long, env = "SHOAL_TRACKER_PROXY_PROTOCOL", value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
    pub proxy_protocol: Option<bool>,
    /// CA certificates (PEM) that a rediss:// or rediss+cluster:// store is verified against
    /// [default: the system's roots].
    #[arg(long, env = "SHOAL_TRACKER_REDIS_CA", value_name = "FILE")]
    pub redis_ca: Option<PathBuf>,
    /// Print the effective configuration as a commented TOML file and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Tools instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `shoal-tracker <command>`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Access tokens: make keys, mint tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Signed digest lists: the optional trust anchor for providers who sign their packaging.
    #[command(subcommand)]
    Digests(DigestsCommand),
}

/// `shoal-tracker digests <command>`.
#[derive(Debug, clap::Subcommand)]
pub enum DigestsCommand {
    /// Hash every segment and init section of an HLS media playlist or a DASH MPD (files
    /// relative to it, byte ranges included) and write PLAYLIST<suffix> and its Ed25519
    /// signature PLAYLIST<suffix>.sig. Nodes configured with the public key verify peer bytes
    /// against it. Live: run again whenever the playlist or MPD changes.
    Sign {
        /// Ed25519 private key file, as `token keygen --alg ed25519 --out FILE` writes it.
        #[arg(long, alias = "key", value_name = "FILE")]
        key_file: PathBuf,
        /// Which key of the file signs [default: the first].
        #[arg(long)]
        kid: Option<String>,
        /// The HLS media playlist or the DASH MPD (SegmentTemplate or SegmentList).
        #[arg(long, visible_alias = "mpd", value_name = "FILE")]
        playlist: PathBuf,
        /// Appended to the playlist's name for the list (nodes' `digest_list_suffix`).
        #[arg(long, default_value = shoal_proto::signed_list::DEFAULT_SUFFIX)]
        suffix: String,
    },
}

/// `shoal-tracker token <command>`.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Print a new random HMAC key as a key-file line `<key id> <secret>`, or with
    /// `--alg ed25519` write a key pair: FILE (private, for minting) and FILE.pub (for trackers).
    Keygen {
        /// The key's id, carried in tokens so the tracker knows which key to check.
        #[arg(long, default_value = "k1")]
        kid: String,
        /// Signature algorithm.
        #[arg(long, value_enum, default_value = "hmac")]
        alg: crate::token::Alg,
        /// Where an Ed25519 key pair goes: FILE and FILE.pub (required with `--alg ed25519`).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Print a token for a swarm (or a prefix of swarms), signed with a key from a key file.
    Mint {
        /// Key file: HMAC keys (as `auth_keys_file`) or an Ed25519 private key.
        #[arg(long, alias = "key", value_name = "FILE")]
        key_file: PathBuf,
        /// Algorithm the key must have; a mismatch is an error.
        #[arg(long, value_enum)]
        alg: Option<crate::token::Alg>,
        /// Which key of the file signs [default: the first].
        #[arg(long)]
        kid: Option<String>,
        /// A swarm id, or a prefix of swarm ids followed by `*`.
        #[arg(long, value_name = "PATTERN")]
        swarm: String,
        /// How long the token is valid, e.g. 1h or 30m.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

impl Cli {
    /// The effective configuration: defaults, then the file, then env vars and flags.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.store {
            c.store = v;
        }
        if let Some(v) = self.origins {
            c.origins = v.into_iter().filter(|o| !o.is_empty()).collect();
        }
        if let Some(v) = self.origin_schemes {
            c.origin_schemes = v.into_iter().filter(|o| !o.is_empty()).collect();
        }
        if let Some(v) = self.repr_digest {
            c.repr_digest = v;
        }
        if let Some(v) = self.ban_threshold {
            c.ban_threshold = v;
        }
        if let Some(v) = self.auth_keys_file {
            c.auth_keys_file = Some(v);
        }
        if let Some(v) = self.auth_required {
            c.auth_required = v;
        }
        if let Some(v) = self.announce_interval {
            c.announce_interval = v;
        }
        if let Some(v) = self.p2p {
            c.p2p = v;
        }
        if let Some(v) = self.log_format {
            c.log_format = v;
        }
        if let Some(v) = self.trusted_proxies {
            c.trusted_proxies = v.into_iter().filter(|o| !o.is_empty()).collect();
        }
        if let Some(v) = self.forwarded_header {
            c.forwarded_header = v;
        }
        if let Some(v) = self.tls_cert {
            c.tls_cert = Some(v);
        }
        if let Some(v) = self.tls_key {
            c.tls_key = Some(v);
        }
        if let Some(v) = self.proxy_protocol {
            c.proxy_protocol = v;
        }
        if let Some(v) = self.redis_ca {
            c.redis_ca = Some(v);
        }
        c.check()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_config_round_trips() {
        let c = Config {
            listen: "127.0.0.1:9999".parse().unwrap(),
            store: StoreSpec::Redis("redis://10.0.0.1:6379".into()),
            origins: vec!["cdn.example.com".into(), "127.0.0.1:8000".into()],
            origin_schemes: vec!["127.0.0.1:8000=http".into()],
            repr_digest: true,
            digest_ttl: Duration::from_secs(60),
            digest_cache_entries: 10,
            max_segment_size: ByteSize::mib(8),
            ban_threshold: 3,
            ban_duration: Duration::from_secs(600),
            auth_keys_file: Some("/etc/shoal/keys".into()),
            auth_required: true,
            policy: vec![
                PolicyRule {
                    swarm: "cdn.example.com/premium/*".into(),
                    p2p: Some(false),
                    exclude: vec![],
                },
                PolicyRule {
                    swarm: "*".into(),
                    p2p: None,
                    exclude: vec!["10.0.0.0/8".into(), "192.0.2.7".into()],
                },
            ],
            announce_interval: Duration::from_secs(90),
            p2p: false,
            log_format: LogFormat::Json,
            trusted_proxies: vec!["10.0.0.0/8".into(), "fd00::1".into()],
            forwarded_header: ForwardedHeader::Forwarded,
            tls_cert: Some("/etc/shoal/tls/cert.pem".into()),
            tls_key: Some("/etc/shoal/tls/key.pem".into()),
            proxy_protocol: true,
            redis_ca: None,
        };
        let text = c.to_documented_toml();
        assert_eq!(Config::from_toml(&text).unwrap(), c);
        assert_eq!(
            Config::from_toml(&Config::default().to_documented_toml()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn every_key_is_documented() {
        let table = toml::Table::try_from(Config::default()).unwrap();
        for key in table.keys() {
            assert!(
                FIELD_DOCS.iter().any(|(k, _)| k == key),
                "{key} has no entry in FIELD_DOCS"
            );
        }
        let text = Config::default().to_documented_toml();
        assert!(text.contains("# How often peers must announce"));
        assert!(text.contains("announce_interval = \"20s\""));
    }

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:1000\"\nannounce_interval = \"5s\"\np2p = false\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "shoal-tracker",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:2000",
            "--origin",
            "a.example,b.example:8443",
            "--trusted-proxies",
            "10.0.0.0/8,fd00::1",
            "--forwarded-header",
            "forwarded",
        ])
        .unwrap();
        let c = cli.into_config().unwrap();
        assert_eq!(c.listen, "127.0.0.1:2000".parse().unwrap());
        assert_eq!(c.announce_interval, Duration::from_secs(5));
        assert!(!c.p2p);
        assert_eq!(c.origins, ["a.example", "b.example:8443"]);
        assert_eq!(c.trusted_proxies, ["10.0.0.0/8", "fd00::1"]);
        assert_eq!(c.forwarded_header, ForwardedHeader::Forwarded);
        assert_eq!(c.store, StoreSpec::Memory);
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let e = Config::from_toml("listne = \"1.2.3.4:5\"").unwrap_err();
        assert!(e.to_string().contains("listne"), "{e}");
        let e = Config::from_toml("store = \"postgres://x\"").unwrap_err();
        assert!(e.to_string().contains("redis://"), "{e}");
        let e = Config::from_toml("announce_interval = \"10ms\"").unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = Config::from_toml("origin_schemes = [\"a.example=http\"]").unwrap_err();
        assert!(e.to_string().contains("origin list"), "{e}");
        let e = Config::from_toml("tls_cert = \"c.pem\"").unwrap_err();
        assert!(e.to_string().contains("tls_key"), "{e}");
        let e = Config::from_toml("proxy_protocol = true").unwrap_err();
        assert!(e.to_string().contains("trusted_proxies"), "{e}");
        let e = Config::from_toml("redis_ca = \"ca.pem\"\nstore = \"redis://h:1\"").unwrap_err();
        assert!(e.to_string().contains("rediss://"), "{e}");
        Config::from_toml("redis_ca = \"ca.pem\"\nstore = \"rediss+cluster://h:1\"").unwrap();
        let e = Config::from_toml("auth_required = true").unwrap_err();
        assert!(e.to_string().contains("auth_keys_file"), "{e}");
        let e = Config::from_toml("trusted_proxies = [\"10.0.0.0/33\"]").unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/33"), "{e}");
        let e = Config::from_toml("[[policy]]\nswarm = \"*\"\nexclude = [\"10.0.0.0/40\"]\n")
            .unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/40"), "{e}");
        assert!(Cli::try_parse_from(["shoal-tracker", "--announce-interval", "soon"]).is_err());
        for (url, says) in [
            ("redis+cluster://", "no :PORT"),
            ("redis+cluster://a:1,b", "no :PORT"),
            ("redis+cluster://a:0", "valid port"),
            ("redis+cluster://a:1/2", "no databases"),
            ("rediss+cluster://a:1/0", "no databases"),
        ] {
            let e = url.parse::<StoreSpec>().unwrap_err();
            assert!(e.to_string().contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn a_cluster_url_names_every_seed_node() {
        let spec: StoreSpec = "redis+cluster://u:p@10.0.0.1:7000,[::1]:7001,r3.example:7002/"
            .parse()
            .unwrap();
        let StoreSpec::RedisCluster(url) = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(
            cluster_nodes(url).unwrap(),
            [
                "redis://u:p@10.0.0.1:7000",
                "redis://u:p@[::1]:7001",
                "redis://u:p@r3.example:7002"
            ]
        );
        let tls: StoreSpec = "rediss+cluster://h:1,h:2".parse().unwrap();
        assert!(tls.is_tls());
        assert_eq!(
            cluster_nodes(&tls.to_string()).unwrap(),
            ["rediss://h:1", "rediss://h:2"]
        );
        assert!(!spec.is_tls());
        let c = Config::from_toml("store = \"redis+cluster://h:1,h:2\"").unwrap();
        assert_eq!(c.store.to_string(), "redis+cluster://h:1,h:2");
    }
}
