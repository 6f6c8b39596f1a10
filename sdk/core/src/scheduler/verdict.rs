//! What a failed peer transfer means: wait for a busy peer, strike a misbehaving one, or
//! back off from one that failed. The driver classifies its transport's error as a
//! [`PeerFailure`]; [`verdict`] decides, and the swarm state records it
//! ([`crate::swarm::SwarmState::record_verdict`]).

use shoal_proto::ReportReason;
use std::time::Duration;

/// Wait before asking a busy peer again when it did not say.
pub const DEFAULT_BUSY_WAIT: Duration = Duration::from_millis(250);
/// Shortest wait a busy peer may ask for (a peer could ask for anything).
pub const MIN_BUSY_WAIT: Duration = Duration::from_millis(20);
/// Longest wait a busy peer may ask for.
pub const MAX_BUSY_WAIT: Duration = Duration::from_secs(5);

/// A failed peer transfer, as the transport saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerFailure {
    /// The peer's uplink is full; it may say when to come back.
    Busy {
        /// What the peer asked for, if anything.
        retry_after: Option<Duration>,
    },
    /// The peer does not hold a segment it announced (a false `have`, or an eviction racing
    /// the request).
    NotFound,
    /// Neither the answer nor body progress came within the stall timeout.
    Stalled,
    /// The peer broke the protocol (lied about lengths, sent garbage).
    Misbehaved,
    /// Anything else: `retryable` when the same peer may well succeed later (it was briefly
    /// unreachable, the connection dropped), false when it will not (it presented another
    /// key than the one vouched for, answered with a status the protocol does not use).
    Other {
        /// Whether asking this peer again later is worthwhile.
        retryable: bool,
    },
}

/// What to do about a failed transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not a failure: come back after `wait`.
    Busy {
        /// How long to leave the peer alone.
        wait: Duration,
    },
    /// A failure: the peer backs off (for good measure when not `retryable`), and with
    /// `strike` it is struck for that reason (banned and reported at
    /// [`super::STRIKES_TO_BAN`]).
    Failed {
        /// The misbehaviour to strike and, at the threshold, report.
        strike: Option<ReportReason>,
        /// Whether the peer may be asked again after its usual back-off.
        retryable: bool,
    },
}

/// The verdict on `failure`. `jitter` in `0.0..1.0` (random, from the caller) spreads the
/// retries of a busy peer's many askers over half as long again as it asked.
pub fn verdict(failure: PeerFailure, jitter: f64) -> Verdict {
    let failed = |strike, retryable| Verdict::Failed { strike, retryable };
    match failure {
        PeerFailure::Busy { retry_after } => {
            let wait = retry_after
                .unwrap_or(DEFAULT_BUSY_WAIT)
                .clamp(MIN_BUSY_WAIT, MAX_BUSY_WAIT);
            Verdict::Busy {
                wait: wait.mul_f64(1.0 + jitter.clamp(0.0, 1.0) * 0.5),
            }
        }
        // We only ask peers that announced the segment: a 404 is a false `have`.
        PeerFailure::NotFound => failed(Some(ReportReason::FalseHave), true),
        PeerFailure::Stalled => failed(Some(ReportReason::Stall), true),
        PeerFailure::Misbehaved => failed(Some(ReportReason::Stall), false),
        PeerFailure::Other { retryable } => failed(None, retryable),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_peer_is_waited_for_within_bounds_and_spread() {
        let asked = |s| PeerFailure::Busy {
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(
            verdict(asked(60), 0.0),
            Verdict::Busy {
                wait: MAX_BUSY_WAIT
            }
        );
        assert_eq!(
            verdict(PeerFailure::Busy { retry_after: None }, 1.0),
            Verdict::Busy {
                wait: DEFAULT_BUSY_WAIT.mul_f64(1.5)
            }
        );
        assert_eq!(
            verdict(asked(0), 0.0),
            Verdict::Busy {
                wait: MIN_BUSY_WAIT
            }
        );
    }

    #[test]
    fn false_haves_stalls_and_garbage_are_struck_other_failures_are_not() {
        let strike = |f| match verdict(f, 0.0) {
            Verdict::Failed { strike, .. } => strike,
            Verdict::Busy { .. } => panic!("not busy"),
        };
        assert_eq!(strike(PeerFailure::NotFound), Some(ReportReason::FalseHave));
        assert_eq!(strike(PeerFailure::Stalled), Some(ReportReason::Stall));
        assert_eq!(strike(PeerFailure::Misbehaved), Some(ReportReason::Stall));
        assert_eq!(strike(PeerFailure::Other { retryable: true }), None);
        assert_eq!(
            verdict(PeerFailure::Other { retryable: false }, 0.0),
            Verdict::Failed {
                strike: None,
                retryable: false
            }
        );
    }
}
