//! A producer with three send modes, whose every result carries the message's key and your context.
//!
//! [`Producer<C>`] sends [`Record`]s. `C` is a per-message context of your type (a request id, a
//! retry count, a span): you attach it with [`Record::context`], and it comes back with the result,
//! together with the message key, topic, partition, offset and timestamp. A failure hands back the
//! whole message (key, payload, headers) and the context, so nothing is ever lost silently.
//!
//! # Three ways to send
//!
//! | mode | call | you get | use it for |
//! |---|---|---|---|
//! | await | [`send`](Producer::send) | a [`DeliveryReport`] or a [`ProduceError`] | request/response code; await each one to send synchronously |
//! | pipelined await | [`enqueue`](Producer::enqueue) | a [`DeliveryFuture`] to await later | many messages in flight, results in order |
//! | callback | [`send_with_callback`](Producer::send_with_callback) | your closure is called with the result | per-message handling, a closure each |
//! | handler | [`send_to_handler`](Producer::send_to_handler) | the producer's [`on_delivery`](ProducerBuilder::on_delivery) handler is called with a borrowed report and your context | per-message handling at nearly the cost of fire-and-forget |
//! | fire-and-forget | [`send_and_forget`](Producer::send_and_forget) | nothing per message; failures are counted ([`stats`](Producer::stats)) and logged | metrics, logs: throughput over certainty |
//!
//! ```no_run
//! use kafka_kit::config::{KafkaConfig, Preset};
//! use kafka_kit::producer::{Producer, Record};
//!
//! # async fn run() -> anyhow::Result<()> {
//! let config = KafkaConfig::builder().preset(Preset::Reliable).build()?;
//! let producer: Producer<u64> = Producer::builder(&config).build()?;
//!
//! let report = producer
//!     .send(Record::to("user-events").key("1001").payload("{\"event\":\"login\"}").context(7))
//!     .await?;
//! println!("key {:?} -> partition {} offset {} (request {})",
//!     report.key_lossy(), report.partition, report.offset, report.context);
//!
//! producer.send_with_callback(
//!     Record::to("user-events").key("1002").payload("...").context(8),
//!     |result| match result {
//!         Ok(report) => println!("delivered {:?}", report.key_lossy()),
//!         Err(failed) => eprintln!("{} failed: {}", failed.context, failed.error),
//!     },
//! ).await?;
//!
//! producer.close().await?; // flushes everything still in flight
//! # Ok(()) }
//! ```
//!
//! # One handler for every report
//!
//! A closure per message costs an allocation and an owned report per message. When every
//! message's result is handled the same way, give the producer one handler instead: it sees each
//! report borrowed (a [`Delivered`]: topic, partition, offset and key, copied only if you copy
//! them) with the record's context, at nearly the cost of fire-and-forget.
//!
//! ```no_run
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use kafka_kit::config::KafkaConfig;
//! use kafka_kit::producer::{Producer, Record};
//!
//! # async fn run() -> anyhow::Result<()> {
//! let config = KafkaConfig::builder().build()?;
//! let failed = Arc::new(AtomicU64::new(0));
//! let producer: Producer<u64> = Producer::builder(&config)
//!     .on_delivery({
//!         let failed = failed.clone();
//!         move |result| match result {
//!             Ok(delivered) => tracing::debug!(request = delivered.context,
//!                 partition = delivered.partition(), offset = delivered.offset(), "stored"),
//!             Err(e) => {
//!                 failed.fetch_add(1, Ordering::Relaxed);
//!                 tracing::warn!(request = e.context, key = ?e.message.key, error = %e.error, "not stored");
//!             }
//!         }
//!     })
//!     .build()?;
//! for request in 0..1_000u64 {
//!     producer
//!         .send_to_handler(Record::to("audit").key("user-7").payload("…").context(request))
//!         .await?;
//! }
//! producer.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Partitioning
//!
//! Messages without an explicit partition are routed as the builder's
//! [`Partitioning`] says: Python-compatible MD5 by default, in
//! every send mode.
//!
//! # Backpressure instead of loss
//!
//! librdkafka buffers messages in a bounded local queue (`queue.buffering.max.messages`,
//! `queue.buffering.max.kbytes`). When it is full, sending *waits* for deliveries to make room, up
//! to [`ProducerBuilder::queue_full_timeout`], and only then fails, returning the message in the
//! error. Waiting needs a Tokio runtime with its timer enabled (the `#[tokio::main]` default).
//!
//! # Flush on close
//!
//! [`Producer::close`] waits for every message in flight. Dropping the last handle of a producer
//! does the same, blocking for up to [`ProducerBuilder::close_timeout`]; messages still undelivered
//! then are purged, and their results (an error with the message) still reach their futures and
//! callbacks.
//!
//! # Where reports are handled
//!
//! Delivery reports (and so callbacks, the handler and the wake-ups of delivery futures) are
//! served by one thread at a time, in order: while a task sends fast, by that task itself, inline
//! in every 64th send, and otherwise by the producer's polling thread. Serving them where the
//! messages were sent is what makes kafka-kit's producer cheaper than rdkafka's
//! `ThreadedProducer` (see the README's performance section). Keep callbacks short: they hold up
//! every other report, and the send they run in.

