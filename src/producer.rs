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
//! | callback | [`send_with_callback`](Producer::send_with_callback) | your closure is called with the result | high throughput with per-message handling |
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
//! callbacks. Delivery callbacks run on the producer's polling thread: keep them short.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::Timestamp;
use serde::Serialize;
use tokio::sync::{oneshot, Notify};

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::partitioner::{Md5Partitioner, Partitioning};

/// A message to send: topic, optional key, payload, partition, timestamp and headers, and the
/// caller's context `C`. Key and payload are borrowed; librdkafka copies them when the message is
/// enqueued.
pub struct Record<'a, C = ()> {
    topic: &'a str,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    partition: Option<i32>,
    timestamp: Option<i64>,
    headers: Option<OwnedHeaders>,
    context: C,
}

impl<'a> Record<'a> {
    /// A record for `topic`, with no key, no payload and no context yet.
    pub fn to(topic: &'a str) -> Self {
        Record {
            topic,
            key: None,
            payload: None,
            partition: None,
            timestamp: None,
            headers: None,
            context: (),
        }
    }
}

impl<'a, C> Record<'a, C> {
    /// The message key: it picks the partition, and comes back in every result.
    pub fn key<K: AsRef<[u8]> + ?Sized>(mut self, key: &'a K) -> Self {
        self.key = Some(key.as_ref());
        self
    }

    /// The message value.
    pub fn payload<P: AsRef<[u8]> + ?Sized>(mut self, payload: &'a P) -> Self {
        self.payload = Some(payload.as_ref());
        self
    }

    /// Sends to this partition, bypassing the partitioner.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// The message timestamp, in milliseconds since the Unix epoch (default: now).
    pub fn timestamp(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }

    /// The message headers: a [`Headers`](crate::headers::Headers) builder or rdkafka's
    /// `OwnedHeaders`.
    pub fn headers(mut self, headers: impl Into<OwnedHeaders>) -> Self {
        self.headers = Some(headers.into());
        self
    }

    /// Attaches the caller's context, returned with the message's result.
    pub fn context<D>(self, context: D) -> Record<'a, D> {
        let Record {
            topic,
            key,
            payload,
            partition,
            timestamp,
            headers,
            ..
        } = self;
        Record {
            topic,
            key,
            payload,
            partition,
            timestamp,
            headers,
            context,
        }
    }

    /// The topic.
    pub fn topic_name(&self) -> &'a str {
        self.topic
    }

    /// The error for a record that was refused before it was enqueued: the message and the
    /// context are handed back.
    pub(crate) fn refused(self, error: Error) -> ProduceError<C> {
        let (message, context) = self.into_owned();
        ProduceError {
            error,
            message,
            context,
        }
    }

    /// Splits the record into the message (copied) and the context.
    fn into_owned(self) -> (OwnedRecord, C) {
        let message = OwnedRecord {
            topic: self.topic.to_owned(),
            partition: self.partition,
            key: self.key.map(<[u8]>::to_vec),
            payload: self.payload.map(<[u8]>::to_vec),
            timestamp: self.timestamp,
            headers: self.headers,
        };
        (message, self.context)
    }
}

impl<C> fmt::Debug for Record<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic)
            .field("key", &self.key.map(String::from_utf8_lossy))
            .field("payload_len", &self.payload.map(<[u8]>::len))
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

/// A message that was not delivered, handed back whole so that it can be retried or
/// dead-lettered. [`OwnedRecord::as_record`] turns it back into a [`Record`].
#[derive(Clone, Default)]
pub struct OwnedRecord {
    /// The topic.
    pub topic: String,
    /// The partition: the one asked for, or the one the partitioner had chosen.
    pub partition: Option<i32>,
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The payload.
    pub payload: Option<Vec<u8>>,
    /// The timestamp asked for, if any.
    pub timestamp: Option<i64>,
    /// The headers.
    pub headers: Option<OwnedHeaders>,
}

impl OwnedRecord {
    /// A record for `topic`, with nothing else set yet: fill it with the `with_` setters.
    pub fn to(topic: impl Into<String>) -> Self {
        OwnedRecord {
            topic: topic.into(),
            ..Self::default()
        }
    }

    /// With this key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// With this payload.
    pub fn with_payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// With `value` as JSON for its payload.
    pub fn with_json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self> {
        self.payload = Some(serde_json::to_vec(value)?);
        Ok(self)
    }

