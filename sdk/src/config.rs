//! Node configuration: documented data, read from TOML by the edge proxy and built in code by
//! apps. Every field has a default; unknown fields are refused so typos do not pass silently.

use crate::manifest::digests;
use crate::manifest::Scheme;
pub use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use shoal_proto::signed_list::{self, ProviderKey};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A rate in bits per second, written like `10Mbit`, `500kbit`, `2MB` (bytes) or a plain number
/// of bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rate {
    bits_per_sec: u64,
}

impl Rate {
    /// From bits per second.
    pub fn from_bits_per_sec(bits_per_sec: u64) -> Self {
        Self { bits_per_sec }
    }

    /// Bytes per second (rounded down, at least 1).
    pub fn bytes_per_sec(&self) -> u64 {
        (self.bits_per_sec / 8).max(1)
    }
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a rate: write e.g. 10Mbit, 500kbit or 2MB"))?;
        let mult = match unit.trim() {
            "" | "bit" | "bps" => 1.0,
            "kbit" | "Kbit" | "kbps" => 1e3,
            "Mbit" | "mbit" | "Mbps" => 1e6,
            "Gbit" | "gbit" | "Gbps" => 1e9,
            "B" => 8.0,
            "kB" | "KB" => 8e3,
            "MB" => 8e6,
            "GB" => 8e9,
            "KiB" => 8.0 * 1024.0,
            "MiB" => 8.0 * 1024.0 * 1024.0,
            other => {
                return Err(format!(
                    "unknown rate unit `{other}` in `{s}`: use bit, kbit, Mbit, Gbit, B, kB, MB, KiB or MiB"
                ))
            }
        };
        Ok(Self {
            bits_per_sec: (n * mult) as u64,
        })
    }
}

impl TryFrom<String> for Rate {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Rate> for String {
    fn from(r: Rate) -> String {
        format!("{}bit", r.bits_per_sec)
    }
}

/// Which peer protocol a node speaks (`docs/protocol.md`). Nodes of one version skip
/// neighbours of the other, with a reason in their log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerTransport {
    /// Peer protocol v2: QUIC over UDP, through home routers (hole punching through the
    /// provider's relay, port mapping), dialled by endpoint id.
    #[default]
    Quic,
    /// Peer protocol v1: HTTP/2 over TLS over TCP to the announced address. For networks that
    /// block UDP between viewers; reaches no one behind a NAT.
    Tcp,
}

impl std::str::FromStr for PeerTransport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "quic" => Ok(PeerTransport::Quic),
            "tcp" => Ok(PeerTransport::Tcp),
            _ => Err(format!("peer transport `{s}`: use quic or tcp")),
        }
    }
}

/// The network a device is on, as the app tells the node ([`crate::Node::set_network`]): it
/// decides whether the node uploads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkKind {
    /// Wi-Fi: uploads allowed (unless `download_only`).
    #[default]
    Wifi,
    /// Wired: uploads allowed (unless `download_only`).
    Ethernet,
    /// Mobile data, usually metered: uploads only with `upload_on_cellular`.
    Cellular,
    /// No network: nothing to upload to.
    Offline,
}

