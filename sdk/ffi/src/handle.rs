//! The node behind a `ShoalNode *`, in safe Rust: its runtime, its state, its callbacks.

use crate::callbacks::in_callback;
use crate::events::{self, Events, ShoalEventCallback, ShoalEventKind};
use crate::logs::{self, Logs, ShoalLogCallback};
use crate::status::{Failure, Outcome, ShoalStatus};
use serde_json::{json, Value};
use shoal::node::NodeError;
use shoal::{Node, NodeConfig};
use std::ffi::c_void;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Worker threads of a node's runtime. A player on one device needs little: two keep a slow
/// callback or a busy TLS handshake from holding up the rest.
pub(crate) const WORKER_THREADS: usize = 2;

/// How long `free` waits for the runtime's threads after the node stopped.
const THREADS_GRACE: Duration = Duration::from_secs(5);

enum State {
    /// Not serving. `last` holds the stats of the last run, if there was one.
    Idle { last: Option<Value> },
    /// Being started or stopped by some thread.
    Busy,
    /// Serving.
    Running {
        node: Arc<Node>,
        watcher: tokio::task::JoinHandle<()>,
    },
}

/// A node with its own runtime.
pub struct Handle {
    runtime: Option<tokio::runtime::Runtime>,
    config: NodeConfig,
    state: Mutex<State>,
    logs: Logs,
    events: Arc<Events>,
}