    /// With these headers.
    pub fn with_headers(mut self, headers: impl Into<OwnedHeaders>) -> Self {
        self.headers = Some(headers.into());
        self
    }

    /// Sent to this partition, bypassing the partitioner.
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// A [`Record`] borrowing this message, to send it again. The partition is not kept: the
    /// partitioner picks it again (the same one, for a keyed message).
    pub fn as_record(&self) -> Record<'_> {
        Record {
            topic: &self.topic,
            key: self.key.as_deref(),
            payload: self.payload.as_deref(),
            partition: None,
            timestamp: self.timestamp,
            headers: self.headers.clone(),
            context: (),
        }
    }

    fn from_message(message: &BorrowedMessage<'_>) -> Self {
        OwnedRecord {
            topic: message.topic().to_owned(),
            partition: Some(message.partition()),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            timestamp: message.timestamp().to_millis(),
            headers: message.headers().map(|h| h.detach()),
        }
    }
}

impl fmt::Debug for OwnedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedRecord")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("key", &self.key.as_deref().map(String::from_utf8_lossy))
            .field("payload_len", &self.payload.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

/// Where a message was stored: the result of a successful send.
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

/// What a delivery report says, before the context is attached.
type Outcome = std::result::Result<DeliveryReport, Failed>;

struct Failed {
    error: Error,
    message: OwnedRecord,
}

fn outcome(result: &DeliveryResult<'_>) -> Outcome {
    match result {
        Ok(message) => Ok(DeliveryReport::from_message(message)),
        Err((error, message)) => Err(Failed {
            error: Error::Kafka(error.clone()),
            message: OwnedRecord::from_message(message),
        }),
    }
}

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

type Callback<C> = Box<dyn FnOnce(DeliveryResultOf<C>) + Send>;

/// What to do when a message's delivery report arrives.
enum Completion<C> {
    Forget,
    Await(oneshot::Sender<Outcome>),
    Callback(C, Callback<C>),
}

/// librdkafka's per-message opaque. The mutex only makes it `Sync`, as rdkafka requires: it is
/// never locked, only taken apart.
type Opaque<C> = Box<Mutex<Completion<C>>>;

/// A counter on its own cache line: senders and the polling thread update different ones.
#[derive(Default)]
#[repr(align(64))]
struct Counter(AtomicU64);

impl Counter {
    fn add(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// State shared by the senders and the delivery callback.
#[derive(Default)]
struct Shared {
    enqueued: Counter,
    delivered: Counter,
    failed: Counter,
    /// Senders waiting for room in the local queue.
    waiters: AtomicUsize,
    room: Notify,
    stats: crate::monitoring::StatsHub,
}

/// Counters of a producer's messages since it was built.
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
struct KitContext<C> {
    partitioner: Option<Md5Partitioner>,
    shared: Arc<Shared>,
    _context: PhantomData<fn() -> C>,
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
        }
        if shared.waiters.load(Ordering::Acquire) > 0 {
            shared.room.notify_waiters();
        }
        match opaque.into_inner().unwrap_or_else(PoisonError::into_inner) {
            Completion::Forget => {
                if let Err((error, message)) = result {
                    tracing::warn!(
                        topic = message.topic(),
                        partition = message.partition(),
                        key = ?message.key().map(String::from_utf8_lossy),
                        error = %error,
                        "kafka_kit: fire-and-forget message not delivered"
                    );
                }
            }
            Completion::Await(sender) => {
                // The receiver may have been dropped: nobody is waiting, nothing to do.
                let _ = sender.send(outcome(result));
            }
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

/// Builds a [`Producer`].
pub struct ProducerBuilder<C = ()> {
    config: KafkaConfig,
    partitioning: Partitioning,
    queue_full_timeout: Duration,
    close_timeout: Duration,
    _context: PhantomData<fn() -> C>,
}

impl<C> fmt::Debug for ProducerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerBuilder")
            .field("config", &self.config)
            .field("partitioning", &self.partitioning)
            .field("queue_full_timeout", &self.queue_full_timeout)
            .field("close_timeout", &self.close_timeout)
            .finish()
    }
}

impl<C: Send + 'static> ProducerBuilder<C> {
    /// How messages without an explicit partition are routed (default: [`Partitioning::Md5`]).
    pub fn partitioning(mut self, partitioning: Partitioning) -> Self {
        self.partitioning = partitioning;
        self
    }

    /// How long a send waits for room when the local queue is full before it fails and hands the
    /// message back (default 30 s). Zero is allowed and fails at once, without waiting: for callers
    /// that would rather retry or shed load themselves. `Duration::MAX` waits with no deadline.
    pub fn queue_full_timeout(mut self, timeout: Duration) -> Self {
        self.queue_full_timeout = timeout;
        self
    }

    /// How long [`Producer::close`], and dropping the producer, wait for messages in flight
    /// (default 30 s). Zero is allowed: `close` then only reports whether anything was still in
    /// flight, and dropping purges at once (the purged messages' results still reach their futures
    /// and callbacks). `Duration::MAX`, or anything above librdkafka's limit of `i32::MAX`
    /// milliseconds (about 24.8 days), waits with no deadline.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Creates the producer.
    pub fn build(self) -> Result<Producer<C>> {
        let (config, partitioner) = match self.partitioning.librdkafka_name() {
            None => {
                let mut extra = Vec::new();
                // librdkafka hands keyless messages to a custom partitioner only without sticky
                // partitioning; keep the user's choice if they made one.
                if self.config.get("sticky.partitioning.linger.ms").is_none() {
                    extra.push(("sticky.partitioning.linger.ms", "0"));
                }
                // rdkafka 0.39 installs a custom partitioner on librdkafka's default topic
                // configuration, which exists only once a topic-level property is set: without
                // one it dereferences NULL. Setting librdkafka's own default makes sure it exists.
                if self.config.get("message.timeout.ms").is_none()
                    && self.config.get("delivery.timeout.ms").is_none()
                {
                    extra.push(("message.timeout.ms", "300000"));
                }
                (self.config.with(extra)?, Some(Md5Partitioner::new()))
            }
            Some(name) => (self.config.with([("partitioner", name)])?, None),
        };
        let shared = Arc::new(Shared::default());
        let context = KitContext {
            partitioner,
            shared: shared.clone(),
            _context: PhantomData,
        };
        let producer: ThreadedProducer<KitContext<C>, Md5Partitioner> =
            config.to_client_config().create_with_context(context)?;
        tracing::debug!(bootstrap = config.bootstrap_servers(), partitioning = ?self.partitioning, "kafka_kit: producer created");
        Ok(Producer {
            inner: Arc::new(Inner {
                producer,
                shared,
                queue_full_timeout: self.queue_full_timeout,
                close_timeout: self.close_timeout,
            }),
        })
    }
}

struct Inner<C: Send + 'static> {
    producer: ThreadedProducer<KitContext<C>, Md5Partitioner>,
    shared: Arc<Shared>,
    queue_full_timeout: Duration,
    close_timeout: Duration,
}

