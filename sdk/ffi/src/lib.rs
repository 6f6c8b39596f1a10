//! C ABI of the Shoal SDK: an app creates a node from its configuration, starts it, gives its
//! platform player the node's local URL for a manifest, reads its stats, and frees it.
//!
//! The header `include/shoal.h` is generated from this crate by cbindgen (the test
//! `header_is_current` fails when it is stale; `SHOAL_BLESS=1 cargo test -p shoal-ffi --test
//! header_is_current` writes it). `docs/sdk.md` is the embedding guide.
//!
//! Every entry point runs inside [`status::guard`]: a panic becomes `SHOAL_STATUS_PANIC` and a
//! message, never an unwind into C.
//!
//! This crate is the workspace's only exception to `unsafe_code = "forbid"` (its Cargo.toml
//! denies it; this file allows it): C hands it raw pointers and callbacks. Every unsafe block
//! says why it is sound (`clippy::undocumented_unsafe_blocks`).
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(missing_docs)]

mod callbacks;
mod config;
mod events;
mod handle;
mod logs;
mod signals;
mod status;

pub use events::{ShoalEventCallback, ShoalEventKind};
pub use logs::{ShoalLogCallback, ShoalLogLevel};
pub use status::ShoalStatus;

use status::{guard, guard_void, Failure};
use std::ffi::{c_char, c_void, CStr, CString};

/// A Shoal node: a player front on a loopback port, a peer server, and the swarms its players'
/// streams belong to. Opaque: made by `shoal_node_new`, released by `shoal_node_free`.
///
/// Threading rules:
/// - A node's functions may be called from any thread, and from several threads at once,
///   except `shoal_node_free`, which must be the last call on the node, made once, when no
///   other call on it is running.
/// - `shoal_node_start` and `shoal_node_stop` block the calling thread (start until the
///   node listens, stop until it left its swarms: a few seconds at most). Do not call them
///   from a UI thread that must not block.
/// - Callbacks run on threads the node owns (or, for the start and stop events, on the thread
///   calling start or stop), never on a thread of the app's unless the app calls start or
///   stop there. Log callbacks may run on several threads at once; event callbacks on one at
///   a time. They must return promptly and must be safe to call from any thread with their
///   `user_data`.
/// - From inside a callback, only `shoal_node_local_url`, `shoal_node_stats_json`,
///   `shoal_string_free` and `shoal_last_error_message` may be called. Start, stop, and the
///   callback setters return `SHOAL_STATUS_WRONG_THREAD` there; `shoal_node_free` from a
///   callback does nothing (the node is leaked, not corrupted). Log lines the node emits
///   while a callback runs on that thread are dropped.
/// - Once a callback setter or `shoal_node_free` returns, the callback it replaced is not
///   called again, and its `user_data` may be released.
/// - `shoal_last_error_message` is per thread: it describes the last failed call made on the
///   calling thread.
/// - Signals: the node changes no signal handler of the process. It does its I/O only on
///   threads of its own, with SIGPIPE blocked there, so a neighbour or player closing a
///   connection cannot kill the app; the app need not ignore SIGPIPE for Shoal.
pub struct ShoalNode {
    inner: handle::Handle,
}

// The threading rules let any thread use a node, and several at once: the compiler checks
// that everything the handle holds allows it.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<ShoalNode>();
};

/// Reads a C string argument.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid and unchanged for `'a`.
unsafe fn arg_str<'a>(p: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::new(
            ShoalStatus::InvalidArgument,
            format!("{what} is NULL"),
        ));
    }
    // SAFETY: p is not NULL, and the caller promises it points to a NUL-terminated string
    // valid for 'a.
    let text = unsafe { CStr::from_ptr(p) };
    text.to_str().map_err(|e| {
        Failure::new(
            ShoalStatus::InvalidArgument,
            format!("{what} is not UTF-8: {e}"),
        )
    })
}

/// Reads the node argument.
///
/// # Safety
/// `node` is NULL or a pointer `shoal_node_new` returned that was not freed yet.
unsafe fn arg_node<'a>(node: *const ShoalNode) -> Result<&'a ShoalNode, Failure> {
    // SAFETY: the caller promises node is NULL or a live node from shoal_node_new (a Box
    // turned into a pointer, so aligned and initialised); as_ref checks for NULL. Only shared
    // references are made: ShoalNode is Sync and is freed only after every other call on it
    // returned (threading rules).
    unsafe { node.as_ref() }
        .ok_or_else(|| Failure::new(ShoalStatus::InvalidArgument, "node is NULL"))
}

