//! Shoal SDK: everything a node needs to deliver HLS/DASH segments peers-first with origin
//! fallback. The edge proxy (`shoal-edge`) is a thin binary over [`node::Node`].
#![warn(missing_docs)]

pub mod cache;
pub mod manifest;
pub mod peer;
