//! Events to the app's callback. The node's public API has no event stream yet, so swarm and
//! neighbour events come from comparing `Node::swarms()` every [`WATCH_EVERY`]: a neighbour
//! that came and went between two looks is not reported.

use crate::callbacks::{calling, UserData};
use crate::logs::c_text;
use serde_json::{json, Value};
use shoal::Node;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, c_void};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// How often the swarms are compared for events.
pub(crate) const WATCH_EVERY: Duration = Duration::from_millis(200);

/// What happened. The event's JSON text gives the details named here.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShoalEventKind {
    /// The node serves players: `{"player": "127.0.0.1:PORT", "peer": "HOST:PORT",
    /// "fingerprint": "HEX"}`.
    NodeStarted = 1,
    /// The node stopped (every swarm left, final counters reported): `{}`.
    NodeStopped = 2,
    /// The node joined a swarm (a player asked for one of its manifests): `{"swarm": ID,
    /// "peer_id": ID}`.
    SwarmJoined = 3,
    /// The node left a swarm (no player request for `swarm_idle`): `{"swarm": ID}`.
    SwarmLeft = 4,
    /// A neighbour's `have` stream is connected: `{"swarm": ID, "peer": ID}`.
    PeerConnected = 5,
    /// A neighbour is gone (it left, failed, or was dropped): `{"swarm": ID, "peer": ID}`.
    PeerLost = 6,
}

/// Receives one event: its kind and its details as a JSON object (valid only during the
/// call: copy it to keep it). Runs on one of the node's threads, or on the thread calling
/// `shoal_node_start` / `shoal_node_stop` for the start and stop events; never on two threads
/// at once for one node.
pub type ShoalEventCallback =
    Option<unsafe extern "C" fn(user_data: *mut c_void, kind: ShoalEventKind, json: *const c_char)>;

#[derive(Clone, Copy)]
struct Sink {
    callback: unsafe extern "C" fn(*mut c_void, ShoalEventKind, *const c_char),
    user_data: UserData,
}

/// A node's event callback, if any.
#[derive(Default)]
pub(crate) struct Events {
    sink: RwLock<Option<Sink>>,
    /// One event at a time per node, in order.
    order: std::sync::Mutex<()>,
}

impl Events {
    /// Sets or (with `None`) removes the callback; waits for an event being delivered.
    pub fn set(&self, callback: ShoalEventCallback, user_data: *mut c_void) {
        let sink = callback.map(|callback| Sink {
            callback,
            user_data: UserData(user_data),
        });
        *self.sink.write().unwrap_or_else(PoisonError::into_inner) = sink;
    }

    /// Hands `details` to the callback, if one is set.
    pub fn emit(&self, kind: ShoalEventKind, details: &Value) {
        let _order = self.order.lock().unwrap_or_else(PoisonError::into_inner);
        let guard = self.sink.read().unwrap_or_else(PoisonError::into_inner);
        let Some(sink) = *guard else { return };
        let text = c_text(details.to_string().into_bytes());
        calling(|| {
            // SAFETY: the callback and user_data were registered together by the app, which
            // promised (header: threading rules) that the callback may run on the node's
            // threads with that user_data until it is replaced or the node is freed; both
            // happen only under the write lock, which this read guard excludes. The text is
            // NUL-terminated and outlives the call.
            unsafe { (sink.callback)(sink.user_data.0, kind, text.as_ptr()) }
        });
    }
}

/// Swarm id -> (own peer id, neighbour ids).
type Snapshot = BTreeMap<String, (String, BTreeSet<String>)>;

fn snapshot(node: &Node) -> Snapshot {
    node.swarms()
        .into_iter()
        .map(|s| {
            let neighbours = s.neighbours.iter().map(ToString::to_string).collect();
            (s.id.to_string(), (s.peer_id.to_string(), neighbours))
        })
        .collect()
}

/// The events that turn `before` into `after`: joins before their neighbours, losses before
/// the leave.
fn diff(before: &Snapshot, after: &Snapshot) -> Vec<(ShoalEventKind, Value)> {
    let empty = BTreeSet::new();
    let mut out = Vec::new();
    for (swarm, (peer_id, neighbours)) in after {
        let old = match before.get(swarm) {
            Some((_, old)) => old,
            None => {
                out.push((
                    ShoalEventKind::SwarmJoined,
                    json!({"swarm": swarm, "peer_id": peer_id}),
                ));
                &empty
            }
        };
        for peer in old.difference(neighbours) {
            out.push((
                ShoalEventKind::PeerLost,
                json!({"swarm": swarm, "peer": peer}),
            ));
        }
        for peer in neighbours.difference(old) {
            out.push((
                ShoalEventKind::PeerConnected,
                json!({"swarm": swarm, "peer": peer}),
            ));
        }
    }
    for (swarm, (_, neighbours)) in before {
        if !after.contains_key(swarm) {
            for peer in neighbours {
                out.push((
                    ShoalEventKind::PeerLost,
                    json!({"swarm": swarm, "peer": peer}),
                ));
            }
            out.push((ShoalEventKind::SwarmLeft, json!({"swarm": swarm})));
        }
    }
    out
}

/// Compares the node's swarms every [`WATCH_EVERY`] and emits what changed; runs until
/// aborted (at stop).
pub(crate) async fn watch(node: Arc<Node>, events: Arc<Events>) {
    let mut known = Snapshot::new();
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = snapshot(&node);
        let changes = diff(&known, &now);
        known = now;
        if changes.is_empty() {
            continue;
        }
        // The callback is the app's code and may block: the runtime moves its other tasks
        // off this thread meanwhile. (Not spawn_blocking: a stop aborts this task and then no
        // event may follow; an abort cannot cut a callback short, it waits for it.)
        tokio::task::block_in_place(|| {
            for (kind, details) in changes {
                events.emit(kind, &details);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(swarms: &[(&str, &[&str])]) -> Snapshot {
        swarms
            .iter()
            .map(|(id, n)| {
                (
                    id.to_string(),
                    (
                        format!("me-{id}"),
                        n.iter().map(|s| s.to_string()).collect(),
                    ),
                )
            })
            .collect()
    }

    #[test]
    fn joins_neighbours_losses_and_leaves_are_told_in_order() {
        let kinds = |v: Vec<(ShoalEventKind, Value)>| {
            v.into_iter()
                .map(|(k, d)| format!("{k:?} {d}"))
                .collect::<Vec<_>>()
        };
        let a = snap(&[]);
        let b = snap(&[("s1", &["p1"])]);
        assert_eq!(
            kinds(diff(&a, &b)),
            [
                r#"SwarmJoined {"peer_id":"me-s1","swarm":"s1"}"#,
                r#"PeerConnected {"peer":"p1","swarm":"s1"}"#
            ]
        );
        let c = snap(&[("s1", &["p2"])]);
        assert_eq!(
            kinds(diff(&b, &c)),
            [
                r#"PeerLost {"peer":"p1","swarm":"s1"}"#,
                r#"PeerConnected {"peer":"p2","swarm":"s1"}"#
            ]
        );
        assert!(diff(&c, &c).is_empty());
        assert_eq!(
            kinds(diff(&c, &a)),
            [
                r#"PeerLost {"peer":"p2","swarm":"s1"}"#,
                r#"SwarmLeft {"swarm":"s1"}"#
            ]
        );
    }
}
