//! Shoal benchmarks support library.
