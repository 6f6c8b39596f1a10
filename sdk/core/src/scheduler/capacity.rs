//! Whether a swarm's uplinks can carry its stream: the rate one peer transfer runs at,
//! against the rate the stream plays at. Pure data, fed by the fetch engine.
//!
//! When one transfer runs slower than the stream plays (a capped or thin home uplink, a
//! high bitrate), a segment cannot travel down a chain of relays in time: every transfer
//! ends at its player's deadline and the origin sends the rest. Peers can then carry at
//! most their share of the stream, and the origin the remainder, whatever the scheduler
//! does. What the scheduler can choose is *when* those origin bytes are fetched: at a
//! deadline, where they serve one player and nobody else, or as soon as the segment appears,
//! where they give a node with an idle uplink something every other member still lacks
//! (`scheduler::SeedRole::Supply`). Measured in `docs/benchmarks.md` ("A swarm whose
//! uplinks are slower than its stream").

use std::time::Duration;

/// A transfer sample counts only when it carried at least this many bytes...
pub const MIN_SAMPLE_BYTES: u64 = 32 * 1024;
/// ...over at least this long from its first byte: shorter ones measure latency, not rate.
pub const MIN_SAMPLE_TIME: Duration = Duration::from_millis(250);
/// Transfer samples needed before the estimate is trusted.
pub const MIN_SAMPLES: u32 = 4;
/// The swarm is taken as short of uplink below this ratio of transfer rate to stream rate,
/// and as having enough again above [`ENOUGH`] (the gap keeps a ratio near 1 from flapping).
pub const SHORT: f64 = 0.95;
/// See [`SHORT`].
pub const ENOUGH: f64 = 1.1;
/// Weight of the newest sample in both averages.
const ALPHA: f64 = 0.2;

/// Ranks allowed to supply, as a multiple of the share peers cannot carry (see
/// [`supply_ranks`]).
pub const SUPPLY_MARGIN: f64 = 1.5;

/// How many ranks of a fresh segment's rendezvous order may supply it when the swarm is
/// [`Capacity::short`]: the share of the stream peers cannot carry, `1 - ratio`, of the
/// `members`, times [`SUPPLY_MARGIN`] (only the idle ones among them do, and not every
/// supplier finds a downstream in time). Without a bound, every member whose uplink is idle
/// when a segment appears supplies it, and where players all ask at one instant (DASH's
/// computed live edge) that is nearly everyone: 10 % offload at a cap of 0.5x, against
/// 42 % with this bound (docs/benchmarks.md).
pub fn supply_ranks(members: usize, ratio: Option<f64>) -> usize {
    let Some(ratio) = ratio else {
        return 0;
    };
    ((members as f64) * (1.0 - ratio).clamp(0.0, 1.0) * SUPPLY_MARGIN).ceil() as usize
}

/// The running estimate for one swarm.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Capacity {
    /// Average rate of one peer transfer, bytes per second.
    transfer_bps: Option<f64>,
    samples: u32,
    /// Average rate of the stream, bytes of segment per second of media.
    stream_bps: Option<f64>,
    short: bool,
}

fn average(old: Option<f64>, sample: f64) -> f64 {
    match old {
        Some(old) => old + ALPHA * (sample - old),
        None => sample,
    }
}

impl Capacity {
    /// Records a peer transfer (finished, or cut at a deadline) that carried `bytes` over
    /// `since_first_byte`. Small or short ones are ignored.
    pub fn record_transfer(&mut self, bytes: u64, since_first_byte: Duration) {
        if bytes < MIN_SAMPLE_BYTES || since_first_byte < MIN_SAMPLE_TIME {
            return;
        }
        let sample = bytes as f64 / since_first_byte.as_secs_f64();
        self.transfer_bps = Some(average(self.transfer_bps, sample));
        self.samples = self.samples.saturating_add(1);
        self.update();
    }