/// Everything a node needs. Defaults suit a player on the same device.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Player front: where players send manifest and segment requests, and where `/metrics`
    /// and `/healthz` answer. Loopback by default: the front is for the local player only.
    pub listen: SocketAddr,
    /// Peer server: where neighbours fetch segments and `haves` (a UDP socket with `quic`, a
    /// TCP one with `tcp`). Port 0 picks a free port.
    pub peer_listen: SocketAddr,
    /// An address other peers should connect to that the node cannot find itself (a port
    /// forwarded by hand, a container's published port). With `quic` it is announced beside
    /// the addresses the node finds (as a `mapped` candidate); with `tcp` it replaces the
    /// bound address (loopback if bound to all interfaces).
    pub peer_advertise: Option<String>,
    /// The peer protocol: `quic` (v2, the default) or `tcp` (v1).
    pub peer_transport: PeerTransport,
    /// The provider's relay (`quic` only), e.g. `https://relay.example.com/`: it coordinates
    /// hole punching, tells the node its public address, and reaches nodes whose UDP is
    /// blocked. Unset: no relay; neighbours are reached at their LAN, public or mapped
    /// addresses only (nobody behind two NATs).
    pub relay: Option<String>,
    /// UDP port of the relay's QUIC address discovery (iroh-relay's default is 7842); 0: the
    /// relay runs none (then the node learns no public address from it).
    pub relay_quic_port: u16,
    /// PEM file of the CA certificate(s) the relay's TLS certificate is checked against,
    /// instead of the built-in web roots (a private relay).
    pub relay_ca: Option<PathBuf>,
    /// Segments may travel through the relay when no direct path opens. Off by default:
    /// relay bytes are the provider's egress, so such neighbours are skipped and the
    /// segment comes from other peers or the origin.
    pub relay_media: bool,
    /// Ask the home router for a port mapping (UPnP IGD, NAT-PMP, PCP), `quic` only.
    pub port_mapping: bool,
    /// How long a new connection may take to go direct before it is given up (unless
    /// `relay_media`).
    #[serde(with = "humantime_serde")]
    pub direct_wait: Duration,
    /// Never upload: announce no address (the tracker then hands the node to nobody) and
    /// refuse every neighbour. The node still downloads from peers.
    pub download_only: bool,
    /// Upload while the app says the device is on mobile data (`Node::set_network`). Off by
    /// default: mobile data is metered, and viewers do not expect to pay for others' video.
    pub upload_on_cellular: bool,
    /// Tracker base URL, e.g. `https://tracker.example.com`. Unset: CDN only, no P2P.
    pub tracker: Option<String>,
    /// PEM file of the CA certificates an `https://` tracker is verified against, instead of
    /// the system's roots and the Mozilla root set (a tracker with a private CA's
    /// certificate).
    pub tracker_ca: Option<PathBuf>,
    /// Access token for the tracker, signed by the content provider.
    pub token: Option<String>,
    /// The content provider's Ed25519 public key for signed digest lists: the line of the
    /// `.pub` file `shoal-tracker token keygen --alg ed25519` writes (`<key id> ed25519
    /// <key>`) or the bare base64 key. Set: bytes from peers are checked only against digests
    /// from the list beside the manifest whose signature this key verifies, never the
    /// tracker's (`docs/security.md`). Unset: the tracker's digest service vouches.
    pub digest_list_key: Option<ProviderKey>,
    /// Appended to a manifest URL's path to find its signed digest list (`stream.m3u8` ->
    /// `stream.m3u8.sha256`); the signature is at the list's URL + `.sig`. Used only with
    /// `digest_list_key`.
    pub digest_list_suffix: String,
    /// Origins the proxy may fetch, as `host` or `host:port`. Anything else is refused (403):
    /// the proxy is never an open proxy.
    pub origins: Vec<String>,
    /// Origins reached over plain HTTP, as `host[:port]=http` (local test origins). Others
    /// use HTTPS.
    pub origin_schemes: Vec<String>,
    /// Byte budget of the segment cache, e.g. `256MiB`.
    pub cache_size: bytesize::ByteSize,
    /// Upload cap toward peers, e.g. `10Mbit`. Unset: no cap.
    pub upload_limit: Option<Rate>,
    /// Download cap over segment bytes received from all peers together, e.g. `20Mbit`
    /// (token bucket, burst of 1/8 s at the cap and at least 16 KiB). The origin is not
    /// capped: what peers cannot deliver in time comes from there. Unset: no cap.
    pub download_limit: Option<Rate>,
    /// Most neighbours per swarm.
    pub max_peers: usize,
    /// Most uploads served at once; more get 503 so the asker goes elsewhere.
    pub max_uploads: usize,
    /// Most segment downloads from peers at once; more wait for one to end.
    pub max_downloads: usize,
    /// Peers never connected to nor downloaded from, as IPs or CIDR blocks (`10.0.0.0/8`,
    /// `192.0.2.7`, `2001:db8::/32`); merged per swarm with the tracker policy's `exclude`.
    #[serde(with = "nets")]
    pub exclude: Vec<IpNet>,
    /// Most time a player's segment request may wait on P2P (a neighbour's `have`, a busy
    /// neighbour, a transfer) before the origin is asked. Within it, the wait is what the
    /// player's estimated buffer allows less `playback_margin` and an origin fetch: a player
    /// with an empty buffer (startup, after a stall) gets the origin at once unless the
    /// segment is cached or on its way.
    #[serde(with = "humantime_serde")]
    pub p2p_budget: Duration,
    /// Media kept in the player's buffer, beyond an origin fetch, when P2P gives up.
    #[serde(with = "humantime_serde")]
    pub playback_margin: Duration,
    /// A peer transfer with no progress for this long is abandoned.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// Less time than this before the deadline is not worth starting a peer transfer.
    #[serde(with = "humantime_serde")]
    pub min_peer_time: Duration,
    /// Seeders per live segment, chosen by rendezvous hashing: the first half fetch it from the
    /// origin at once, the rest (and as many ranks after them, standing in for busy ones) only
    /// while their uplink could pass it on at once; the others wait for a `have`. 0 (the
    /// default) picks by swarm size: the square
    /// root of the members over 1.6, from 1 to 6 (two at 8, four at 32, six from 81), because
    /// each seeder is the root of one relay tree: more roots reach everyone sooner, at the
    /// cost of one origin copy each.
    pub origin_seeders: usize,
    /// VOD: segments ahead of the player's position fetched from peers (never the origin).
    pub vod_readahead: usize,
    /// A swarm with no player request for this long is left.
    #[serde(with = "humantime_serde")]
    pub swarm_idle: Duration,
    /// Largest segment accepted from a peer or the origin.
    pub max_segment_size: bytesize::ByteSize,
    /// Largest manifest the proxy parses and rewrites; larger ones pass through untouched.
    pub max_manifest_size: bytesize::ByteSize,
    /// Fixed node id (for logs and peer ids); random when unset.
    pub node_id: Option<String>,
    /// Directory for the node's persistent state, made at first start, owner-only: its
    /// endpoint key (`peer-endpoint.key`, `quic`) or its peer key and certificate
    /// (`peer-identity.pem`, `tcp`). Unset: a new key in memory each run, so neighbours see a
    /// new key after every restart.
    pub data_dir: Option<PathBuf>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            peer_listen: ([0, 0, 0, 0], 0).into(),
            peer_advertise: None,
            peer_transport: PeerTransport::Quic,
            relay: None,
            relay_quic_port: 7842,
            relay_ca: None,
            relay_media: false,
            port_mapping: true,
            direct_wait: Duration::from_secs(3),
            download_only: false,
            upload_on_cellular: false,
            tracker: None,
            tracker_ca: None,
            token: None,
            digest_list_key: None,
            digest_list_suffix: signed_list::DEFAULT_SUFFIX.into(),
            origins: Vec::new(),
            origin_schemes: Vec::new(),
            cache_size: bytesize::ByteSize::mib(256),
            upload_limit: None,
            download_limit: None,
            max_peers: 20,
            max_uploads: 8,
            max_downloads: 16,
            exclude: Vec::new(),
            p2p_budget: Duration::from_secs(6),
            playback_margin: Duration::from_millis(500),
            stall_timeout: Duration::from_millis(1000),
            min_peer_time: Duration::from_millis(150),
            origin_seeders: 0,
            vod_readahead: 4,
            swarm_idle: Duration::from_secs(60),
            max_segment_size: bytesize::ByteSize::mib(64),
            max_manifest_size: bytesize::ByteSize::mib(8),
            node_id: None,
            data_dir: None,
        }
    }
}

