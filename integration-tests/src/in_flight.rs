//! A handler's calls in flight, counted for the tests of key-level concurrency: the most
//! at once, and how many began while another call of their key was still running (with
//! key-level concurrency: never). Shared by the recorder and the copier, so both modes'
//! concurrency is counted the same way.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The calls in flight now, the most seen at once, and the keys inside a call.
#[derive(Debug, Default)]
pub struct CallsInFlight {
    now: AtomicUsize,
    most: AtomicUsize,
    keys: Mutex<HashSet<Vec<u8>>>,
    overlaps: AtomicUsize,
}

impl CallsInFlight {
    /// The most calls seen in flight at once.
    pub fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    /// How many calls began while another call of their key was still running.
    pub fn overlaps(&self) -> usize {
        self.overlaps.load(Ordering::SeqCst)
    }

    /// Counts a call of a message with `key` for as long as the guard lives (a call the
    /// runtime abandons, its future dropped at a deadline, leaves as a finished one does);
    /// a key already inside a call is an overlap, counted and left to the call that has it.
    pub fn enter(&self, key: Option<&[u8]>) -> InCall<'_> {
        let counted = Counted::enter(&self.now);
        self.most.fetch_max(counted.now, Ordering::SeqCst);
        let mut marked = None;
        if let Some(key) = key {
            let fresh = self.keys.lock().map(|mut keys| keys.insert(key.to_vec())).unwrap_or(true);
            if fresh {
                marked = Some(key.to_vec());
            } else {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
        }
        InCall { calls: self, key: marked, _counted: counted }
    }
}

/// A call counted in flight; uncounted when dropped.
#[derive(Debug)]
pub struct InCall<'a> {
    calls: &'a CallsInFlight,
    key: Option<Vec<u8>>,
    _counted: Counted<'a>,
}

impl Drop for InCall<'_> {
    fn drop(&mut self) {
        if let Some(key) = &self.key
            && let Ok(mut keys) = self.calls.keys.lock()
        {
            keys.remove(key);
        }
    }
}

/// One more in a count for as long as it lives: a handler call the runtime abandons (its
/// future dropped at a deadline) leaves the count as a finished one does.
#[derive(Debug)]
pub struct Counted<'a> {
    count: &'a AtomicUsize,
    /// The count with this one in it.
    pub now: usize,
}

impl<'a> Counted<'a> {
    /// Adds one to `count` until the guard is dropped.
    pub fn enter(count: &'a AtomicUsize) -> Self {
        Counted { count, now: count.fetch_add(1, Ordering::SeqCst) + 1 }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
    }
}
