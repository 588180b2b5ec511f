//! What comes back for a message: [`DeliveryReport`] or [`ProduceError`], through a
//! [`DeliveryFuture`] or a callback, and the rdkafka context that hands the reports out.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use rdkafka::client::ClientContext;
use rdkafka::message::{BorrowedMessage, DeliveryResult, Message};
use rdkafka::producer::ProducerContext;
use rdkafka::Timestamp;
use tokio::sync::Notify;

use super::OwnedRecord;
use crate::error::Error;
use crate::partitioner::Md5Partitioner;

/// Where a message was stored: the result of a successful send.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryReport<C = ()> {
    /// The topic.
    pub topic: String,
    /// The partition the message was written to.
    pub partition: i32,
    /// The message's offset in its partition.
    pub offset: i64,
    /// The message timestamp (create time, or log append time if the topic uses it).
    pub timestamp: Timestamp,
    /// The message key.
    pub key: Option<Vec<u8>>,
    /// The context attached to the record.
    pub context: C,
}

impl DeliveryReport {
    /// The report of a delivered message: what kafka-kit builds in its delivery callback.
    pub fn from_message(message: &impl Message) -> Self {
        DeliveryReport {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp: message.timestamp(),
            key: message.key().map(<[u8]>::to_vec),
            context: (),
        }
    }
}

impl<C> DeliveryReport<C> {
    /// The same report with another context.
    pub fn with_context<D>(self, context: D) -> DeliveryReport<D> {
        let DeliveryReport {
            topic,
            partition,
            offset,
            timestamp,
            key,
            ..
        } = self;
        DeliveryReport {
            topic,
            partition,
            offset,
            timestamp,
            key,
            context,
        }
    }

    /// The key as text, with invalid UTF-8 replaced.
    pub fn key_lossy(&self) -> Option<Cow<'_, str>> {
        self.key.as_deref().map(String::from_utf8_lossy)
    }
}

/// A message that could not be sent or delivered, with the error, the message and the context.
#[non_exhaustive]
pub struct ProduceError<C = ()> {
    /// What went wrong. See [`Error::is_retriable`].
    pub error: Error,
    /// The message, whole.
    pub message: OwnedRecord,
    /// The context attached to the record.
    pub context: C,
}

impl<C> fmt::Debug for ProduceError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProduceError")
            .field("error", &self.error)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl<C> fmt::Display for ProduceError<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not produce to `{}`", self.message.topic)?;
        if let Some(partition) = self.message.partition.filter(|&p| p >= 0) {
            write!(f, " [{partition}]")?;
        }
        write!(f, ": {}", self.error)
    }
}

impl<C> std::error::Error for ProduceError<C> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<C> From<ProduceError<C>> for Error {
    fn from(e: ProduceError<C>) -> Self {
        e.error
    }
}

/// What a delivery report says, before the context is attached. A failure, rare, is boxed: it
/// hands the whole message back, and would more than double what every success moves around.
pub(super) type Outcome = std::result::Result<DeliveryReport, Box<Failed>>;

pub(super) struct Failed {
    error: Error,
    message: OwnedRecord,
}

fn outcome(result: &DeliveryResult<'_>) -> Outcome {
    match result {
        Ok(message) => Ok(DeliveryReport::from_message(message)),
        Err((error, message)) => Err(Box::new(Failed {
            error: Error::Kafka(error.clone()),
            message: OwnedRecord::from_message(message),
        })),
    }
}

// A failure hands the whole message back, to the caller: it is not boxed there.
#[allow(clippy::result_large_err)]
fn with_context<C>(
    outcome: Outcome,
    context: C,
) -> std::result::Result<DeliveryReport<C>, ProduceError<C>> {
    match outcome {
        Ok(report) => Ok(report.with_context(context)),
        Err(f) => Err(ProduceError {
            error: f.error,
            message: f.message,
            context,
        }),
    }
}

/// The result handed to a delivery callback.
pub type DeliveryResultOf<C> = std::result::Result<DeliveryReport<C>, ProduceError<C>>;

/// A delivered message as the producer's [delivery handler](super::ProducerBuilder::on_delivery)
/// sees it: borrowed from librdkafka, so that handling it copies nothing (not even the topic or
/// the key), with the context the record was sent with. [`into_report`](Self::into_report)
/// makes an owned [`DeliveryReport`] of it.
pub struct Delivered<'a, C> {
    message: &'a BorrowedMessage<'a>,
    /// The context attached to the record.
    pub context: C,
}

