//! Wire types of the Shoal tracker API v1 and peer protocol v1.
//!
//! No I/O: shared by the SDK (client side) and the tracker (server side). Besides the JSON
//! shapes, [`signed_list`] is the provider-signed digest list's format.
//! `docs/protocol.md` documents every shape here with examples.
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};
use std::fmt;

pub mod addr;
pub mod signed_list;

pub use addr::{Announced, CandidateKind};

/// Version of the tracker API and peer protocol this crate describes. Requests carry it in
/// `proto`; a server answers 400 to any other value.
pub const PROTOCOL_VERSION: u16 = 1;

/// Longest peer id, in bytes.
pub const MAX_PEER_ID_LEN: usize = 64;
/// Longest swarm id, in bytes.
pub const MAX_SWARM_ID_LEN: usize = 256;
/// Longest segment key, in bytes.
pub const MAX_SEGMENT_KEY_LEN: usize = 512;
/// Most addresses a peer may announce (v2: local, reflexive and mapped candidates for IPv4
/// and IPv6, and its relay).
pub const MAX_ADDRS: usize = 8;
/// Longest announced address, in bytes (`[ipv6%scope]:port` fits).
pub const MAX_ADDR_LEN: usize = 64;
/// Longest key fingerprint (hex SHA-256 is 64).
pub const MAX_FINGERPRINT_LEN: usize = 64;
/// Longest client version string.
pub const MAX_CLIENT_VERSION_LEN: usize = 64;
/// Most neighbours one announce may ask for.
pub const MAX_NUMWANT: u32 = 200;
/// Neighbours handed out when the request does not say.
pub const DEFAULT_NUMWANT: u32 = 20;
/// Largest byte count one report may carry per counter (1 TiB): far above what any device
/// moves in one announce interval, far below what could overflow the fleet sums.
pub const MAX_REPORTED_BYTES: u64 = 1 << 40;

/// Why an id or field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidField {
    /// The field is empty but must not be.
    #[error("{field} is empty")]
    Empty {
        /// Field name as it appears on the wire.
        field: &'static str,
    },
    /// The field is longer than the protocol allows.
    #[error("{field} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// Field name as it appears on the wire.
        field: &'static str,
        /// Actual length.
        len: usize,
        /// Allowed maximum.
        max: usize,
    },
    /// The field holds characters the protocol does not allow.
    #[error("{field} may only hold {allowed}")]
    BadChars {
        /// Field name as it appears on the wire.
        field: &'static str,
        /// Human description of the allowed characters.
        allowed: &'static str,
    },
    /// A number is outside its allowed range.
    #[error("{field} is {value}; allowed range is {min}..={max}")]
    OutOfRange {
        /// Field name as it appears on the wire.
        field: &'static str,
        /// Value received.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// The protocol version is not one this build speaks.
    #[error(
        "protocol version {0} is not supported; this server speaks version {PROTOCOL_VERSION}"
    )]
    Version(u16),
}