impl NodeConfig {
    /// Checks what serde cannot: returns a message that says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.origins.is_empty() {
            return Err(
                "no origin is allowed: set --origin HOST[:PORT] (the CDN hosts the player's manifests come from)"
                    .into(),
            );
        }
        for s in &self.origin_schemes {
            let Some((host, scheme)) = s.split_once('=') else {
                return Err(format!("origin scheme `{s}` must look like HOST=http"));
            };
            if !matches!(scheme, "http" | "https") {
                return Err(format!("origin scheme `{s}`: scheme must be http or https"));
            }
            if !self.origins.iter().any(|o| o.eq_ignore_ascii_case(host)) {
                return Err(format!(
                    "origin scheme `{s}` names `{host}`, which is not in the origin list"
                ));
            }
        }
        if !digests::valid_suffix(&self.digest_list_suffix) {
            return Err(format!(
                "digest_list_suffix `{}` must be non-empty and hold only letters, digits, `.`, `-`, `_` or `~`",
                self.digest_list_suffix
            ));
        }
        if self.max_peers == 0 || self.max_uploads == 0 || self.max_downloads == 0 {
            return Err("max_peers, max_uploads and max_downloads must be at least 1".into());
        }
        if let Some(r) = &self.relay {
            let u = url::Url::parse(r).map_err(|e| format!("relay `{r}`: {e}"))?;
            if u.scheme() != "https" {
                return Err(format!(
                    "relay `{r}`: use an https URL (the relay's address discovery runs beside TLS)"
                ));
            }
            if self.peer_transport == PeerTransport::Tcp {
                return Err("relay is for peer_transport = quic; remove it or use quic".into());
            }
        }
        if let (Some(a), PeerTransport::Quic) = (&self.peer_advertise, self.peer_transport) {
            a.parse::<SocketAddr>().map_err(|_| {
                format!("peer_advertise `{a}`: with quic, write an ip:port (a UDP address)")
            })?;
        }
        if let Some(id) = &self.node_id {
            shoal_proto::PeerId::new(format!("{id}-00000000"))
                .map_err(|e| format!("node_id: {e}"))?;
        }
        Ok(())
    }

    /// The origin allow-list with each origin's scheme.
    pub fn origin_list(&self) -> Vec<(String, Scheme)> {
        self.origins
            .iter()
            .map(|o| {
                let http = self.origin_schemes.iter().any(|s| {
                    s.split_once('=')
                        .is_some_and(|(h, sch)| h.eq_ignore_ascii_case(o) && sch == "http")
                });
                let scheme = if http { Scheme::Http } else { Scheme::Https };
                (o.to_ascii_lowercase(), scheme)
            })
            .collect()
    }

    /// Largest segment, in bytes.
    pub fn max_segment_bytes(&self) -> u64 {
        self.max_segment_size.as_u64()
    }
}

