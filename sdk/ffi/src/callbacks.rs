//! What the log and event callbacks share: the app's `user_data` pointer, and the per-thread
//! mark of "a Shoal callback is running here".

use std::cell::Cell;
use std::ffi::c_void;

/// The app's `user_data`, handed back to its callback untouched.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UserData(pub *mut c_void);

// SAFETY: Shoal never dereferences the pointer; it only passes it back to the callback it was
// registered with. The header's threading rules make the app promise that its callback and
// `user_data` may be used from any thread (callbacks run on the node's threads), which is
// exactly what Send and Sync state.
unsafe impl Send for UserData {}
// SAFETY: as for Send: shared references to it only ever copy the pointer value.
unsafe impl Sync for UserData {}

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Whether a Shoal callback is running on this thread (the app called back into Shoal from
/// inside it).
pub(crate) fn in_callback() -> bool {
    DEPTH.with(Cell::get) > 0
}

/// Runs `f` (which calls the app's callback) marked as inside a callback. The mark is
/// removed even if `f` unwinds.
pub(crate) fn calling<R>(f: impl FnOnce() -> R) -> R {
    struct Mark;
    impl Drop for Mark {
        fn drop(&mut self) {
            DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
    DEPTH.with(|d| d.set(d.get() + 1));
    let _mark = Mark;
    f()
}
