//! Closing librdkafka clients off the critical path. Destroying a client waits for its threads
//! (up to ~100 ms each), which a backup or restore need not wait for while it goes on; but a
//! process must not exit while a client is still being torn down (librdkafka and OpenSSL clean up
//! at exit too), so the binary waits for every close with [`wait_for_closing`] before it exits.

use std::sync::Mutex;
use std::thread::JoinHandle;

static CLOSING: Mutex<Vec<JoinHandle<()>>> = Mutex::new(Vec::new());

/// Drops `client` on a thread of its own.
pub fn close_in_background<T: Send + 'static>(client: T) {
    let handle = std::thread::spawn(move || drop(client));
    let mut closing = CLOSING.lock().unwrap_or_else(|p| p.into_inner());
    // Finished closes need no waiting for; a long-lived process keeps only the ones in flight.
    closing.retain(|h| !h.is_finished());
    closing.push(handle);
}

/// Waits until every client handed to [`close_in_background`] is closed.
pub fn wait_for_closing() {
    let handles = std::mem::take(&mut *CLOSING.lock().unwrap_or_else(|p| p.into_inner()));
    for h in handles {
        let _ = h.join();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    struct Slow(Arc<AtomicUsize>);

    impl Drop for Slow {
        fn drop(&mut self) {
            std::thread::sleep(Duration::from_millis(50));
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn waiting_returns_only_once_every_close_is_done() {
        let closed = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            super::close_in_background(Slow(closed.clone()));
        }
        super::wait_for_closing();
        assert_eq!(closed.load(Ordering::SeqCst), 3);
    }
}