    /// Records a media segment of `bytes` lasting `duration`. Segments without a duration
    /// (init segments) are not passed here.
    pub fn record_segment(&mut self, bytes: u64, duration: Duration) {
        if bytes == 0 || duration < Duration::from_millis(100) {
            return;
        }
        let sample = bytes as f64 / duration.as_secs_f64();
        self.stream_bps = Some(average(self.stream_bps, sample));
        self.update();
    }

    /// Transfer rate over stream rate, once both are known well enough.
    pub fn ratio(&self) -> Option<f64> {
        if self.samples < MIN_SAMPLES {
            return None;
        }
        Some(self.transfer_bps? / self.stream_bps?.max(1.0))
    }

    /// Whether one peer transfer runs slower than the stream plays (with hysteresis).
    pub fn short(&self) -> bool {
        self.short
    }

    fn update(&mut self) {
        match self.ratio() {
            Some(r) if r < SHORT => self.short = true,
            Some(r) if r > ENOUGH => self.short = false,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(2);

    #[test]
    fn transfers_slower_than_the_stream_make_the_swarm_short() {
        let mut c = Capacity::default();
        // 750 KB per 2 s segment: 375 KB/s. Transfers at half of that.
        c.record_segment(750_000, S);
        for _ in 0..MIN_SAMPLES - 1 {
            c.record_transfer(375_000, S);
            assert!(!c.short(), "trusted before {MIN_SAMPLES} samples");
        }
        c.record_transfer(375_000, S);
        assert!(c.short());
        assert!((c.ratio().unwrap() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn fast_transfers_leave_it_as_it_was() {
        let mut c = Capacity::default();
        c.record_segment(750_000, S);
        for _ in 0..10 {
            c.record_transfer(750_000, Duration::from_millis(500));
        }
        assert!(!c.short());
        assert!(c.ratio().unwrap() > 3.9);
    }

    #[test]
    fn small_or_short_transfers_measure_nothing() {
        let mut c = Capacity::default();
        c.record_segment(750_000, S);
        for _ in 0..20 {
            // An init segment over a long round trip; a burst of 10 ms.
            c.record_transfer(1_300, Duration::from_millis(400));
            c.record_transfer(200_000, Duration::from_millis(10));
        }
        assert_eq!(c.ratio(), None);
        assert!(!c.short());
    }

    #[test]
    fn a_ratio_near_one_does_not_flap() {
        let mut c = Capacity::default();
        c.record_segment(1_000_000, Duration::from_secs(1));
        for _ in 0..20 {
            c.record_transfer(900_000, Duration::from_secs(1));
        }
        assert!(c.short());
        // Between SHORT and ENOUGH: stays short.
        for _ in 0..40 {
            c.record_transfer(1_050_000, Duration::from_secs(1));
        }
        assert!(c.short(), "ratio {:?}", c.ratio());
        // Clearly enough: not short any more.
        for _ in 0..40 {
            c.record_transfer(1_300_000, Duration::from_secs(1));
        }
        assert!(!c.short(), "ratio {:?}", c.ratio());
    }

    #[test]
    fn suppliers_are_bounded_by_what_peers_cannot_carry() {
        // Half the stream: three quarters of 32 ranks.
        assert_eq!(supply_ranks(32, Some(0.5)), 24);
        // Nearly enough: a few.
        assert_eq!(supply_ranks(32, Some(0.9)), 5);
        // Enough, or no estimate: none.
        assert_eq!(supply_ranks(32, Some(1.2)), 0);
        assert_eq!(supply_ranks(32, None), 0);
        // Nothing at all from peers: every member.
        assert!(supply_ranks(32, Some(0.0)) >= 32);
    }

    #[test]
    fn without_the_stream_rate_nothing_is_concluded() {
        let mut c = Capacity::default();
        for _ in 0..10 {
            c.record_transfer(100_000, S);
        }
        assert_eq!(c.ratio(), None);
        assert!(!c.short());
    }
}
