//! Status codes, the thread-local last error message, and the guard every entry point runs
//! in (no panic crosses the boundary).

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a call did. Every function that can fail returns one; on anything but
/// `SHOAL_STATUS_OK`, `shoal_last_error_message()` says what went wrong and what to do.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShoalStatus {
    /// Done.
    Ok = 0,
    /// An argument is unusable: a NULL pointer, text that is not UTF-8, a URL that does not
    /// parse, a log filter that does not parse.
    InvalidArgument = 1,
    /// The configuration does not parse or is inconsistent (unknown key, bad value, no origin
    /// allowed). The message names the key and says what to change.
    Config = 2,
    /// The node could not start: a listen address is in use or not permitted, or the peer
    /// key in `data_dir` could not be made or read.
    StartFailed = 3,
    /// The node is not running (not started yet, or stopped): start it first.
    NotRunning = 4,
    /// The node is already running.
    AlreadyRunning = 5,
    /// The manifest URL's origin is not in the configuration's `origins` list.
    OriginNotAllowed = 6,
    /// The call may not be made from inside a Shoal callback (it would wait for the thread it
    /// runs on). Make it from another thread.
    WrongThread = 7,
    /// The node's threads could not be created.
    Runtime = 8,
    /// An internal error (a Rust panic) was caught at the boundary. The node may be in an
    /// unusable state: free it. Please report it with the message.
    Panic = 9,
}

/// A failed call: its status and the message `shoal_last_error_message` will return.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: ShoalStatus,
    pub message: String,
}

impl Failure {
    pub fn new(status: ShoalStatus, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

pub(crate) type Outcome = Result<(), Failure>;

thread_local! {
    /// The message of the last failed call on this thread.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(text));
}

/// The last error message of this thread, or an empty string; valid until the next call on
/// this thread (the next call replaces or clears it).
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| match &*e.borrow() {
        Some(text) => text.as_ptr(),
        None => c"".as_ptr(),
    })
}

/// Runs an entry point: clears the last error, catches any panic, and turns the outcome into
/// a status (and the message into the thread's last error).
pub(crate) fn guard(f: impl FnOnce() -> Outcome) -> ShoalStatus {
    LAST_ERROR.with(|e| *e.borrow_mut() = None);
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => ShoalStatus::Ok,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.status
        }
        Err(payload) => {
            set_last_error(&format!(
                "internal error: {} (free this node; please report this message)",
                panic_text(payload.as_ref())
            ));
            ShoalStatus::Panic
        }
    }
}

/// Runs an entry point that returns nothing (the `*_free` functions): a panic is swallowed.
pub(crate) fn guard_void(f: impl FnOnce()) {
    LAST_ERROR.with(|e| *e.borrow_mut() = None);
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        set_last_error(&format!("internal error: {}", panic_text(payload.as_ref())));
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn last() -> String {
        // SAFETY: last_error_ptr returns a NUL-terminated string owned by this thread's
        // LAST_ERROR (or a static), alive until the next guard call on this thread.
        unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let status = guard(|| panic!("boom at {}", 7));
        assert_eq!(status, ShoalStatus::Panic);
        assert!(last().contains("boom at 7"), "{}", last());
        // The next call clears it.
        assert_eq!(guard(|| Ok(())), ShoalStatus::Ok);
        assert_eq!(last(), "");
    }

    #[test]
    fn a_failure_keeps_its_message_until_the_next_call() {
        let status = guard(|| Err(Failure::new(ShoalStatus::Config, "key `x`: bad\0value")));
        assert_eq!(status, ShoalStatus::Config);
        assert_eq!(last(), "key `x`: bad value");
    }
}
