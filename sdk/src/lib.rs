//! Shoal SDK: everything a node needs to deliver HLS/DASH segments peers-first with origin
//! fallback. The edge proxy (`shoal-edge`) is a thin binary over [`node::Node`].
#![warn(missing_docs)]

pub mod cache;
pub mod clock;
pub mod config;
pub mod fetch;
mod front;
pub use shoal_core::manifest;
pub mod metrics;
pub mod node;
pub mod origin_client;
pub mod peer;
pub mod swarm;
pub mod tracker_client;

pub use config::NodeConfig;
pub use node::{Node, NodeStats, SwarmView};
