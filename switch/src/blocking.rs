//! Blocking work from async code: the blocking PostgreSQL client and
//! SQLite calls run on a thread of their own when called on the runtime.
//! Imports nothing of the crate, so any module may use it.

/// Runs `f` on a thread outside the async runtime when called on one (a
/// scoped thread: `f` may borrow), else in place.
pub(crate) fn off_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// Drops `value` on a thread of its own: a blocking PostgreSQL client owns
/// a runtime, which must not be dropped on an async one's worker (it
/// panics there), and its owner may be dropped anywhere.
pub(crate) fn drop_off_runtime<T: Send + 'static>(value: T) {
    let _ = std::thread::Builder::new()
        .name("drop-off-runtime".into())
        .spawn(move || drop(value));
}
