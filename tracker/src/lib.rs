//! Shoal tracker.