impl<C: Send + 'static> Drop for Inner<C> {
    fn drop(&mut self) {
        if self.producer.in_flight_count() > 0 {
            if let Err(e) = self.producer.flush(rdkafka_timeout(self.close_timeout)) {
                tracing::warn!(
                    undelivered = self.producer.in_flight_count(),
                    error = %e,
                    "kafka_kit: producer dropped before every message was delivered; the rest are purged and reported as failed"
                );
            }
        }
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
        let (sender, receiver) = oneshot::channel();
        let Record {
            topic,
            key,
            payload,
            partition,
            timestamp,
            headers,
            context,
        } = record;
        let pending = base_record(
            topic,
            key,
            payload,
            partition,
            timestamp,
            headers,
            Completion::Await(sender),
        );
        match self.produce(pending).await {
            Ok(()) => Ok(DeliveryFuture {
                receiver,
                context: Some(context),
            }),
            Err((error, pending)) => Err(ProduceError {
                error,
                message: give_back(pending).0,
                context,
            }),
        }
    }

    /// Sends a record; `callback` receives its delivery report (or the failure) on the producer's
    /// polling thread. A record that cannot even be enqueued is returned at once, and the callback
    /// is not called.
    pub async fn send_with_callback<F>(
        &self,
        record: Record<'_, C>,
        callback: F,
    ) -> std::result::Result<(), ProduceError<C>>
    where
        F: FnOnce(DeliveryResultOf<C>) + Send + 'static,
    {
        let Record {
            topic,
            key,
            payload,
            partition,
            timestamp,
            headers,
            context,
        } = record;
        let completion = Completion::Callback(context, Box::new(callback));
        let pending = base_record(
            topic, key, payload, partition, timestamp, headers, completion,
        );
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

    /// Sends a record without a per-message result: fastest, and the caller never learns whether it
    /// arrived. Delivery failures are counted in [`stats`](Self::stats) and logged as `tracing`
    /// warnings. A record that cannot even be enqueued is returned, with its context.
    pub async fn send_and_forget<D>(
        &self,
        record: Record<'_, D>,
    ) -> std::result::Result<(), ProduceError<D>> {
        let Record {
            topic,
            key,
            payload,
            partition,
            timestamp,
            headers,
            context,
        } = record;
        let pending = base_record(
            topic,
            key,
            payload,
            partition,
            timestamp,
            headers,
            Completion::Forget,
        );
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
            if self.inner.producer.in_flight_count() == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut).into());
            }
            // Asks librdkafka to send lingering batches now; it returns at once.
            let _ = self.inner.producer.flush(Duration::ZERO);
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
        let shared = &self.inner.shared;
        ProducerStats {
            enqueued: shared.enqueued.get(),
            delivered: shared.delivered.get(),
            failed: shared.failed.get(),
        }
    }

    /// The client's statistics reports, as they come (needs
    /// [`statistics_interval`](crate::config::ConfigBuilder::statistics_interval)).
    pub fn statistics(
        &self,
    ) -> futures_util::stream::BoxStream<'static, Arc<crate::monitoring::ClientStats>> {
        self.inner.shared.stats.subscribe()
    }

    /// Messages in librdkafka's queues, in flight, or with a report not yet handled.
    pub fn in_flight(&self) -> usize {
        self.inner.producer.in_flight_count().max(0) as usize
    }

    /// The underlying rdkafka producer, for what kafka-kit doesn't wrap (metadata, transactions'
    /// raw calls). Don't send through it: its messages would bypass kafka-kit's delivery handling.
    pub fn rdkafka(
        &self,
    ) -> &ThreadedProducer<impl ProducerContext<Md5Partitioner>, Md5Partitioner> {
        &self.inner.producer
    }

    /// Enqueues, waiting for room while the local queue is full, up to the queue-full timeout.
    async fn produce<'a>(
        &self,
        mut pending: Pending<'a, C>,
    ) -> std::result::Result<(), (Error, Pending<'a, C>)> {
        let mut deadline = None;
        loop {
            match self.inner.producer.send(pending) {
                Ok(()) => {
                    self.inner.shared.enqueued.add();
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    pending = back;
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
        let shared = &self.inner.shared;
        shared.waiters.fetch_add(1, Ordering::AcqRel);
        let notified = shared.room.notified();
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(5));
        let _ = tokio::time::timeout(wait, notified).await;
        shared.waiters.fetch_sub(1, Ordering::AcqRel);
    }
}

fn base_record<'a, C: Send>(
    topic: &'a str,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
    partition: Option<i32>,
    timestamp: Option<i64>,
    headers: Option<OwnedHeaders>,
    completion: Completion<C>,
) -> Pending<'a, C> {
    BaseRecord {
        topic,
        partition,
        payload,
        key,
        timestamp,
        headers,
        delivery_opaque: Box::new(Mutex::new(completion)),
    }
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
        pending
            .delivery_opaque
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner),
    )
}

/// The delivery report of an enqueued message, from [`Producer::enqueue`].
#[must_use = "a delivery future does nothing unless awaited; drop it to ignore the result"]
pub struct DeliveryFuture<C = ()> {
    receiver: oneshot::Receiver<Outcome>,
    context: Option<C>,
}

impl<C> fmt::Debug for DeliveryFuture<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryFuture").finish_non_exhaustive()
    }
}

// The context is never pinned: it is only moved out, once.
impl<C> Unpin for DeliveryFuture<C> {}

impl<C> Future for DeliveryFuture<C> {
    type Output = std::result::Result<DeliveryReport<C>, ProduceError<C>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = match Pin::new(&mut self.receiver).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(outcome)) => outcome,
            // The report was dropped unsent: only possible if the client was torn down without
            // purging. The message's fate is unknown, and its contents are gone.
            Poll::Ready(Err(_)) => Err(Failed {
                error: Error::Closed,
                message: OwnedRecord::default(),
            }),
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