fn check_len(field: &'static str, s: &str, max: usize) -> Result<(), InvalidField> {
    if s.is_empty() {
        return Err(InvalidField::Empty { field });
    }
    if s.len() > max {
        return Err(InvalidField::TooLong {
            field,
            len: s.len(),
            max,
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $ok:expr, $allowed:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wire name of this field.
            pub const FIELD: &'static str = $field;

            /// Checks and wraps `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, InvalidField> {
                let s = s.into();
                Self::check(&s)?;
                Ok(Self(s))
            }

            /// Checks a value that came off the wire (serde does not call `new`).
            pub fn validate(&self) -> Result<(), InvalidField> {
                Self::check(&self.0)
            }

            fn check(s: &str) -> Result<(), InvalidField> {
                check_len($field, s, $max)?;
                let ok: fn(char) -> bool = $ok;
                if !s.chars().all(ok) {
                    return Err(InvalidField::BadChars { field: $field, allowed: $allowed });
                }
                Ok(())
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn printable_char(c: char) -> bool {
    c.is_ascii_graphic()
}

string_id!(
    /// A peer's id: one per (node, swarm), chosen by the node, `[A-Za-z0-9._-]`, 1..=64 bytes.
    PeerId, "peer_id", MAX_PEER_ID_LEN, id_char, "ASCII letters, digits, '.', '_' and '-'"
);
string_id!(
    /// A swarm: the peers that play the same rendition of the same content. Printable ASCII
    /// (a canonical URL without query, or an id the app sets), 1..=256 bytes.
    SwarmId, "swarm_id", MAX_SWARM_ID_LEN, printable_char, "printable ASCII without spaces"
);
string_id!(
    /// A segment's identity within a swarm, the same for every viewer whatever query token
    /// their URL carries. Printable ASCII, 1..=512 bytes.
    SegmentKey, "segment", MAX_SEGMENT_KEY_LEN, printable_char, "printable ASCII without spaces"
);

/// Bytes moved since the previous report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByteCounters {
    /// Bytes delivered to the player that came from the origin CDN.
    #[serde(default)]
    pub cdn: u64,
    /// Bytes delivered to the player that came from peers.
    #[serde(default)]
    pub p2p: u64,
    /// Bytes uploaded to other peers.
    #[serde(default)]
    pub upload: u64,
}

impl ByteCounters {
    /// Checks every counter against [`MAX_REPORTED_BYTES`].
    pub fn validate(&self) -> Result<(), InvalidField> {
        for (field, value) in [
            ("counters.cdn", self.cdn),
            ("counters.p2p", self.p2p),
            ("counters.upload", self.upload),
        ] {
            if value > MAX_REPORTED_BYTES {
                return Err(InvalidField::OutOfRange {
                    field,
                    value,
                    min: 0,
                    max: MAX_REPORTED_BYTES,
                });
            }
        }
        Ok(())
    }

    /// True when nothing moved.
    pub fn is_zero(&self) -> bool {
        self.cdn == 0 && self.p2p == 0 && self.upload == 0
    }
}

/// Most peer connections one report may count per path (far above what a node opens in one
/// announce interval).
pub const MAX_REPORTED_CONNECTIONS: u32 = 100_000;

/// Peer connections a node opened since the previous report (peer protocol v2), by the path
/// each took, and the attempts that found no path it may use: the tracker's fleet-wide
/// reach figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathCounters {
    /// Direct to a private address (same LAN).
    #[serde(default)]
    pub lan: u32,
    /// Direct to a public address, no NAT traversed.
    #[serde(default)]
    pub direct: u32,
    /// Direct after hole punching.
    #[serde(default)]
    pub punched: u32,
    /// Direct to a port mapped on the neighbour's router.
    #[serde(default)]
    pub mapped: u32,
    /// Through the relay (only when the relay may carry media).
    #[serde(default)]
    pub relay: u32,
    /// Attempts that reached no path the node may use (no direct path, unreachable).
    #[serde(default)]
    pub failed: u32,
}

impl PathCounters {
    /// The counters with their wire names, in a fixed order.
    pub fn fields(&self) -> [(&'static str, u32); 6] {
        [
            ("lan", self.lan),
            ("direct", self.direct),
            ("punched", self.punched),
            ("mapped", self.mapped),
            ("relay", self.relay),
            ("failed", self.failed),
        ]
    }

    /// Checks every counter against [`MAX_REPORTED_CONNECTIONS`].
    pub fn validate(&self) -> Result<(), InvalidField> {
        const WIRE: [&str; 6] = [
            "connections.lan",
            "connections.direct",
            "connections.punched",
            "connections.mapped",
            "connections.relay",
            "connections.failed",
        ];
        for ((_, value), field) in self.fields().into_iter().zip(WIRE) {
            if value > MAX_REPORTED_CONNECTIONS {
                return Err(InvalidField::OutOfRange {
                    field,
                    value: value.into(),
                    min: 0,
                    max: MAX_REPORTED_CONNECTIONS.into(),
                });
            }
        }
        Ok(())
    }

    /// True when nothing was counted.
    pub fn is_zero(&self) -> bool {
        self.fields().iter().all(|(_, v)| *v == 0)
    }
}

fn default_numwant() -> u32 {
    DEFAULT_NUMWANT
}

/// `POST /v1/announce`: join a swarm or refresh membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnounceRequest {
    /// Protocol version; must be [`PROTOCOL_VERSION`].
    pub proto: u16,
    /// The announcing peer.
    pub peer_id: PeerId,
    /// The swarm it joins or refreshes.
    pub swarm_id: SwarmId,
    /// Where other peers can reach it, in the forms of [`addr`] (`ip:port` for peer protocol
    /// v1; `local:`/`reflexive:`/`mapped:ip:port` and `relay:URL` for v2); may be empty for a
    /// peer that only downloads.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// The key the tracker vouches for: the hex ed25519 endpoint id of a v2 node, or the hex
    /// SHA-256 of a v1 node's certificate; empty until the peer has a key.
    #[serde(default)]
    pub fingerprint: String,
    /// Bytes moved since the previous announce.
    #[serde(default)]
    pub counters: ByteCounters,
    /// Peer connections opened since the previous announce, by path (absent when none).
    #[serde(default, skip_serializing_if = "PathCounters::is_zero")]
    pub connections: PathCounters,
    /// How many neighbours the peer wants, 0..=[`MAX_NUMWANT`].
    #[serde(default = "default_numwant")]
    pub numwant: u32,
    /// Free-form client version, e.g. `shoal-edge/0.1.0`.
    pub client_version: String,
    /// The secret the tracker handed out on this peer id's first announce. Absent on the first
    /// announce; required afterwards, so nobody else can announce under this peer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_key: Option<String>,
    /// Access token signed by the content provider (required when the tracker has auth on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl AnnounceRequest {
    /// Checks every field's bounds. Returns the first problem found.
    pub fn validate(&self) -> Result<(), InvalidField> {
        if self.proto != PROTOCOL_VERSION {
            return Err(InvalidField::Version(self.proto));
        }
        self.peer_id.validate()?;
        self.swarm_id.validate()?;
        if self.addrs.len() > MAX_ADDRS {
            return Err(InvalidField::OutOfRange {
                field: "addrs",
                value: self.addrs.len() as u64,
                min: 0,
                max: MAX_ADDRS as u64,
            });
        }
        for a in &self.addrs {
            check_len("addrs[]", a, MAX_ADDR_LEN)?;
            if !a.chars().all(printable_char) {
                return Err(InvalidField::BadChars {
                    field: "addrs[]",
                    allowed: "printable ASCII without spaces",
                });
            }
        }
        if self.fingerprint.len() > MAX_FINGERPRINT_LEN {
            return Err(InvalidField::TooLong {
                field: "fingerprint",
                len: self.fingerprint.len(),
                max: MAX_FINGERPRINT_LEN,
            });
        }
        if !self.fingerprint.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(InvalidField::BadChars {
                field: "fingerprint",
                allowed: "hex digits",
            });
        }
        if self.client_version.len() > MAX_CLIENT_VERSION_LEN {
            return Err(InvalidField::TooLong {
                field: "client_version",
                len: self.client_version.len(),
                max: MAX_CLIENT_VERSION_LEN,
            });
        }
        if self.numwant > MAX_NUMWANT {
            return Err(InvalidField::OutOfRange {
                field: "numwant",
                value: self.numwant.into(),
                min: 0,
                max: MAX_NUMWANT.into(),
            });
        }
        if let Some(k) = &self.peer_key {
            check_len("peer_key", k, 128)?;
        }
        self.connections.validate()?;
        self.counters.validate()
    }
}

/// One neighbour handed out by the tracker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbour {
    /// The neighbour's peer id.
    pub peer_id: PeerId,
    /// Where it can be reached (the forms of [`addr`]).
    pub addrs: Vec<String>,
    /// Its key: a v2 endpoint id or a v1 certificate's SHA-256, in hex (empty if none yet).
    #[serde(default)]
    pub fingerprint: String,
}

