//! Shoal SDK.
#![warn(missing_docs)]
