//! SIGPIPE on the node's threads. A Rust program ignores SIGPIPE before `main`; a C, Swift or
//! Kotlin app linking this library does not, and a write to a socket the other side closed
//! (`writev`, which takes no `MSG_NOSIGNAL`) would kill the app. The node does not touch the
//! process's signal dispositions: it blocks SIGPIPE on the threads it runs its I/O on, so
//! such a write fails with `EPIPE` there and the signal stays pending on that thread,
//! harmless while blocked.

/// Blocks SIGPIPE on the calling thread (a thread of the node's).
pub(crate) fn block_sigpipe_on_this_thread() {
    #[cfg(unix)]
    {
        use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
        let mut set = SigSet::empty();
        set.add(Signal::SIGPIPE);
        // Fails only for an invalid `how`; nothing to do about it but log.
        if let Err(e) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None) {
            tracing::warn!(error = %e, "cannot block SIGPIPE on a node thread");
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};

    #[test]
    fn sigpipe_is_blocked_on_the_thread_only() {
        let blocked_here = std::thread::spawn(|| {
            super::block_sigpipe_on_this_thread();
            let mut now = SigSet::empty();
            pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut now)).unwrap();
            now.contains(Signal::SIGPIPE)
        })
        .join()
        .unwrap();
        assert!(blocked_here);
        let mut here = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, None, Some(&mut here)).unwrap();
        assert!(
            !here.contains(Signal::SIGPIPE),
            "the test thread's mask changed"
        );
    }
}