/// What the tracker allows in a swarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmPolicy {
    /// Whether peers may exchange segments at all; when false, fetch from the origin only.
    pub p2p: bool,
    /// Upload cap per peer in bytes per second, if the provider sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_limit_bps: Option<u64>,
    /// IPs and CIDR blocks (`10.0.0.0/8`, `192.0.2.7/32`) a node must not connect to in this
    /// swarm; the tracker already leaves them out of neighbour lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

impl Default for SwarmPolicy {
    fn default() -> Self {
        Self {
            p2p: true,
            upload_limit_bps: None,
            exclude: Vec::new(),
        }
    }
}

/// Answer to a successful announce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceResponse {
    /// Seconds until the next announce is due; a peer silent for two intervals expires.
    pub interval_secs: u32,
    /// The secret to present as `peer_key` on later announces and on leave.
    pub peer_key: String,
    /// Up to `numwant` other peers of the swarm.
    pub neighbours: Vec<Neighbour>,
    /// What the swarm allows.
    pub policy: SwarmPolicy,
}

/// `POST /v1/leave`: leave a swarm now rather than expire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaveRequest {
    /// Protocol version; must be [`PROTOCOL_VERSION`].
    pub proto: u16,
    /// The leaving peer.
    pub peer_id: PeerId,
    /// The swarm it leaves.
    pub swarm_id: SwarmId,
    /// The secret from its announces.
    pub peer_key: String,
    /// Bytes moved since the last announce, so the final interval is counted too.
    #[serde(default)]
    pub counters: ByteCounters,
}