mod builder;
mod client;
mod delivery;
mod record;

pub use builder::ProducerBuilder;
pub use delivery::{
    Delivered, DeliveryFuture, DeliveryReport, DeliveryResultOf, Handled, ProduceError,
    ProducerStats,
};
pub use record::{OwnedRecord, Record};

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};
use serde::Serialize;

use crate::config::{ConfigError, KafkaConfig, Problem};
use crate::error::{Error, Result};
use crate::partitioner::{Md5Partitioner, Partitioning};
use delivery::{Awaited, Completion, KitContext, Opaque, Shared};

struct Inner<C: Send + 'static> {
    client: Arc<client::Client<C>>,
    queue_full_timeout: Duration,
    close_timeout: Duration,
}

impl<C: Send + 'static> Inner<C> {
    fn producer(&self) -> &BaseProducer<KitContext<C>, Md5Partitioner> {
        &self.client.producer
    }

    /// What the senders share with the delivery callback.
    fn shared(&self) -> &Shared {
        &self.producer().context().shared
    }

    /// The opaque of fire-and-forget messages.
    fn forget(&self) -> Opaque<C> {
        self.producer().context().forget.clone()
    }
}

impl<C: Send + 'static> Drop for Inner<C> {
    fn drop(&mut self) {
        self.client.stop(self.close_timeout);
    }
}

/// A timeout for an rdkafka call. rdkafka turns a `Duration` into a deadline by adding it to
/// `Instant::now()` (a panic for `Duration::MAX`) or into librdkafka's `i32` milliseconds (a silent
/// wrap above `i32::MAX`): anything that long means no deadline.
pub(crate) fn rdkafka_timeout(timeout: Duration) -> rdkafka::util::Timeout {
    if timeout.as_millis() > i32::MAX as u128 {
        rdkafka::util::Timeout::Never
    } else {
        rdkafka::util::Timeout::After(timeout)
    }
}

/// A Kafka producer. Cheap to clone: clones share one librdkafka client. See the
/// [module documentation](self).
pub struct Producer<C: Send + 'static = ()> {
    inner: Arc<Inner<C>>,
}

impl<C: Send + 'static> Clone for Producer<C> {
    fn clone(&self) -> Self {
        Producer {
            inner: self.inner.clone(),
        }
    }
}

impl<C: Send + 'static> fmt::Debug for Producer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

type Pending<'a, C> = BaseRecord<'a, [u8], [u8], Opaque<C>>;