impl Handle {
    /// Checks the configuration and makes the runtime; does not start serving.
    pub fn new(config_toml: &str) -> Result<Self, Failure> {
        let config = crate::config::parse(config_toml)?;
        let logs = Logs::new();
        let dispatch = logs.dispatch.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("shoal-node")
            .enable_all()
            .on_thread_start(move || {
                crate::signals::block_sigpipe_on_this_thread();
                logs::enter_thread(&dispatch);
            })
            .on_thread_stop(logs::leave_thread)
            .build()
            .map_err(|e| {
                Failure::new(
                    ShoalStatus::Runtime,
                    format!("cannot create the node's threads: {e}"),
                )
            })?;
        Ok(Self {
            runtime: Some(runtime),
            config,
            state: Mutex::new(State::Idle { last: None }),
            logs,
            events: Arc::default(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` to completion on the node's runtime, logging to the node's subscriber, on a
    /// thread of its own: one with SIGPIPE blocked (`signals`), and never one inside another
    /// tokio runtime (a Rust app's), which could not block on this one.
    fn block_on<F>(&self, f: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        let runtime = self.runtime.as_ref().expect("the runtime lives until drop");
        let run = || {
            crate::signals::block_sigpipe_on_this_thread();
            tracing::dispatcher::with_default(&self.logs.dispatch, || runtime.block_on(f))
        };
        std::thread::scope(|s| {
            let thread = std::thread::Builder::new()
                .name("shoal-call".into())
                .spawn_scoped(s, run)
                .expect("starting a thread for the call");
            match thread.join() {
                Ok(out) => out,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    fn refuse_in_callback(what: &str) -> Outcome {
        if in_callback() {
            return Err(Failure::new(
                ShoalStatus::WrongThread,
                format!("{what} may not be called from inside a Shoal callback: call it from another thread"),
            ));
        }
        Ok(())
    }

    /// Binds the player front and the peer server and starts serving.
    pub fn start(&self) -> Outcome {
        Self::refuse_in_callback("shoal_node_start")?;
        let last = {
            let mut state = self.state();
            match std::mem::replace(&mut *state, State::Busy) {
                State::Idle { last } => last,
                other => {
                    *state = other;
                    return Err(Failure::new(
                        ShoalStatus::AlreadyRunning,
                        "the node is already running (or being started or stopped)",
                    ));
                }
            }
        };
        let started = self.block_on(Node::start(self.config.clone()));
        let node = match started {
            Ok(node) => Arc::new(node),
            Err(e) => {
                *self.state() = State::Idle { last };
                let status = match e {
                    NodeError::Config(_) => ShoalStatus::Config,
                    _ => ShoalStatus::StartFailed,
                };
                return Err(Failure::new(status, format!("starting the node: {e}")));
            }
        };
        self.events.emit(
            ShoalEventKind::NodeStarted,
            &json!({
                "player": node.player_addr().to_string(),
                "peer": node.peer_addr().map(|a| a.to_string()),
                "fingerprint": node.fingerprint(),
            }),
        );
        let runtime = self.runtime.as_ref().expect("the runtime lives until drop");
        let watcher = runtime.spawn(events::watch(node.clone(), self.events.clone()));
        *self.state() = State::Running { node, watcher };
        Ok(())
    }

    /// Stops serving gracefully (leaves every swarm, reporting final counters to the
    /// tracker); nothing to do if the node is not running.
    pub fn stop(&self) -> Outcome {
        Self::refuse_in_callback("shoal_node_stop")?;
        let (node, watcher) = {
            let mut state = self.state();
            match std::mem::replace(&mut *state, State::Busy) {
                State::Running { node, watcher } => (node, watcher),
                other => {
                    *state = other;
                    return Ok(());
                }
            }
        };
        watcher.abort();
        let last = self.block_on(async move {
            // The watcher ends at its next await (or after the callback it is in).
            let _ = watcher.await;
            let node = Arc::try_unwrap(node)
                .unwrap_or_else(|_| unreachable!("only the state and the stopped watcher held it"));
            let last = stats_value(&node, false);
            node.shutdown().await;
            last
        });
        *self.state() = State::Idle { last: Some(last) };
        self.events.emit(ShoalEventKind::NodeStopped, &json!({}));
        Ok(())
    }

    /// The URL to give the platform player for `origin_manifest_url`.
    pub fn local_url(&self, origin_manifest_url: &str) -> Result<String, Failure> {
        let url = url::Url::parse(origin_manifest_url).map_err(|e| {
            Failure::new(
                ShoalStatus::InvalidArgument,
                format!("`{origin_manifest_url}` is not a URL: {e}"),
            )
        })?;
        let state = self.state();
        let State::Running { node, .. } = &*state else {
            return Err(not_running());
        };
        node.player_url(&url).ok_or_else(|| {
            Failure::new(
                ShoalStatus::OriginNotAllowed,
                format!(
                    "`{origin_manifest_url}`: its host is not an allowed origin (or its scheme is not the one configured for it); add it to `origins` (and `origin_schemes` for plain http)"
                ),
            )
        })
    }

    /// The node's counters as JSON; after a stop, those of the last run.
    pub fn stats_json(&self) -> Result<String, Failure> {
        let value = match &*self.state() {
            State::Running { node, .. } => stats_value(node, true),
            State::Idle { last: Some(last) } => last.clone(),
            State::Idle { last: None } | State::Busy => return Err(not_running()),
        };
        Ok(value.to_string())
    }

    /// Sets or removes the log callback.
    pub fn set_log_callback(
        &self,
        filter: &str,
        callback: ShoalLogCallback,
        user_data: *mut c_void,
    ) -> Outcome {
        Self::refuse_in_callback("shoal_node_set_log_callback")?;
        self.logs
            .set(filter, callback, user_data)
            .map_err(|e| Failure::new(ShoalStatus::InvalidArgument, e))
    }

    /// Sets or removes the event callback.
    pub fn set_event_callback(
        &self,
        callback: ShoalEventCallback,
        user_data: *mut c_void,
    ) -> Outcome {
        Self::refuse_in_callback("shoal_node_set_event_callback")?;
        self.events.set(callback, user_data);
        Ok(())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.stop();
        // No callback runs after this: the setters wait for one in progress.
        let _ = self.logs.set("off", None, std::ptr::null_mut());
        self.events.set(None, std::ptr::null_mut());
        if let Some(runtime) = self.runtime.take() {
            // On a thread of its own: a runtime cannot be shut down from inside another (a
            // Rust app freeing the node from its async code).
            std::thread::scope(|s| {
                let _ = std::thread::Builder::new()
                    .name("shoal-free".into())
                    .spawn_scoped(s, move || runtime.shutdown_timeout(THREADS_GRACE));
            });
        }
    }
}

fn not_running() -> Failure {
    Failure::new(
        ShoalStatus::NotRunning,
        "the node is not running: call shoal_node_start first",
    )
}

/// `{"running", "offload", "bytes": {"p2p", "cdn", "origin", "uploaded"}, "peers",
/// "swarms": [{"id", "peer_id", "neighbours"}]}`.
fn stats_value(node: &Node, running: bool) -> Value {
    let s = node.stats();
    let delivered = s.p2p_bytes + s.cdn_bytes;
    let offload = (delivered > 0).then(|| s.p2p_bytes as f64 / delivered as f64);
    let swarms: Vec<Value> = node
        .swarms()
        .into_iter()
        .map(|sw| {
            json!({
                "id": sw.id.to_string(),
                "peer_id": sw.peer_id.to_string(),
                "neighbours": sw.neighbours.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "running": running,
        "offload": offload,
        "bytes": {
            "p2p": s.p2p_bytes,
            "cdn": s.cdn_bytes,
            "origin": s.origin_bytes,
            "uploaded": s.uploaded_bytes,
        },
        "peers": s.peers,
        "swarms": swarms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> String {
        "origins = [\"cdn.example\"]\npeer_listen = \"127.0.0.1:0\"\n".into()
    }

    #[test]
    fn calls_from_many_threads_meet_a_stop_without_harm() {
        let handle = Handle::new(&config()).unwrap();
        handle.start().unwrap();
        std::thread::scope(|s| {
            let readers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut answered = 0;
                        for _ in 0..200 {
                            match handle.stats_json() {
                                Ok(json) => {
                                    assert!(json.contains("\"bytes\""), "{json}");
                                    answered += 1;
                                }
                                Err(e) => assert_eq!(e.status, ShoalStatus::NotRunning),
                            }
                            match handle.local_url("http://cdn.example/live/a.m3u8") {
                                Ok(url) => assert!(url.ends_with("/cdn.example/live/a.m3u8")),
                                Err(e) => assert_eq!(e.status, ShoalStatus::NotRunning),
                            }
                        }
                        answered
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(20));
            handle.stop().unwrap();
            let answered: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
            assert!(answered > 0);
        });
        // Stopped: the last run's totals, and a second stop is a no-op.
        assert!(handle.stats_json().unwrap().contains("\"running\":false"));
        handle.stop().unwrap();
        // And it starts again.
        handle.start().unwrap();
        assert!(handle.stats_json().unwrap().contains("\"running\":true"));
    }

    #[test]
    fn a_node_started_inside_a_tokio_runtime_still_starts_and_stops() {
        // A Rust app calling from its own runtime: the calls run on a thread of their own.
        let outer = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        outer.block_on(async {
            let handle = Handle::new(&config()).unwrap();
            handle.start().unwrap();
            handle.stop().unwrap();
        });
    }
}