impl LeaveRequest {
    /// Checks every field's bounds.
    pub fn validate(&self) -> Result<(), InvalidField> {
        if self.proto != PROTOCOL_VERSION {
            return Err(InvalidField::Version(self.proto));
        }
        self.peer_id.validate()?;
        self.swarm_id.validate()?;
        check_len("peer_key", &self.peer_key, 128)?;
        self.counters.validate()
    }
}

/// Body of every 4xx/5xx answer of the tracker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid_field`, `peer_key_mismatch`.
    pub error: String,
    /// What is wrong and what to do, for a person.
    pub message: String,
}

/// Answer of `GET /v1/digest?swarm=<swarm_id>&segment=<segment key>`: the trusted SHA-256 of a
/// segment, computed by the tracker from the origin's own bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestResponse {
    /// The segment the digest is for.
    pub segment: SegmentKey,
    /// Lower-case hex SHA-256 of the segment's bytes (of its byte range, for ranged keys).
    pub sha256: String,
    /// Length of the segment in bytes.
    pub size: u64,
}

/// Why a peer is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportReason {
    /// It served bytes whose digest did not match the trusted one.
    Integrity,
    /// It announced segments it then did not serve.
    FalseHave,
    /// Its transfers stall mid-body.
    Stall,
    /// It floods requests.
    Flood,
}

/// `POST /v1/report`: a peer reports a misbehaving neighbour. The tracker stops handing out a
/// peer that enough distinct peers report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// Protocol version; must be [`PROTOCOL_VERSION`].
    pub proto: u16,
    /// The reporting peer.
    pub peer_id: PeerId,
    /// The swarm both are in.
    pub swarm_id: SwarmId,
    /// The reporter's secret (so nobody reports in another peer's name).
    pub peer_key: String,
    /// The peer being reported.
    pub offender: PeerId,
    /// What it did.
    pub reason: ReportReason,
    /// The segment concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentKey>,
}

impl ReportRequest {
    /// Checks every field's bounds.
    pub fn validate(&self) -> Result<(), InvalidField> {
        if self.proto != PROTOCOL_VERSION {
            return Err(InvalidField::Version(self.proto));
        }
        self.peer_id.validate()?;
        self.swarm_id.validate()?;
        self.offender.validate()?;
        check_len("peer_key", &self.peer_key, 128)?;
        if let Some(s) = &self.segment {
            s.validate()?;
        }
        Ok(())
    }
}

/// One line of the peer protocol's `haves` stream (NDJSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum HaveMsg {
    /// First line: every segment the node holds for this swarm now.
    Snapshot {
        /// The segments held.
        segments: Vec<SegmentKey>,
    },
    /// The node now holds one more segment.
    Have {
        /// The segment now held.
        segment: SegmentKey,
    },
    /// The node no longer holds a segment (evicted).
    Lost {
        /// The segment dropped.
        segment: SegmentKey,
    },
    /// The node's uplink takes uploads again after it answered "busy": a neighbour told to
    /// come back later may ask now (a capped uplink often frees early, when the transfer it
    /// was busy with is cut by its downloader's deadline).
    Free,
    /// A line of a later protocol revision: skipped, so that new message types do not break
    /// older readers' streams.
    #[serde(other)]
    Unknown,
}

/// Longest line a `haves` stream may carry; a reader drops the connection past it.
pub const MAX_HAVE_LINE: usize = 256 * 1024;

impl HaveMsg {
    /// Parses one NDJSON line and checks every key's bounds.
    pub fn parse_line(line: &[u8]) -> Result<Self, HaveParseError> {
        if line.len() > MAX_HAVE_LINE {
            return Err(HaveParseError::TooLong(line.len()));
        }
        let msg: HaveMsg = serde_json::from_slice(line).map_err(HaveParseError::Json)?;
        match &msg {
            HaveMsg::Snapshot { segments } => {
                for s in segments {
                    s.validate().map_err(HaveParseError::Field)?;
                }
            }
            HaveMsg::Have { segment } | HaveMsg::Lost { segment } => {
                segment.validate().map_err(HaveParseError::Field)?
            }
            HaveMsg::Free | HaveMsg::Unknown => {}
        }
        Ok(msg)
    }
}

