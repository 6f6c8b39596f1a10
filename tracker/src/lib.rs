//! Shoal tracker: groups peers into swarms, hands out neighbours, sums peers' byte reports into
//! fleet-wide metrics. `docs/tracker.md` says how to run it, `docs/protocol.md` what it speaks.
//!
//! [`spawn`] runs a tracker inside the calling process (tests, benchmarks, other binaries);
//! the `shoal-tracker` binary is a thin `main` around it.

pub mod api;
pub mod client_addr;
pub mod clock;
pub mod config;
pub mod digest;
pub mod listener;
pub mod metrics;
pub mod policy;
pub mod signed_digests;
pub mod store;
pub mod token;

use crate::api::AppState;
use crate::config::{Config, ConfigError, StoreSpec};
use crate::digest::DigestService;
use crate::listener::{TlsCerts, TlsError, TrackerListener};
use crate::metrics::Metrics;
use crate::store::{MemoryStore, Observed, RedisStore, Store, StoreError};
use crate::token::Keys;
use axum::serve::ListenerExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Why a tracker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address could not be bound (in use, or not this host's).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The store could not be opened (Redis or Redis Cluster unreachable, bad URL).
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// The HTTP client of the digest service could not be built (no TLS roots).
    #[error("cannot build the digest service's HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The server failed while running.
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// A tracker serving on a socket until [`RunningTracker::shutdown`] or drop.
#[derive(Debug)]
pub struct RunningTracker {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    sweeper: JoinHandle<()>,
    tls: Option<Arc<TlsCerts>>,
}

impl RunningTracker {
    /// The address it listens on (the real port when the config asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, e.g. `http://127.0.0.1:7070` (`https://` when serving TLS; loopback
    /// when listening on all addresses).
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{addr}")
    }

    /// Re-reads the TLS certificate and key files (what SIGHUP does): new handshakes get the
    /// new certificate, open connections go on. On an error the old certificate stays in use.
    /// `Ok(false)`: the tracker serves plain HTTP, there is nothing to re-read.
    pub fn reload_tls(&self) -> Result<bool, Error> {
        match &self.tls {
            Some(tls) => {
                tls.reload()?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Stops accepting connections, lets in-flight requests finish, then returns.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.sweeper.abort();
        match self.server.take() {
            Some(server) => match server.await {
                Ok(result) => result.map_err(Error::Serve),
                Err(e) if e.is_cancelled() => Ok(()),
                Err(e) => Err(Error::Serve(std::io::Error::other(e))),
            },
            None => Ok(()),
        }
    }
}

impl Drop for RunningTracker {
    fn drop(&mut self) {
        // Graceful in the background: in-flight requests still finish.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.sweeper.abort();
    }
}

/// Opens the configured store and serves the API on `config.listen` until shut down.
pub async fn spawn(config: Config) -> Result<RunningTracker, Error> {
    config.check()?;
    let ca = match &config.redis_ca {
        Some(path) => Some(
            std::fs::read(path).map_err(|source| ConfigError::RedisCaRead {
                path: path.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let store: Arc<dyn Store> = match &config.store {
        StoreSpec::Memory => Arc::new(MemoryStore::new(config.announce_interval)),
        StoreSpec::Redis(url) => {
            Arc::new(RedisStore::connect_with_ca(url, config.announce_interval, ca).await?)
        }
        StoreSpec::RedisCluster(url) => {
            let nodes = config::cluster_nodes(url)?;
            Arc::new(
                RedisStore::connect_cluster_with_ca(&nodes, config.announce_interval, ca).await?,
            )
        }
    };
    spawn_with_store(config, store).await
}

/// Like [`spawn`], with a store the caller built (e.g. one shared by two in-process trackers).
pub async fn spawn_with_store(
    config: Config,
    store: Arc<dyn Store>,
) -> Result<RunningTracker, Error> {
    config.check()?;
    let state = Arc::new(app_state(&config, store)?);
    let metrics = state.metrics.clone();
    let store = state.store.clone();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: config.listen,
        source,
    })?;
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(TlsCerts::load(cert, key)?)),
        _ => None,
    };
    let acceptor = match &tls {
        Some(tls) => Some(tokio_rustls::TlsAcceptor::from(tls.server_config()?)),
        None => None,
    };
    let listener = TrackerListener::new(
        listener,
        listener::Options {
            tls: acceptor,
            proxy_protocol: config.proxy_protocol,
            client_addrs: config.client_addrs()?,
        },
    )
    .map_err(|source| Error::Bind {
        addr: config.listen,
        source,
    })?;
    let sweeper = tokio::spawn(sweep_forever(store, metrics, config.announce_interval));
    // In the background: start-up does not wait for origins, a few seconds at most anyway.
    tokio::spawn(digest::check_origins(config.digest().origins));
    let (stop, stopped) = oneshot::channel::<()>();
    // A no-op tap: axum's connect info (the client's address) is defined for tapped listeners.
    let listener = listener.tap_io(|_| {});
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            api::router(state).into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stopped.await;
        })
        .await
    });
    tracing::info!(
        %addr,
        store = %config.store,
        interval = ?config.announce_interval,
        tls = tls.is_some(),
        proxy_protocol = config.proxy_protocol,
        "tracker listening"
    );
    Ok(RunningTracker {
        addr,
        stop: Some(stop),
        server: Some(server),
        sweeper,
        tls,
    })
}

/// Everything the routes share, built from `config` around `store` (for [`api::router`]);
/// the store's failures are counted in `shoal_tracker_store_errors_total` and logged.
pub fn app_state(config: &Config, store: Arc<dyn Store>) -> Result<AppState, Error> {
    let metrics = Arc::new(Metrics::new());
    let keys = match &config.auth_keys_file {
        Some(path) => Some(Keys::load(path).map_err(ConfigError::from)?),
        None => None,
    };
    Ok(AppState {
        store: Arc::new(Observed::new(store, metrics.clone())),
        digests: DigestService::new(&config.digest(), metrics.clone())?,
        metrics,
        interval_secs: config.interval_secs(),
        policies: config.policies()?,
        keys,
        auth_required: config.auth_required,
        ban_rule: config.ban_rule(),
        client_addrs: config.client_addrs()?,
    })
}

/// Drops expired peers a few times per interval, so gauges are right soon after expiry.
async fn sweep_forever(store: Arc<dyn Store>, metrics: Arc<Metrics>, interval: Duration) {
    let mut tick = tokio::time::interval((interval / 4).max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.sweep().await {
            Ok(0) => {}
            Ok(n) => {
                metrics.expired(n);
                tracing::debug!(expired = n, "swept silent peers");
            }
            Err(e) => tracing::warn!(error = %e, "sweep failed; retrying next tick"),
        }
    }
}