impl<C> Delivered<'_, C> {
    /// The topic.
    pub fn topic(&self) -> &str {
        self.message.topic()
    }

    /// The partition the message was written to.
    pub fn partition(&self) -> i32 {
        self.message.partition()
    }

    /// The message's offset in its partition.
    pub fn offset(&self) -> i64 {
        self.message.offset()
    }

    /// The message timestamp (create time, or log append time if the topic uses it).
    pub fn timestamp(&self) -> Timestamp {
        self.message.timestamp()
    }

    /// The message key.
    pub fn key(&self) -> Option<&[u8]> {
        self.message.key()
    }

    /// The key as text, with invalid UTF-8 replaced.
    pub fn key_lossy(&self) -> Option<Cow<'_, str>> {
        self.key().map(String::from_utf8_lossy)
    }

    /// The owned report: the topic and the key copied.
    pub fn into_report(self) -> DeliveryReport<C> {
        DeliveryReport::from_message(self.message).with_context(self.context)
    }
}

impl<C: fmt::Debug> fmt::Debug for Delivered<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivered")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .field("key", &self.key_lossy())
            .field("context", &self.context)
            .finish()
    }
}

/// What the producer's [delivery handler](super::ProducerBuilder::on_delivery) is called with.
pub type Handled<'a, C> = std::result::Result<Delivered<'a, C>, ProduceError<C>>;

/// The producer's delivery handler.
pub(super) type Handler<C> = Box<dyn Fn(Handled<'_, C>) + Send + Sync>;

type Callback<C> = Box<dyn FnOnce(DeliveryResultOf<C>) + Send>;

/// What to do when a message's delivery report arrives.
pub(super) enum Completion<C> {
    Forget,
    /// The producer's delivery handler gets the report.
    Handler(C),
    /// A [`DeliveryFuture`] shares the opaque and waits for the outcome.
    Await(Awaited),
    Callback(C, Callback<C>),
}

/// A delivery future's side of the opaque.
pub(super) enum Awaited {
    /// No report yet; the future's waker, once it has been polled.
    Waiting(Option<Waker>),
    Done(Outcome),
    /// The future has taken the outcome.
    Taken,
}

/// librdkafka's per-message opaque: one allocation per message, shared with the message's
/// [`DeliveryFuture`] in await mode (so that no channel is allocated as well). Every other
/// completion is taken out of it when the report comes.
pub(super) type Opaque<C> = Arc<Mutex<Completion<C>>>;

/// A counter on its own cache line: senders and the polling thread update different ones.
#[derive(Default)]
#[repr(align(64))]
pub(super) struct Counter(AtomicU64);

impl Counter {
    /// Counts one more, and returns the new count.
    pub(super) fn add(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
    pub(super) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// State shared by the senders and the delivery callback.
#[derive(Default)]
pub(super) struct Shared {
    pub(super) enqueued: Counter,
    pub(super) delivered: Counter,
    pub(super) failed: Counter,
    /// Senders waiting for room in the local queue.
    pub(super) waiters: AtomicUsize,
    pub(super) room: Notify,
    pub(super) stats: crate::monitoring::StatsHub,
}

impl Shared {
    /// Delivery reports handled so far, successes and failures.
    pub(super) fn reported(&self) -> u64 {
        self.delivered.get() + self.failed.get()
    }
}

/// Counters of a producer's messages since it was built.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Messages accepted into the local queue.
    pub enqueued: u64,
    /// Messages the brokers acknowledged.
    pub delivered: u64,
    /// Messages that failed after being enqueued (timed out, refused, purged).
    pub failed: u64,
}

impl ProducerStats {
    /// Messages enqueued whose delivery report hasn't arrived yet.
    pub fn in_flight(&self) -> u64 {
        self.enqueued.saturating_sub(self.delivered + self.failed)
    }
}

/// The rdkafka context: the partitioner and the delivery callback.
pub(super) struct KitContext<C> {
    pub(super) partitioner: Option<Md5Partitioner>,
    /// The one opaque every fire-and-forget message shares.
    pub(super) forget: Opaque<C>,
    pub(super) handler: Option<Handler<C>>,
    pub(super) shared: Shared,
    pub(super) _context: PhantomData<fn() -> C>,
}

impl<C: Send + 'static> ClientContext for KitContext<C> {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.shared.stats.publish(statistics);
    }
}