/// `exclude` as strings: a bare address is read as a one-host block, written as a CIDR.
mod nets {
    use super::IpNet;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(nets.iter().map(IpNet::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|e| crate::peer::exclusions::parse_net(e).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!("10Mbit".parse::<Rate>().unwrap().bytes_per_sec(), 1_250_000);
        assert_eq!("2MB".parse::<Rate>().unwrap().bytes_per_sec(), 2_000_000);
        assert!("ten".parse::<Rate>().is_err());
        assert!("5furlongs".parse::<Rate>().is_err());
    }

    #[test]
    fn config_round_trips_through_toml() {
        let c = NodeConfig {
            origins: vec!["cdn.example.com".into()],
            upload_limit: Some("4Mbit".parse().unwrap()),
            download_limit: Some("8Mbit".parse().unwrap()),
            exclude: vec!["10.0.0.0/8".parse().unwrap()],
            digest_list_key: Some(
                "k1 ed25519 11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
                    .parse()
                    .unwrap(),
            ),
            ..Default::default()
        };
        let text = toml::to_string(&c).unwrap();
        assert!(
            text.contains("digest_list_key = \"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\""),
            "{text}"
        );
        let back: NodeConfig = toml::from_str(&text).unwrap();
        assert_eq!(toml::to_string(&back).unwrap(), text);
        back.validate().unwrap();
    }

    #[test]
    fn exclusions_read_bare_addresses_and_blocks() {
        let c: NodeConfig = toml::from_str("exclude = [\"192.0.2.7\", \"2001:db8::/32\"]").unwrap();
        let text: Vec<String> = c.exclude.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["192.0.2.7/32", "2001:db8::/32"]);
    }

    #[test]
    fn unknown_fields_and_bad_schemes_are_refused() {
        assert!(toml::from_str::<NodeConfig>("cache_sise = \"1MiB\"").is_err());
        assert!(toml::from_str::<NodeConfig>("exclude = [\"10.0.0.0/40\"]").is_err());
        let c = NodeConfig {
            origins: vec!["a.example".into()],
            origin_schemes: vec!["b.example=http".into()],
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("not in the origin list"));
        assert!(NodeConfig::default().validate().is_err());
        let c = NodeConfig {
            origins: vec!["a.example".into()],
            digest_list_suffix: "?list".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("digest_list_suffix"));
        assert!(toml::from_str::<NodeConfig>("digest_list_key = \"k1 hmac x\"").is_err());
    }
}