/// Writes a string result: `*out` gets a string for `shoal_string_free`.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer.
unsafe fn put_string(out: *mut *mut c_char, text: String) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::new(ShoalStatus::InvalidArgument, "out is NULL"));
    }
    let text = logs::c_text(text.into_bytes());
    // SAFETY: out is not NULL and the caller promises it is valid for writing a pointer.
    unsafe { out.write(text.into_raw()) };
    Ok(())
}

/// Clears a string result, so `*out` is NULL on failure.
///
/// # Safety
/// `out` is NULL or valid for writing a pointer.
unsafe fn clear_out<T>(out: *mut *mut T) {
    if !out.is_null() {
        // SAFETY: out is not NULL and the caller promises it is valid for writing a pointer.
        unsafe { out.write(std::ptr::null_mut()) };
    }
}

/// Creates a node from `config_toml`, a configuration in TOML with the keys of `shoal-edge`'s
/// configuration file (`shoal-edge --print-config` lists them all; `origins` is required).
/// One default differs: without a `listen` key, the player front takes a free loopback port.
/// The node is not started: set callbacks, then call `shoal_node_start`.
///
/// On success `*out` is the node (free it with `shoal_node_free`); on failure `*out` is NULL
/// and `shoal_last_error_message()` names the bad key or value.
///
/// # Safety
/// `config_toml` is a NUL-terminated UTF-8 string; `out` is valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn shoal_node_new(
    config_toml: *const c_char,
    out: *mut *mut ShoalNode,
) -> ShoalStatus {
    guard(|| {
        // SAFETY: the caller promises out is NULL or writable.
        unsafe { clear_out(out) };
        if out.is_null() {
            return Err(Failure::new(ShoalStatus::InvalidArgument, "out is NULL"));
        }
        // SAFETY: the caller promises config_toml is a valid C string for this call.
        let text = unsafe { arg_str(config_toml, "config_toml") }?;
        let node = Box::new(ShoalNode {
            inner: handle::Handle::new(text)?,
        });
        // SAFETY: out is not NULL and the caller promises it is writable.
        unsafe { out.write(Box::into_raw(node)) };
        Ok(())
    })
}

/// Starts serving: binds the player front and the peer server. Blocks until both listen.
/// Fails with `SHOAL_STATUS_START_FAILED` if an address is taken, `SHOAL_STATUS_ALREADY_RUNNING`
/// if it runs. A stopped node may be started again.
///
/// # Safety
/// `node` is a live node from `shoal_node_new`.
#[no_mangle]
pub unsafe extern "C" fn shoal_node_start(node: *const ShoalNode) -> ShoalStatus {
    guard(|| {
        // SAFETY: the caller promises node is live.
        unsafe { arg_node(node) }?.inner.start()
    })
}

/// Stops gracefully: leaves every swarm (reporting final counters to the tracker), finishes
/// in-flight player responses (briefly), closes the listeners. Blocks until done, a few
/// seconds at most. Does nothing if the node is not running. Stats stay readable.
///
/// # Safety
/// `node` is a live node from `shoal_node_new`.
#[no_mangle]
pub unsafe extern "C" fn shoal_node_stop(node: *const ShoalNode) -> ShoalStatus {
    guard(|| {
        // SAFETY: the caller promises node is live.
        unsafe { arg_node(node) }?.inner.stop()
    })
}

/// Stops the node if it runs (as `shoal_node_stop`), ends its threads and releases it. NULL
/// does nothing. No callback of the node runs once this returns.
///
/// # Safety
/// `node` is NULL or a live node from `shoal_node_new`, with no other call on it running
/// or following.
#[no_mangle]
pub unsafe extern "C" fn shoal_node_free(node: *mut ShoalNode) {
    guard_void(|| {
        if node.is_null() || callbacks::in_callback() {
            // From inside a callback the node's own thread would wait for itself: leaked.
            return;
        }
        // SAFETY: the caller promises node came from shoal_node_new (Box::into_raw), is not
        // freed yet, and is used by no other call now or later: the Box is ours to drop.
        drop(unsafe { Box::from_raw(node) });
    })
}

/// The URL to give the platform player for `origin_manifest_url` (an HLS or DASH manifest on
/// an allowed origin): `http://127.0.0.1:PORT/<origin-host>/<path>`. `*out` is a string to
/// release with `shoal_string_free`, or NULL on failure (`SHOAL_STATUS_ORIGIN_NOT_ALLOWED`,
/// `SHOAL_STATUS_NOT_RUNNING`, `SHOAL_STATUS_INVALID_ARGUMENT` for a bad URL).
///
/// # Safety
/// `node` is a live node; `origin_manifest_url` a NUL-terminated string; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn shoal_node_local_url(
    node: *const ShoalNode,
    origin_manifest_url: *const c_char,
    out: *mut *mut c_char,
) -> ShoalStatus {
    guard(|| {
        // SAFETY: the caller promises out is NULL or writable.
        unsafe { clear_out(out) };
        // SAFETY: the caller promises node is live and the URL a valid C string.
        let (node, url) = unsafe {
            (
                arg_node(node)?,
                arg_str(origin_manifest_url, "origin_manifest_url")?,
            )
        };
        let local = node.inner.local_url(url)?;
        // SAFETY: the caller promises out is writable.
        unsafe { put_string(out, local) }
    })
}

