//! Log lines to the app's callback: a tracing subscriber of the node's own (the node's
//! threads run with it as their default), whose fmt layer writes each line to the callback
//! and whose filter the app sets.

use crate::callbacks::{calling, in_callback, UserData};
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CString};
use std::io::Write;
use std::sync::{Arc, PoisonError, RwLock};
use tracing::Dispatch;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Severity of a log line.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShoalLogLevel {
    /// Something failed that the node could not work around.
    Error = 1,
    /// Something failed and the node worked around it (e.g. the tracker is unreachable:
    /// playback goes on from the origin).
    Warn = 2,
    /// Milestones: started, joined and left swarms, stopped.
    Info = 3,
    /// Per-neighbour and per-segment detail.
    Debug = 4,
    /// Everything.
    Trace = 5,
}

impl From<&tracing::Level> for ShoalLogLevel {
    fn from(l: &tracing::Level) -> Self {
        match *l {
            tracing::Level::ERROR => Self::Error,
            tracing::Level::WARN => Self::Warn,
            tracing::Level::INFO => Self::Info,
            tracing::Level::DEBUG => Self::Debug,
            tracing::Level::TRACE => Self::Trace,
        }
    }
}

/// Receives one log line. `target` is the Rust module the line comes from (e.g.
/// `shoal::node`); `line` is the message and its fields (`joined swarm swarm=... peer=...`),
/// without a trailing newline. Both strings are valid only during the call: copy them to keep
/// them. May be called from several of the node's threads at once.
pub type ShoalLogCallback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        level: ShoalLogLevel,
        target: *const c_char,
        line: *const c_char,
    ),
>;

#[derive(Clone, Copy)]
struct Sink {
    callback: unsafe extern "C" fn(*mut c_void, ShoalLogLevel, *const c_char, *const c_char),
    user_data: UserData,
}

type Slot = Arc<RwLock<Option<Sink>>>;

/// A node's logging: the subscriber its threads use and the app's callback, if any.
pub(crate) struct Logs {
    pub dispatch: Dispatch,
    sink: Slot,
    filter: reload::Handle<EnvFilter, Registry>,
}

impl Logs {
    /// A subscriber that drops everything until a callback is set.
    pub fn new() -> Self {
        let sink: Slot = Arc::default();
        let (filter, handle) = reload::Layer::new(EnvFilter::new("off"));
        let fmt = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .without_time()
            .with_level(false)
            .with_target(false)
            .with_writer(MakeLine { sink: sink.clone() });
        let subscriber = Registry::default().with(filter).with(fmt);
        Self {
            dispatch: Dispatch::new(subscriber),
            sink,
            filter: handle,
        }
    }

    /// Sends lines that pass `filter` (`EnvFilter` syntax: `info`, `warn,shoal=debug`) to
    /// `callback`; `None` stops sending. Waits for a line being delivered to finish first.
    pub fn set(
        &self,
        filter: &str,
        callback: ShoalLogCallback,
        user_data: *mut c_void,
    ) -> Result<(), String> {
        let sink = callback.map(|callback| Sink {
            callback,
            user_data: UserData(user_data),
        });
        let filter = match sink {
            Some(_) => EnvFilter::try_new(filter).map_err(|e| {
                format!("log filter `{filter}`: {e} (write e.g. `info` or `warn,shoal=debug`)")
            })?,
            None => EnvFilter::new("off"),
        };
        *self.sink.write().unwrap_or_else(PoisonError::into_inner) = sink;
        // The reload makes tracing recompute which call sites are enabled. While this is the
        // only subscriber the process has, tracing asks only the calling thread's default
        // subscriber, so this one must be the default here; else every call site would be
        // cached as disabled (for the app's thread's no-op default) and the node would log
        // nothing.
        tracing::dispatcher::with_default(&self.dispatch, || self.filter.reload(filter))
            .map_err(|e| format!("setting the log filter: {e}"))
    }
}

/// Makes one [`Line`] per log event (the fmt layer writes each event's text at once).
struct MakeLine {
    sink: Slot,
}

impl<'a> MakeWriter<'a> for MakeLine {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            sink: self.sink.clone(),
            level: ShoalLogLevel::Info,
            target: String::new(),
            text: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line {
        Line {
            sink: self.sink.clone(),
            level: meta.level().into(),
            target: meta.target().to_string(),
            text: Vec::new(),
        }
    }
}

/// One log line being written; handed to the callback when dropped.
struct Line {
    sink: Slot,
    level: ShoalLogLevel,
    target: String,
    text: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        // A line logged while a callback runs on this thread (the app called into Shoal from
        // its callback) is dropped: delivering it would re-enter the app's callback.
        if self.text.is_empty() || in_callback() {
            return;
        }
        while self.text.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            self.text.pop();
        }
        let line = c_text(std::mem::take(&mut self.text));
        let target = c_text(std::mem::take(&mut self.target).into_bytes());
        let guard = self.sink.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(sink) = *guard {
            calling(|| {
                // SAFETY: the callback and user_data were registered together by the app,
                // which promised (header: threading rules) that the callback may run on any
                // node thread with that user_data until it is replaced or the node is freed;
                // both happen only under the write lock, which this read guard excludes. The
                // strings are NUL-terminated and outlive the call.
                unsafe {
                    (sink.callback)(sink.user_data.0, self.level, target.as_ptr(), line.as_ptr())
                }
            });
        }
    }
}

/// `bytes` as a C string, NUL bytes replaced by spaces.
pub(crate) fn c_text(mut bytes: Vec<u8>) -> CString {
    for b in &mut bytes {
        if *b == 0 {
            *b = b' ';
        }
    }
    CString::new(bytes).unwrap_or_default()
}

thread_local! {
    static NODE_DEFAULT: RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { RefCell::new(None) };
}

/// Makes `dispatch` this thread's default subscriber until [`leave_thread`] (a node's
/// threads log to the node's subscriber).
pub(crate) fn enter_thread(dispatch: &Dispatch) {
    let guard = tracing::dispatcher::set_default(dispatch);
    NODE_DEFAULT.with(|g| *g.borrow_mut() = Some(guard));
}

/// Undoes [`enter_thread`].
pub(crate) fn leave_thread() {
    NODE_DEFAULT.with(|g| g.borrow_mut().take());
}
