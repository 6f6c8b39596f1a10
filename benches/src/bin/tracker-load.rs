//! Tracker load generator.
fn main() {}
