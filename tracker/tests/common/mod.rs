//! Starts a tracker (memory, Redis or Redis Cluster store) on an ephemeral loopback port and
//! talks to it.
#![allow(dead_code)]

pub mod tls;

use reqwest::StatusCode;
use serde_json::{json, Value};
use shoal_proto::AnnounceResponse;
use shoal_testkit::{RedisCluster, RedisServer};
use shoal_tracker::config::{Config, StoreSpec};
use shoal_tracker::RunningTracker;
use std::time::Duration;

/// Which store a behavioural test runs against.
#[derive(Debug, Clone, Copy)]
pub enum StoreKind {
    Memory,
    Redis,
    /// A Redis Cluster of three masters and three replicas.
    Cluster,
}

/// Runs each listed `async fn name(kind: StoreKind)` once per store, as `memory::name`,
/// `redis::name` and `cluster::name`.
#[macro_export]
macro_rules! each_store {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::StoreKind::Memory).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::StoreKind::Redis).await })*
        }
        mod cluster {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::common::StoreKind::Cluster).await })*
        }
    };
}

pub struct Harness {
    pub tracker: RunningTracker,
    pub client: reqwest::Client,
    pub redis: Option<RedisServer>,
    pub cluster: Option<RedisCluster>,
}

pub fn config(store: StoreSpec, interval: Duration) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        store,
        announce_interval: interval,
        ..Config::default()
    }
}

impl Harness {
    pub async fn start(kind: StoreKind, interval: Duration) -> Self {
        Self::start_with(kind, |c| c.announce_interval = interval).await
    }

    pub async fn start_with(kind: StoreKind, tweak: impl FnOnce(&mut Config)) -> Self {
        let (mut redis, mut cluster) = (None, None);
        let store = match kind {
            StoreKind::Memory => StoreSpec::Memory,
            StoreKind::Redis => {
                let r = RedisServer::start().expect("starting redis-server");
                let url = r.url.clone();
                redis = Some(r);
                StoreSpec::Redis(url)
            }
            StoreKind::Cluster => {
                // Started on a blocking thread: forming a cluster takes a few seconds.
                let c = tokio::task::spawn_blocking(RedisCluster::start)
                    .await
                    .unwrap()
                    .expect("starting a Redis Cluster");
                let url = c.url.clone();
                cluster = Some(c);
                StoreSpec::RedisCluster(url)
            }
        };
        let mut c = config(store, Duration::from_secs(20));
        tweak(&mut c);
        let tracker = shoal_tracker::spawn(c).await.expect("starting the tracker");
        Self {
            tracker,
            client: reqwest::Client::new(),
            redis,
            cluster,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.tracker.url())
    }

    /// POSTs a JSON body; returns the status and the body as JSON (Null when empty).
    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let bytes = r.bytes().await.unwrap();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: body is not JSON ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, v)
    }

    /// Announces and expects success.
    pub async fn announce(&self, body: &Value) -> AnnounceResponse {
        let (status, v) = self.post("/v1/announce", body).await;
        assert_eq!(status, StatusCode::OK, "announce {body} failed: {v}");
        serde_json::from_value(v).unwrap()
    }

    /// A peer joins `swarm` with one address; returns its answer.
    pub async fn join(&self, peer: &str, swarm: &str) -> AnnounceResponse {
        self.announce(&announce_body(peer, swarm, None)).await
    }

    /// GETs a path; returns the status and the body as JSON.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status();
        let v = r.json().await.unwrap_or(Value::Null);
        (status, v)
    }

    pub async fn metrics(&self) -> String {
        let r = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.text().await.unwrap()
    }

    /// The value of one sample of `/metrics`, e.g. `shoal_tracker_peers` or
    /// `shoal_tracker_announces_total{result="ok"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        metric(&self.metrics().await, sample)
    }
}

pub fn metric(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// The address a test peer announces: derived from its id so tests can check it comes back.
pub fn addr_of(peer: &str) -> String {
    format!(
        "10.0.0.1:{}",
        1000 + peer.bytes().map(u32::from).sum::<u32>()
    )
}

pub fn announce_body(peer: &str, swarm: &str, key: Option<&str>) -> Value {
    let mut v = json!({
        "proto": 1,
        "peer_id": peer,
        "swarm_id": swarm,
        "addrs": [addr_of(peer)],
        "fingerprint": "abcdef0123",
        "client_version": "test/1",
    });
    if let Some(k) = key {
        v["peer_key"] = json!(k);
    }
    v
}