/// Why a `haves` line was refused.
#[derive(Debug, thiserror::Error)]
pub enum HaveParseError {
    /// Line longer than [`MAX_HAVE_LINE`].
    #[error("have line of {0} bytes exceeds the limit")]
    TooLong(usize),
    /// Not the JSON the protocol defines.
    #[error("malformed have line: {0}")]
    Json(serde_json::Error),
    /// A segment key out of bounds.
    #[error("bad segment key in have line: {0}")]
    Field(InvalidField),
}

/// A byte range within a resource (`EXT-X-BYTERANGE`, `BYTERANGE=` of `EXT-X-MAP`, an entry of
/// a signed digest list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// Number of bytes.
    pub length: u64,
}

impl ByteRange {
    /// One past the last byte (where a following range without offset starts).
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.length)
    }

    /// The HTTP `Range` header value, `bytes=first-last`; `None` for an empty range.
    pub fn http_range(&self) -> Option<String> {
        let last = self.end().checked_sub(1).filter(|&l| l >= self.offset)?;
        Some(format!("bytes={}-{last}", self.offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> AnnounceRequest {
        AnnounceRequest {
            proto: 1,
            peer_id: PeerId::new("p1").unwrap(),
            swarm_id: SwarmId::new("cdn.example.com/live/720p.m3u8").unwrap(),
            addrs: vec!["127.0.0.1:9000".into()],
            fingerprint: String::new(),
            counters: ByteCounters::default(),
            connections: PathCounters::default(),
            numwant: 20,
            client_version: "test/1".into(),
            peer_key: None,
            token: None,
        }
    }

    #[test]
    fn announce_round_trips_and_validates() {
        let r = req();
        let s = serde_json::to_string(&r).unwrap();
        let back: AnnounceRequest = serde_json::from_str(&s).unwrap();
        assert_eq!(back, r);
        back.validate().unwrap();
    }

    #[test]
    fn bounds_are_enforced() {
        let mut r = req();
        r.numwant = MAX_NUMWANT + 1;
        assert!(matches!(
            r.validate(),
            Err(InvalidField::OutOfRange {
                field: "numwant",
                ..
            })
        ));
        let mut r = req();
        r.counters.p2p = u64::MAX;
        assert!(r.validate().is_err());
        let mut r = req();
        r.proto = 2;
        assert_eq!(r.validate(), Err(InvalidField::Version(2)));
        assert!(PeerId::new("x".repeat(65)).is_err());
        assert!(PeerId::new("a b").is_err());
        assert!(SwarmId::new("").is_err());
        let wire = r#"{"proto":1,"peer_id":"has space","swarm_id":"s","client_version":"v"}"#;
        let r: AnnounceRequest = serde_json::from_str(wire).unwrap();
        assert!(r.validate().is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let wire = r#"{"proto":1,"peer_id":"a","swarm_id":"s","client_version":"v","evil":1}"#;
        assert!(serde_json::from_str::<AnnounceRequest>(wire).is_err());
    }

    #[test]
    fn have_lines_parse() {
        let m = HaveMsg::parse_line(br#"{"t":"have","segment":"abc/1"}"#).unwrap();
        assert_eq!(
            m,
            HaveMsg::Have {
                segment: SegmentKey::new("abc/1").unwrap()
            }
        );
        assert!(HaveMsg::parse_line(br#"{"t":"have","segment":""}"#).is_err());
        assert!(HaveMsg::parse_line(b"junk").is_err());
        assert_eq!(
            HaveMsg::parse_line(br#"{"t":"free"}"#).unwrap(),
            HaveMsg::Free
        );
        assert_eq!(
            serde_json::to_string(&HaveMsg::Free).unwrap(),
            r#"{"t":"free"}"#
        );
        // A message type of a later revision is skipped, not an error that ends the stream.
        assert_eq!(
            HaveMsg::parse_line(br#"{"t":"pieces","segment":"abc/1","bits":"ff"}"#).unwrap(),
            HaveMsg::Unknown
        );
        assert!(HaveMsg::parse_line(br#"{"segment":"abc/1"}"#).is_err());
    }

    proptest::proptest! {
        #[test]
        fn have_parser_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = HaveMsg::parse_line(&bytes);
        }
    }
}
