//! DASH: any bytes through the proxy's MPD handling; see `check_dash` for the invariants.
#![no_main]

#[path = "../../sdk/core/tests/fuzz_support/mod.rs"]
mod fuzz_support;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_support::check_dash(data));
