//! Catching a handler's panic, and saying where in the source it happened.
//!
//! A panic hook (installed once, in front of the one already there, which still runs)
//! notes the panic's source location in a thread-local; the panic is caught on the same
//! thread in the same poll, which reads it back.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Once;

use futures::FutureExt;

thread_local! {
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs the hook that records where panics happen (once per process).
pub(crate) fn install_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let at = info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            LOCATION.with(|location| *location.borrow_mut() = at);
            previous(info);
        }));
    });
}

/// Runs `future`; a panic inside it becomes `Err` with a sentence saying where and what.
pub(crate) async fn catch<T>(future: impl Future<Output = T>) -> Result<T, String> {
    LOCATION.with(|location| location.borrow_mut().take());
    AssertUnwindSafe(future).catch_unwind().await.map_err(|panic| describe(panic.as_ref()))
}

fn describe(panic: &(dyn Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    match LOCATION.with(|location| location.borrow_mut().take()) {
        Some(at) => format!("the handler panicked at {at}: {text}"),
        None => format!("the handler panicked: {text}"),
    }
}
