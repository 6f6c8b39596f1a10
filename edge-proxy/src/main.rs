//! Shoal edge proxy binary.
fn main() {}
