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
/// waiting at most `bound`. The close itself is rdkafka's drop, run on a thread of its own:
/// one that does not finish in time is abandoned there (with a warning) and ends with the
/// process. Returns whether it closed.
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
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("kafkabox-close".into())
        .spawn(move || {
            drop(consumer);
            let _ = tx.send(());
        });
    if let Err(e) = spawned {
        tracing::warn!(client = what, error = %e, "cannot start a thread to close the consumer");
        return false;
    }
    match rx.recv_timeout(bound) {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(
                client = what,
                bound_ms = bound.as_millis() as u64,
                "the consumer did not close in time (group coordinator unreachable or a \
                 rebalance in progress); abandoned: offsets it had not committed are \
                 handled again by the group's next owner"
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

/// Drops `client` (any rdkafka client: a `StreamConsumer`, a producer) on a thread of its
/// own and waits for that at most `bound` without blocking the runtime. Returns whether the
/// drop finished; if it did not, the thread is left to finish or to end with the process.
pub async fn close_async<T: Send + 'static>(client: T, what: &str, bound: Duration) -> bool {
    let (tx, rx) = tokio::sync::oneshot::channel();
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
    match tokio::time::timeout(bound, rx).await {
        Ok(_) => true,
        Err(_) => {
            tracing::warn!(
                client = what,
                bound_ms = bound.as_millis() as u64,
                "the client did not close in time; abandoned"
            );
            false
        }
    }
}