/// The node's counters as a JSON object, in `*out` (release it with `shoal_string_free`):
///
/// `{"running": true, "offload": 0.62, "bytes": {"p2p": N, "cdn": N, "origin": N,
/// "uploaded": N}, "peers": N, "swarms": [{"id": S, "peer_id": S, "neighbours": [S]}]}`
///
/// `bytes.p2p` and `bytes.cdn` are bytes delivered to players by source, `origin` what was
/// fetched from the origin, `uploaded` what neighbours got from this node. `offload` is
/// p2p / (p2p + cdn), `null` before the first byte. After `shoal_node_stop` it gives the last
/// run's totals with `"running": false`; before the first start it fails with
/// `SHOAL_STATUS_NOT_RUNNING`.
///
/// # Safety
/// `node` is a live node; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn shoal_node_stats_json(
    node: *const ShoalNode,
    out: *mut *mut c_char,
) -> ShoalStatus {
    guard(|| {
        // SAFETY: the caller promises out is NULL or writable.
        unsafe { clear_out(out) };
        // SAFETY: the caller promises node is live.
        let json = unsafe { arg_node(node) }?.inner.stats_json()?;
        // SAFETY: the caller promises out is writable.
        unsafe { put_string(out, json) }
    })
}

/// Sends the node's log lines that pass `filter` to `callback` with `user_data`. `filter` is
/// a level (`error`, `warn`, `info`, `debug`, `trace`) or per-module directives
/// (`warn,shoal=debug`); NULL means `info`. A NULL `callback` stops logging. Set it before
/// `shoal_node_start` to see the start. Nothing is logged anywhere without a callback.
///
/// # Safety
/// `node` is a live node; `filter` NULL or a NUL-terminated string; `callback` NULL or a
/// function that may be called as the threading rules say, with `user_data`, until it is
/// replaced or the node freed.
#[no_mangle]
pub unsafe extern "C" fn shoal_node_set_log_callback(
    node: *const ShoalNode,
    filter: *const c_char,
    callback: ShoalLogCallback,
    user_data: *mut c_void,
) -> ShoalStatus {
    guard(|| {
        // SAFETY: the caller promises node is live.
        let node = unsafe { arg_node(node) }?;
        let filter = match filter.is_null() {
            true => "info",
            // SAFETY: the caller promises a non-NULL filter is a valid C string.
            false => unsafe { arg_str(filter, "filter") }?,
        };
        node.inner.set_log_callback(filter, callback, user_data)
    })
}

/// Sends the node's events (`ShoalEventKind`, with details as JSON) to `callback` with
/// `user_data`; NULL stops them.
///
/// # Safety
/// `node` is a live node; `callback` NULL or a function that may be called as the threading
/// rules say, with `user_data`, until it is replaced or the node freed.
#[no_mangle]
pub unsafe extern "C" fn shoal_node_set_event_callback(
    node: *const ShoalNode,
    callback: ShoalEventCallback,
    user_data: *mut c_void,
) -> ShoalStatus {
    guard(|| {
        // SAFETY: the caller promises node is live.
        unsafe { arg_node(node) }?
            .inner
            .set_event_callback(callback, user_data)
    })
}

/// Releases a string Shoal returned. NULL does nothing.
///
/// # Safety
/// `s` is NULL or a string from a Shoal function, not released yet.
#[no_mangle]
pub unsafe extern "C" fn shoal_string_free(s: *mut c_char) {
    guard_void(|| {
        if !s.is_null() {
            // SAFETY: the caller promises s came from CString::into_raw in put_string and is
            // released only now.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

/// What went wrong in the last failed call on this thread, or "" if the last call succeeded.
/// The string belongs to Shoal and is valid until the next Shoal call on this thread.
#[no_mangle]
pub extern "C" fn shoal_last_error_message() -> *const c_char {
    status::last_error_ptr()
}

/// The library's version, e.g. "0.1.0" (a static string).
#[no_mangle]
pub extern "C" fn shoal_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("the version has no NUL inside"),
        };
    VERSION.as_ptr()
}
