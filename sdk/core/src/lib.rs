//! Shoal's decisions, without I/O.
//!
//! Everything a node decides lives here as plain data and functions: manifests (parse,
//! identity, rewrite), the swarm's state, the segment scheduler's rules, and the DASH live
//! clock. Nothing here opens a socket, reads a clock or spawns a task: the caller passes
//! `now` (and randomness, where a rule needs it) and carries out what comes back. The driver
//! that does the I/O is the SDK (`shoal`); the tracker uses the manifest models and the digest
//! list from here.
//!
//! In the manner of `quinn-proto`: inputs are `handle_*`/`record_*` calls with `now`, outputs
//! are return values (decisions, keys to prefetch, whether waiters should wake).
#![warn(missing_docs)]

pub mod error_text;
pub mod manifest;
pub mod scheduler;
pub mod source;
pub mod swarm;

/// The one reading of the real clock in this crate's tests: a base instant. Every later
/// instant in a test is this plus a simulated offset.
#[cfg(test)]
mod test_clock {
    #[allow(clippy::disallowed_methods)]
    pub fn start() -> std::time::Instant {
        std::time::Instant::now()
    }
}