impl<C: Send + 'static> Producer<C> {
    /// Starts building a producer from a checked configuration.
    pub fn builder(config: &KafkaConfig) -> ProducerBuilder<C> {
        ProducerBuilder {
            config: config.clone(),
            partitioning: Partitioning::default(),
            queue_full_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(30),
            handler: None,
            _context: PhantomData,
        }
    }

    /// Sends a record and waits for its delivery report. Awaiting each send in turn is synchronous
    /// sending: slow, and every message's fate known before the next one goes.
    pub async fn send(
        &self,
        record: Record<'_, C>,
    ) -> std::result::Result<DeliveryReport<C>, ProduceError<C>> {
        self.enqueue(record).await?.await
    }

    /// Encodes `value` as JSON, sends it as the record's payload and waits for the delivery report.
    pub async fn send_json<T: Serialize + ?Sized>(
        &self,
        record: Record<'_, C>,
        value: &T,
    ) -> std::result::Result<DeliveryReport<C>, ProduceError<C>> {
        match serde_json::to_vec(value) {
            Ok(json) => self.send(record.payload(&json)).await,
            Err(e) => {
                let (message, context) = record.into_owned();
                Err(ProduceError {
                    error: Error::Encode(e),
                    message,
                    context,
                })
            }
        }
    }

    /// Enqueues a record and returns a future of its delivery report, to await later. Enqueue many
    /// and await them in order to have many messages in flight.
    pub async fn enqueue(
        &self,
        record: Record<'_, C>,
    ) -> std::result::Result<DeliveryFuture<C>, ProduceError<C>> {
        let (pending, context) = base_record(record, |context| {
            (Completion::Await(Awaited::Waiting(None)), context)
        });
        let slot = pending.delivery_opaque.clone();
        match self.produce(pending).await {
            Ok(()) => Ok(DeliveryFuture {
                slot,
                context: Some(context),
            }),
            Err((error, pending)) => Err(ProduceError {
                error,
                message: give_back(pending).0,
                context,
            }),
        }
    }

    /// Sends a record; `callback` receives its delivery report (or the failure) where reports are
    /// served (see [the module documentation](self#where-reports-are-handled)). A record that cannot even be enqueued is returned at once, and the callback
    /// is not called.
    pub async fn send_with_callback<F>(
        &self,
        record: Record<'_, C>,
        callback: F,
    ) -> std::result::Result<(), ProduceError<C>>
    where
        F: FnOnce(DeliveryResultOf<C>) + Send + 'static,
    {
        let (pending, ()) = base_record(record, |context| {
            (Completion::Callback(context, Box::new(callback)), ())
        });
        match self.produce(pending).await {
            Ok(()) => Ok(()),
            Err((error, pending)) => {
                let (message, completion) = give_back(pending);
                let Completion::Callback(context, _) = completion else {
                    unreachable!("the completion given back is the one passed in")
                };
                Err(ProduceError {
                    error,
                    message,
                    context,
                })
            }
        }
    }

    /// Sends a record whose report goes, with the record's context, to the producer's delivery
    /// handler ([`ProducerBuilder::on_delivery`]): per-message results at the cost of
    /// fire-and-forget. A record that cannot even be enqueued is returned at once, and the handler
    /// is not called; a producer built without a handler refuses every record this way, with a
    /// [`ConfigError`].
    pub async fn send_to_handler(
        &self,
        record: Record<'_, C>,
    ) -> std::result::Result<(), ProduceError<C>> {
        if self.inner.producer().context().handler.is_none() {
            let (message, context) = record.into_owned();
            return Err(ProduceError {
                error: ConfigError::single(Problem::Missing {
                    property: "on_delivery".into(),
                    reason: "send_to_handler needs the producer's delivery handler: ProducerBuilder::on_delivery".into(),
                })
                .into(),
                message,
                context,
            });
        }
        let (pending, ()) = base_record(record, |context| (Completion::Handler(context), ()));
        match self.produce(pending).await {
            Ok(()) => Ok(()),
            Err((error, pending)) => {
                let (message, completion) = give_back(pending);
                let Completion::Handler(context) = completion else {
                    unreachable!("the completion given back is the one passed in")
                };
                Err(ProduceError {
                    error,
                    message,
                    context,
                })
            }
        }
    }

    /// Sends a record without a per-message result: fastest, and the caller never learns whether it
    /// arrived. Delivery failures are counted in [`stats`](Self::stats) and logged as `tracing`
    /// warnings. A record that cannot even be enqueued is returned, with its context.
    pub async fn send_and_forget<D>(
        &self,
        record: Record<'_, D>,
    ) -> std::result::Result<(), ProduceError<D>> {
        // Every message sent this way shares one opaque: nothing to allocate.
        let (pending, context) = with_opaque(record, |context| (self.inner.forget(), context));
        match self.produce(pending).await {
            Ok(()) => Ok(()),
            Err((error, pending)) => Err(ProduceError {
                error,
                message: give_back(pending).0,
                context,
            }),
        }
    }

    /// Waits until every message in flight has been delivered or has failed, or `timeout` passes
    /// (a `Flush` error with code `TimedOut`, and the messages stay in flight). `Duration::MAX`
    /// waits with no deadline; `Duration::ZERO` only checks.
    ///
    /// It returns as soon as the last report is handled: unlike rdkafka's `flush`, which polls in
    /// 100 ms slices, it is woken by the delivery reports themselves.
    pub async fn flush(&self, timeout: Duration) -> Result<()> {
        let deadline = crate::deadline(timeout);
        loop {
            if self.inner.producer().in_flight_count() == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut).into());
            }
            // Asks librdkafka to send lingering batches now; it returns at once.
            self.inner.client.nudge();
            self.wait_for_report(deadline).await;
        }
    }

    /// Flushes every message in flight (up to the close timeout) and releases this handle. The
    /// client shuts down when its last handle is gone.
    pub async fn close(self) -> Result<()> {
        let timeout = self.inner.close_timeout;
        self.flush(timeout).await
    }

    /// Messages enqueued, delivered and failed so far.
    pub fn stats(&self) -> ProducerStats {
        let shared = self.inner.shared();
        ProducerStats {
            enqueued: shared.enqueued.get(),
            delivered: shared.delivered.get(),
            failed: shared.failed.get(),
        }
    }

    /// The client's statistics reports, as they come (needs
    /// [`statistics_interval`](crate::config::ConfigBuilder::statistics_interval)).
    pub fn client_stats(
        &self,
    ) -> futures_util::stream::BoxStream<'static, Arc<crate::monitoring::ClientStats>> {
        self.inner.shared().stats.subscribe()
    }

    /// Messages in librdkafka's queues, in flight, or with a report not yet handled.
    pub fn in_flight(&self) -> usize {
        self.inner.producer().in_flight_count().max(0) as usize
    }

    /// The underlying rdkafka producer, for what kafka-kit doesn't wrap (metadata, transactions'
    /// raw calls). Don't send through it: its messages would bypass kafka-kit's delivery handling.
    pub fn rdkafka(&self) -> &BaseProducer<impl ProducerContext<Md5Partitioner>, Md5Partitioner> {
        self.inner.producer()
    }

    /// Enqueues, waiting for room while the local queue is full, up to the queue-full timeout.
    async fn produce<'a>(
        &self,
        mut pending: Pending<'a, C>,
    ) -> std::result::Result<(), (Error, Pending<'a, C>)> {
        let mut deadline = None;
        loop {
            match self.inner.producer().send(pending) {
                Ok(()) => {
                    if self
                        .inner
                        .shared()
                        .enqueued
                        .add()
                        .is_multiple_of(client::SERVE_EVERY)
                    {
                        self.inner.client.serve_inline();
                    }
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    pending = back;
                    // Serving the reports that are ready makes room at once, if there are any.
                    let reported = self.inner.shared().reported();
                    self.inner.client.serve_inline();
                    if self.inner.shared().reported() != reported {
                        continue;
                    }
                    let deadline = *deadline
                        .get_or_insert_with(|| crate::deadline(self.inner.queue_full_timeout));
                    if Instant::now() >= deadline {
                        tracing::warn!(topic = pending.topic, waited = ?self.inner.queue_full_timeout,
                            "kafka_kit: local queue still full, message handed back");
                        return Err((
                            KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull).into(),
                            pending,
                        ));
                    }
                    self.wait_for_report(deadline).await;
                }
                Err((error, back)) => return Err((error.into(), back)),
            }
        }
    }

    /// Waits for a delivery report (which frees room in the queue), briefly: a report may have come
    /// between the caller's last check and this wait, so callers check again every few
    /// milliseconds regardless.
    async fn wait_for_report(&self, deadline: Instant) {
        let shared = self.inner.shared();
        shared.waiters.fetch_add(1, Ordering::AcqRel);
        let notified = shared.room.notified();
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(5));
        let _ = tokio::time::timeout(wait, notified).await;
        shared.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The librdkafka record of `record`, with the completion `completion` makes of its context
