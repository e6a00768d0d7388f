//! The one async runtime of a process that calls kar, and the librdkafka clients it is closing.
//! Whoever calls kar (the binary's `main`, a test) creates a [`Runtime`] once and passes it down;
//! the parts that need it (the Kafka source and target, the registry's requests, the workers that
//! close clients) hold a [`Context`], a cheap clone of its handle (mini-redis's shape: runtime and
//! shutdown owned at the edge, no global state).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// `f` of every item, `at_once` items at a time each on a thread of its own (calls that mostly
/// wait on a broker: a client each), the results in the items' order; the first error in that
/// order once its batch has ended. A panic in `f` goes on in the caller.
pub fn try_at_once<T: Sync, R: Send, E: Send>(
    items: &[T],
    at_once: usize,
    f: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    let mut out = Vec::with_capacity(items.len());
    for batch in items.chunks(at_once.max(1)) {
        let results: Vec<Result<R, E>> = std::thread::scope(|s| {
            let handles: Vec<_> = batch.iter().map(|i| s.spawn(|| f(i))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for r in results {
            out.push(r?);
        }
    }
    Ok(out)
}

/// The runtime. Dropping it waits until every client handed to [`Context::close_in_background`]
/// is closed: librdkafka and OpenSSL clean up at process exit too, and must not race a close.
pub struct Runtime {
    rt: Option<tokio::runtime::Runtime>,
    context: Context,
}

/// What the parts of a workflow hold of the runtime.
#[derive(Clone)]
pub struct Context {
    handle: tokio::runtime::Handle,
    closing: Closing,
}

/// The librdkafka clients being closed off the critical path. Destroying a client waits for its
/// threads (up to ~100 ms each), which a backup or restore need not wait for while it goes on.
#[derive(Clone, Default)]
struct Closing(Arc<Mutex<Vec<JoinHandle<()>>>>);

impl Runtime {
    /// A multi-threaded runtime of two workers: registry requests run concurrently on it, and any
    /// thread of a workflow can block on it.
    pub fn new() -> std::io::Result<Runtime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kar-async")
            .enable_all()
            .build()?;
        let context = Context {
            handle: rt.handle().clone(),
            closing: Closing::default(),
        };
        Ok(Runtime {
            rt: Some(rt),
            context,
        })
    }

    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Waits until every client handed to [`Context::close_in_background`] is closed.
    pub fn wait_for_closing(&self) {
        self.context.closing.wait();
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.context.closing.wait();
        // Without waiting for its tasks: a dropped runtime may sit in an async context (a test).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Context {
    /// Runs a future to completion on the runtime, from a thread that is not one of its own.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.handle.block_on(f)
    }

    /// Drops `client` on a thread of its own; the runtime's owner waits for it before exiting.
    pub fn close_in_background<T: Send + 'static>(&self, client: T) {
        self.closing.push(std::thread::spawn(move || drop(client)));
    }
}

impl Closing {
    fn push(&self, handle: JoinHandle<()>) {
        let mut closing = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Finished closes need no waiting for; a long-lived process keeps only the ones in flight.
        closing.retain(|h| !h.is_finished());
        closing.push(handle);
    }

    fn wait(&self) {
        let handles = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
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
        let rt = super::Runtime::new().unwrap();
        let closed = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            rt.context().close_in_background(Slow(closed.clone()));
        }
        rt.wait_for_closing();
        assert_eq!(closed.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn dropping_the_runtime_waits_for_every_close() {
        let rt = super::Runtime::new().unwrap();
        let closed = Arc::new(AtomicUsize::new(0));
        rt.context().close_in_background(Slow(closed.clone()));
        assert_eq!(rt.context().block_on(async { 7 }), 7);
        drop(rt);
        assert_eq!(closed.load(Ordering::SeqCst), 1);
    }
}
