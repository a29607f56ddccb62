//! Closing the librdkafka clients kafkabox creates (`kafkabox handle`, the edge forwarder, the
//! client commands), with a bound and off the async runtime's worker threads.
//!
//! rdkafka closes a group consumer in `Drop` by polling until librdkafka says it is closed,
//! without a deadline: a consumer whose group coordinator is gone, or whose close waits on a
//! rebalance, blocks the dropping thread for ever (a test runner hung there, on a tokio worker
//! thread, for the whole CI budget). Here that drop runs on a thread of its own and the caller
//! waits at most [`CLOSE_BOUND`]; a close that does not finish in time is abandoned (with a
//! warning naming the client) rather than holding the process.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

/// How long a client gets to close (leave its group, commit its stored offsets, deliver what
/// is queued) before it is abandoned.
pub const CLOSE_BOUND: Duration = Duration::from_secs(5);

/// Closes a consumer (leaves the group, commits what librdkafka has stored) from the calling
/// thread (never an async worker: call it from `spawn_blocking` or a thread of its own),
/// waiting at most `bound`. Returns whether it closed.
pub fn close_consumer<C: ConsumerContext + 'static>(
    consumer: BaseConsumer<C>,
    what: &str,
    bound: Duration,
) -> bool {
    if consumer.group_metadata().is_none() {
        // No group: rdkafka's drop does not wait for anything.
        drop(consumer);
        return true;
    }
    close_blocking(consumer, what, bound)
}

/// Drops `client` (any rdkafka client: its drop is its close) on a thread of its own and
/// waits for that at most `bound`, from a thread that may block. One that does not finish in
/// time is abandoned there (with a warning) and ends with the process. Returns whether the
/// drop finished.
fn close_blocking<T: Send + 'static>(client: T, what: &str, bound: Duration) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("kafkabox-close".into())
        .spawn(move || {
            drop(client);
            let _ = tx.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!(client = what, error = %e, "cannot start a thread to close the client");
        return false;
    }
    match rx.recv_timeout(bound) {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(
                client = what,
                bound_ms = bound.as_millis() as u64,
                "the client did not close in time (cluster unreachable or a rebalance in \
                 progress); abandoned: offsets it had not committed are handled again by the \
                 group's next owner"
            );
            false
        }
    }
}

/// A group consumer closed by [`close_consumer`] when it goes out of scope, on whatever path:
/// for consumers used on a blocking thread.
pub struct Closing<C: ConsumerContext + 'static> {
    consumer: Option<BaseConsumer<C>>,
    what: &'static str,
}

impl<C: ConsumerContext + 'static> Closing<C> {
    pub fn new(consumer: BaseConsumer<C>, what: &'static str) -> Closing<C> {
        Closing {
            consumer: Some(consumer),
            what,
        }
    }
}

impl<C: ConsumerContext + 'static> std::ops::Deref for Closing<C> {
    type Target = BaseConsumer<C>;
    fn deref(&self) -> &BaseConsumer<C> {
        self.consumer.as_ref().expect("present until dropped")
    }
}

impl<C: ConsumerContext + 'static> Drop for Closing<C> {
    fn drop(&mut self) {
        if let Some(c) = self.consumer.take() {
            close_consumer(c, self.what, CLOSE_BOUND);
        }
    }
}

/// [`close_blocking`] for async callers: the wait runs on the blocking pool, never on a
/// runtime worker.
pub async fn close_async<T: Send + 'static>(client: T, what: &str, bound: Duration) -> bool {
    let what = what.to_string();
    tokio::task::spawn_blocking(move || close_blocking(client, &what, bound))
        .await
        .unwrap_or(false)
}
