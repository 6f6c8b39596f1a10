//! The tracker's wall clock: the one place it reads the system time (token expiry, Redis
//! member expiry scores, live MPD templates when signing digest lists).

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, by the system clock.
#[allow(clippy::disallowed_methods)] // the one reading of the wall clock
pub fn wall() -> SystemTime {
    SystemTime::now()
}

/// Milliseconds since the Unix epoch (0 for a clock before it).
pub fn unix_ms() -> i64 {
    wall()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