impl<C: Send + 'static> ProducerContext<Md5Partitioner> for KitContext<C> {
    type DeliveryOpaque = Opaque<C>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Opaque<C>) {
        let shared = &self.shared;
        match result {
            Ok(_) => shared.delivered.add(),
            Err(_) => shared.failed.add(),
        };
        if shared.waiters.load(Ordering::Acquire) > 0 {
            shared.room.notify_waiters();
        }
        if Arc::ptr_eq(&opaque, &self.forget) {
            if let Err((error, message)) = result {
                forgotten_failure(error, message);
            }
            return;
        }
        let completion = match Arc::try_unwrap(opaque) {
            // The only owner (all but await mode, or a future dropped already): no lock to take.
            Ok(slot) => slot.into_inner().unwrap_or_else(PoisonError::into_inner),
            Err(shared) => {
                let mut slot = crate::lock(&shared);
                if let Completion::Await(awaited) = &mut *slot {
                    let waiting = std::mem::replace(awaited, Awaited::Done(outcome(result)));
                    drop(slot);
                    if let Awaited::Waiting(Some(waker)) = waiting {
                        waker.wake();
                    }
                    return;
                }
                std::mem::replace(&mut *slot, Completion::Forget)
            }
        };
        match completion {
            Completion::Forget => {
                if let Err((error, message)) = result {
                    forgotten_failure(error, message);
                }
            }
            Completion::Handler(context) => {
                // Only sent when there is a handler.
                if let Some(handler) = &self.handler {
                    let handled = match result {
                        Ok(message) => Ok(Delivered { message, context }),
                        Err((error, message)) => Err(ProduceError {
                            error: Error::Kafka(error.clone()),
                            message: OwnedRecord::from_message(message),
                            context,
                        }),
                    };
                    // As for callbacks: a panic must not kill the thread serving the reports.
                    let _ = crate::error::catch_panic("the delivery handler", || handler(handled));
                }
            }
            // Its future is gone: nobody waits for the outcome.
            Completion::Await(_) => {}
            Completion::Callback(context, callback) => {
                let result = with_context(outcome(result), context);
                // A panicking callback must not kill the polling thread, which serves every
                // other message's report. The panic is logged, with its message, as an error.
                let _ = crate::error::catch_panic("a delivery callback", || callback(result));
            }
        }
    }

    fn get_custom_partitioner(&self) -> Option<&Md5Partitioner> {
        self.partitioner.as_ref()
    }
}

/// Logs the failure of a message nobody waits for.
fn forgotten_failure(error: &rdkafka::error::KafkaError, message: &BorrowedMessage<'_>) {
    tracing::warn!(
        topic = message.topic(),
        partition = message.partition(),
        key = ?message.key().map(String::from_utf8_lossy),
        error = %error,
        "kafka_kit: fire-and-forget message not delivered"
    );
}

/// The delivery report of an enqueued message, from [`Producer::enqueue`](super::Producer::enqueue).
#[must_use = "a delivery future does nothing unless awaited; drop it to ignore the result"]
pub struct DeliveryFuture<C: Send + 'static = ()> {
    pub(super) slot: Opaque<C>,
    pub(super) context: Option<C>,
}

impl<C: Send + 'static> fmt::Debug for DeliveryFuture<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryFuture").finish_non_exhaustive()
    }
}

// The context is never pinned: it is only moved out, once.
impl<C: Send + 'static> Unpin for DeliveryFuture<C> {}

impl<C: Send + 'static> Future for DeliveryFuture<C> {
    type Output = std::result::Result<DeliveryReport<C>, ProduceError<C>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = {
            // The opaque gone with no report: only possible if the client was torn down without
            // purging. The message's fate is unknown, and its contents are gone.
            let orphaned = Arc::strong_count(&self.slot) == 1;
            let mut slot = crate::lock(&self.slot);
            let Completion::Await(awaited) = &mut *slot else {
                return Poll::Pending;
            };
            match std::mem::replace(awaited, Awaited::Taken) {
                Awaited::Done(outcome) => outcome,
                Awaited::Waiting(_) if orphaned => Err(Box::new(Failed {
                    error: Error::Closed,
                    message: OwnedRecord::default(),
                })),
                Awaited::Waiting(waker) => {
                    let waker = match waker {
                        Some(w) if w.will_wake(cx.waker()) => w,
                        _ => cx.waker().clone(),
                    };
                    *awaited = Awaited::Waiting(Some(waker));
                    return Poll::Pending;
                }
                // Polled again after completion: a misuse of the future; stay pending rather
                // than panic.
                Awaited::Taken => return Poll::Pending,
            }
        };
        match self.context.take() {
            Some(context) => Poll::Ready(with_context(outcome, context)),
            // Polled again after completion: a misuse of the future; stay pending rather than panic.
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer::Record;

    #[test]
    fn produce_error_shows_message_but_not_payload() {
        let (message, context) = Record::to("orders")
            .key("k-1")
            .payload("secret payload")
            .context(5u8)
            .into_owned();
        let err = ProduceError {
            error: Error::Closed,
            message,
            context,
        };
        let debug = format!("{err:?}");
        assert!(
            debug.contains("k-1") && debug.contains("payload_len: Some(14)"),
            "{debug}"
        );
        assert!(!debug.contains("secret payload"));
        assert_eq!(err.to_string(), "could not produce to `orders`: the producer was closed before the delivery report arrived");
        assert_eq!(err.message.as_record().key, Some(&b"k-1"[..]));
    }

    #[test]
    fn stats_in_flight() {
        let stats = ProducerStats {
            enqueued: 10,
            delivered: 6,
            failed: 1,
        };
        assert_eq!(stats.in_flight(), 3);
    }
}
