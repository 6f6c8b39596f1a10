//! Shoal's UDP peer transport (peer protocol v2): QUIC endpoints that reach each other
//! through home routers, built on [iroh](https://docs.rs/iroh) 1.x.
//!
//! - A node binds a [`PeerEndpoint`] with its own ed25519 secret key, the provider's relay(s)
//!   and the ALPN [`ALPN_V2`]. No public discovery (no DNS, no pkarr) and no public relays:
//!   the endpoint only talks to the relays in its [`PeerConfig`] and to the addresses it is
//!   told to dial.
//! - [`PeerEndpoint::endpoint_addr`] is what it announces to the tracker ([`PeerAddr`]): its
//!   endpoint id, home relay and direct candidates with their kinds (local, reflexive,
//!   mapped).
//! - [`PeerEndpoint::connect`] dials a [`PeerAddr`] and only ever completes with the endpoint
//!   whose id it names: the TLS handshake proves possession of that id's secret key, so the id
//!   is the key the tracker vouches for (in v1 a certificate fingerprint played that role).
//! - Connections start on the relay and move to a direct path once hole punching succeeds;
//!   [`PeerConnection::path`] says which path carries the data now ([`PathKind`]).
//! - `relay::RelayServer` (feature `relay-server`, on by default) runs the provider's relay
//!   (iroh-relay) in-process, with QUIC address discovery, so it can live inside or beside
//!   the tracker. Nodes can leave the feature out.
//!
//! See `docs/transport.md` for the choice of iroh, the measurements and the protocol v2
//! proposal.

pub mod addr;
mod connection;
mod endpoint;
#[cfg(feature = "relay-server")]
pub mod relay;

pub use addr::{AddrKind, DirectAddr, PeerAddr, TrackerAddr};
pub use connection::{classify_path, PathKind, PeerConnection, PeerRequest, DEFAULT_MAX_MESSAGE};
pub use endpoint::{
    load_or_generate_secret_key, IncomingPeer, NatGuess, Observed, PeerConfig, PeerEndpoint,
    RelayNode,
};
pub use iroh::{EndpointId, RelayUrl, SecretKey};

use std::time::Duration;

/// ALPN of Shoal's peer protocol v2 (QUIC). Peer protocol v1 is HTTP/2 over TLS over TCP with
/// ALPN `h2`: the two never share a socket, and a v2 endpoint refuses any other ALPN in its
/// TLS handshake ([`TransportError::WrongProtocol`] on both sides).
pub const ALPN_V2: &[u8] = b"shoal/p2p/2";

/// Why a transport operation failed. [`TransportError::is_retryable`] says whether the same
/// operation may succeed later.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The configuration makes no sense (no ALPN, a relay URL that is not https, a CA that does
    /// not parse). Fix the configuration. Not retryable.
    #[error("invalid transport configuration: {0}")]
    InvalidConfig(String),
    /// The endpoint could not bind its UDP socket (address in use, no such address). Check
    /// the bind address. Not retryable with the same address.
    #[error("cannot bind the peer endpoint: {0}")]
    Bind(String),
    /// A peer address (compact string or tracker fields) did not parse. The message names
    /// the part. Not retryable: the input is wrong.
    #[error("invalid peer address: {0}")]
    InvalidAddr(String),
    /// The address names this endpoint itself. Not retryable.
    #[error("refusing to connect to this endpoint itself")]
    SelfConnect,
    /// No path to the peer: none of its addresses answered and its relay did not reach it
    /// within the connect timeout. Retryable (it may be starting, or its relay connection
    /// was down).
    #[error("cannot reach peer {peer}: {detail}")]
    Unreachable {
        /// Short form of the endpoint id.
        peer: String,
        /// What failed.
        detail: String,
    },
    /// The peer does not speak our protocol version: its TLS handshake offered or accepted no
    /// ALPN we speak (an older or newer Shoal, or not Shoal at all). Not retryable; one side
    /// must be upgraded.
    #[error("peer protocol mismatch: we speak {ours}; {detail}")]
    WrongProtocol {
        /// Our ALPN.
        ours: String,
        /// What the handshake said.
        detail: String,
    },
    /// The endpoint that answered could not prove it holds the key of the endpoint id we
    /// dialled (or the handshake's authentication failed otherwise): an impostor, or a stale
    /// address now used by another node. Not retryable at this address.
    #[error("peer failed authentication as the endpoint id we dialled: {0}")]
    Authentication(String),
    /// The peer closed the connection on purpose, with its reason. Retryable only if the
    /// reason says so (e.g. busy); treated as not retryable here.
    #[error("peer closed the connection: {0}")]
    Refused(String),
    /// An established connection or stream failed (idle timeout, reset, peer gone).
    /// Retryable.
    #[error("peer connection lost: {0}")]
    ConnectionLost(String),
    /// An operation did not finish within its bound. Retryable.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The peer sent more than the bound for one message. Misbehaviour or a mismatched
    /// configuration; not retryable.
    #[error("peer sent a message over {limit} bytes")]
    TooLarge {
        /// The bound.
        limit: usize,
    },
    /// This endpoint is closed (shutting down). Not retryable.
    #[error("the peer endpoint is closed")]
    Closed,
    /// The relay server could not start (bind, TLS). Not retryable with the same config.
    #[error("cannot start the relay server: {0}")]
    Relay(String),
}

impl TransportError {
    /// The same operation may well succeed later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TransportError::Unreachable { .. }
                | TransportError::ConnectionLost(_)
                | TransportError::Timeout(_)
        )
    }
}

/// `Result` with [`TransportError`].
pub type Result<T, E = TransportError> = std::result::Result<T, E>;

/// Renders an error and its sources on one line (iroh's errors nest several levels).
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    let mut n = 0;
    while let Some(e) = cur {
        let part = e.to_string();
        if !s.contains(&part) {
            s.push_str(": ");
            s.push_str(&part);
        }
        cur = e.source();
        n += 1;
        if n > 16 {
            break;
        }
    }
    s
}