/// (and whatever of the context it keeps for the caller).
fn base_record<'a, C: Send, D, R>(
    record: Record<'a, D>,
    completion: impl FnOnce(D) -> (Completion<C>, R),
) -> (Pending<'a, C>, R) {
    with_opaque(record, |context| {
        let (completion, kept) = completion(context);
        (Arc::new(Mutex::new(completion)), kept)
    })
}

/// The librdkafka record of `record`, with the opaque `opaque` makes of its context.
fn with_opaque<'a, C: Send, D, R>(
    record: Record<'a, D>,
    opaque: impl FnOnce(D) -> (Opaque<C>, R),
) -> (Pending<'a, C>, R) {
    let (opaque, kept) = opaque(record.context);
    let pending = BaseRecord {
        topic: record.topic,
        partition: record.partition,
        payload: record.payload,
        key: record.key,
        timestamp: record.timestamp,
        headers: record.headers,
        delivery_opaque: opaque,
    };
    (pending, kept)
}

/// Takes a record that librdkafka refused apart: the message, copied, and the completion.
fn give_back<C: Send>(pending: Pending<'_, C>) -> (OwnedRecord, Completion<C>) {
    let message = OwnedRecord {
        topic: pending.topic.to_owned(),
        partition: pending.partition,
        key: pending.key.map(<[u8]>::to_vec),
        payload: pending.payload.map(<[u8]>::to_vec),
        timestamp: pending.timestamp,
        headers: pending.headers,
    };
    (
        message,
        std::mem::replace(
            &mut *crate::lock(&pending.delivery_opaque),
            Completion::Forget,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rdkafka_timeouts_beyond_i32_millis_mean_never() {
        use rdkafka::util::Timeout;
        let limit = Duration::from_millis(i32::MAX as u64);
        assert_eq!(
            rdkafka_timeout(Duration::ZERO),
            Timeout::After(Duration::ZERO)
        );
        assert_eq!(rdkafka_timeout(limit), Timeout::After(limit));
        assert_eq!(
            rdkafka_timeout(limit + Duration::from_millis(1)),
            Timeout::Never
        );
        assert_eq!(rdkafka_timeout(Duration::MAX), Timeout::Never);
    }
}
