//! Transactions: a transactional producer, and an exactly-once consume-transform-produce pipeline.
//!
//! # The transactional producer
//!
//! [`TransactionalProducer`] is a [`Producer`] with a `transactional.id`: the records it sends
//! between [`begin`](TransactionalProducer::begin) and
//! [`commit`](TransactionalProducer::commit) become visible to `read_committed` readers all
//! together, or, after [`abort`](TransactionalProducer::abort), never. Consumer offsets can join
//! the transaction ([`send_offsets`](TransactionalProducer::send_offsets)), so that "these inputs
//! were processed" and "these outputs were written" happen as one.
//!
//! ```no_run
//! use kafka_kit::config::KafkaConfig;
//! use kafka_kit::consumer::{CommitOffsets, Consumer};
//! use kafka_kit::error::Recovery;
//! use kafka_kit::producer::Record;
//! use kafka_kit::transaction::TransactionalProducer;
//! use kafka_kit::Error;
//! use std::time::Duration;
//!
//! # async fn run(mut consumer: Consumer) -> anyhow::Result<()> {
//! let config = KafkaConfig::builder().build()?;
//! let producer: TransactionalProducer = TransactionalProducer::builder(&config, "points-1").build()?;
//! producer.init(Duration::from_secs(30)).await?; // fences older instances with the same id
//!
//! // Errors the consumer recovers from by itself (a broker restarting, GROUP_ID_NOT_FOUND for a
//! // new group) are skipped; a fatal one, or a caught panic, ends the read.
//! let record = loop {
//!     match consumer.recv().await.expect("a record") {
//!         Ok(record) => break record,
//!         Err(e) if e.is_fatal() || matches!(e, Error::Panicked { .. }) => return Err(e.into()),
//!         Err(e) => eprintln!("consumer error, reading on: {e}"),
//!     }
//! };
//! producer.begin()?;
//! producer.send(Record::to("processed-events").key("1001").payload("{...}")).await?;
//! let mut offsets = CommitOffsets::new();
//! offsets.insert_after(&record); // the next offset to read: record.offset() + 1
//! let group = consumer.group_metadata().expect("a consumer in a group");
//! let committed = async {
//!     producer.send_offsets(&offsets, group).await?;
//!     producer.commit().await
//! };
//! match committed.await {
//!     Ok(()) => {}
//!     Err(e) if e.recovery() == Recovery::Fatal => return Err(e.into()), // fenced: stop
//!     Err(_) => producer.abort().await?, // then rewind the consumer and process again
//! }
//! # Ok(()) }
//! ```
//!
//! # Errors: retry, abort, or stop
//!
//! Every error of a transaction call says what to do next ([`Error::recovery`]):
//! [`Recovery::Retry`](crate::error::Recovery::Retry) the same call, [`Recovery::Abort`](crate::error::Recovery::Abort) the transaction (and rewind the
//! input), or [`Recovery::Fatal`](crate::error::Recovery::Fatal): the producer is finished, most often because a newer instance
//! with the same `transactional.id` fenced it. A producer that hit a fatal error refuses every
//! later call with [`Error::Unusable`].
//!
//! # Exactly-once processing
//!
//! Getting the loop around those calls right under rebalances, aborts, crashes and fencing is
//! the hard part: [`ExactlyOnce`] does it. See its docs.

mod core;
mod pipeline;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::producer::Producer as _;
use rdkafka::util::Timeout;
use serde::Serialize;

use crate::config::{ConfigError, KafkaConfig, Problem};
use crate::consumer::{CommitOffsets, ConsumerGroupMetadata};
use crate::error::{Error, Result};
use crate::lock;
use crate::producer::{
    DeliveryFuture, DeliveryReport, DeliveryResultOf, ProduceError, Producer, ProducerBuilder,
    Record,
};

pub use pipeline::{ExactlyOnce, ExactlyOnceBuilder, ExactlyOnceStats, Progress};

/// Builds a [`TransactionalProducer`]: see [`TransactionalProducer::builder`].
#[must_use = "a builder does nothing until `build()` is called"]
pub struct TransactionalProducerBuilder<C = ()> {
    /// The producer's own options, composed rather than repeated: see
    /// [`producer`](Self::producer).
    producer: ProducerBuilder<C>,
    transactional_id: String,
    transaction_timeout: Option<Duration>,
    operation_timeout: Duration,
}

impl<C> fmt::Debug for TransactionalProducerBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionalProducerBuilder")
            .field("producer", &self.producer)
            .field("transactional_id", &self.transactional_id)
            .field("transaction_timeout", &self.transaction_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .finish_non_exhaustive()
    }
}

impl<C: Send + 'static> TransactionalProducerBuilder<C> {
    /// How long a transaction may stay open before the broker aborts it
    /// (`transaction.timeout.ms`; librdkafka's default is 60 s). Messages are given the same
    /// delivery timeout unless one is set.
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = Some(timeout);
        self
    }

    /// How long `send_offsets`, `commit` and `abort` wait for the broker (default 60 s). 24.8
    /// days (librdkafka's limit) or more, `Duration::MAX` included, means no timeout.
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// The producer's own options (partitioning, the full-queue wait, …), set on its
    /// [`ProducerBuilder`]: the transactional producer is a [`Producer`] with a transactional
    /// id, and takes the same options.
    ///
    /// ```
    /// # use kafka_kit::{config::KafkaConfig, partitioner::Partitioning};
    /// # use kafka_kit::transaction::TransactionalProducer;
    /// # fn f() -> kafka_kit::Result<()> {
    /// # let config = KafkaConfig::builder().build()?;
    /// let builder = TransactionalProducer::<()>::builder(&config, "points-0")
    ///     .producer(|p| p.partitioning(Partitioning::Murmur2Random));
    /// # Ok(()) }
    /// ```
    pub fn producer(
        mut self,
        options: impl FnOnce(ProducerBuilder<C>) -> ProducerBuilder<C>,
    ) -> Self {
        self.producer = options(self.producer);
        self
    }

    /// Creates the producer, reporting every problem of the configuration at once. Call
    /// [`TransactionalProducer::init`] before the first transaction.
    pub fn build(self) -> Result<TransactionalProducer<C>> {
        let base = self.producer.config().clone();
        let mut problems = transactional_problems(&base);
        if self.transactional_id.trim().is_empty() {
            problems.push(Problem::Missing {
                property: "transactional.id".into(),
                reason: "a transactional producer needs an id that stays the same across restarts"
                    .into(),
            });
        }
        problems.extend(
            [
                ("transaction.timeout.ms", self.transaction_timeout),
                ("operation_timeout", Some(self.operation_timeout)),
            ]
            .into_iter()
            .filter_map(|(setting, d)| Problem::zero_duration(setting, d?)),
        );
        if let Some(timeout) = self
            .transaction_timeout
            .filter(|t| t.as_millis() > i32::MAX as u128)
        {
            problems.push(Problem::InvalidValue {
                property: "transaction.timeout.ms".into(),
                value: format!("{timeout:?}"),
                reason: "librdkafka takes at most 2147483647 ms (24.8 days), and the broker's \
                         transaction.max.timeout.ms is 15 minutes by default"
                    .into(),
            });
        }
        if !problems.is_empty() {
            return Err(ConfigError::from_problems(problems).into());
        }
        let mut extra = vec![("transactional.id", self.transactional_id.clone())];
        let timeout = self
            .transaction_timeout
            .map(|t| t.as_millis().to_string())
            .or_else(|| base.get("transaction.timeout.ms").map(str::to_owned));
        if let Some(timeout) = &timeout {
            extra.push(("transaction.timeout.ms", timeout.clone()));
        }
        // librdkafka refuses a message timeout longer than the transaction timeout.
        if base.get("message.timeout.ms").is_none() && base.get("delivery.timeout.ms").is_none() {
            extra.push((
                "message.timeout.ms",
                timeout.unwrap_or_else(|| "60000".into()),
            ));
        }
        let config = base.with(extra)?;
        let producer = self.producer.with_config(config).build()?;
        Ok(TransactionalProducer {
            producer,
            state: Arc::new(State {
                transactional_id: self.transactional_id,
                operation_timeout: self.operation_timeout,
                fatal: Mutex::new(None),
            }),
        })
    }
}

/// `timeout` for a librdkafka call. rdkafka hands librdkafka a `Duration` as `i32` milliseconds
/// by a truncating cast (25 days become a negative number, which librdkafka reads as "no
/// timeout" or as one already passed), and its `commit_transaction` adds the timeout to
/// `Instant::now()`, which panics for `Duration::MAX`. From `i32::MAX` milliseconds (24.8 days)
/// up, it is no timeout at all.
fn librdkafka_timeout(timeout: Duration) -> Timeout {
    if timeout.as_millis() >= i32::MAX as u128 {
        Timeout::Never
    } else {
        Timeout::After(timeout)
    }
}

/// Settings a transactional producer cannot work with.
pub(crate) fn transactional_problems(config: &KafkaConfig) -> Vec<Problem> {
    let mut problems = Vec::new();
    if config.get("enable.idempotence") == Some("false") {
        problems.push(Problem::Conflict {
            property: "enable.idempotence".into(),
            reason: "transactions need the idempotent producer; remove the setting".into(),
        });
    }
    if let Some(acks) = crate::config::acks_not_all(|key| config.get(key)) {
        problems.push(Problem::Conflict {
            property: "acks".into(),
            reason: format!("transactions need acks=all, not {acks}"),
        });
    }
    problems
}

struct State {
    transactional_id: String,
    operation_timeout: Duration,
    /// The fatal error that ended the producer, if one did.
    fatal: Mutex<Option<String>>,
}

/// A producer whose sends are grouped in transactions. See the [module docs](self).
///
/// It has the [`Producer`]'s send modes, results and backpressure; clones share one producer,
/// and so one transaction at a time.
pub struct TransactionalProducer<C: Send + 'static = ()> {
    producer: Producer<C>,
    state: Arc<State>,
}

impl<C: Send + 'static> Clone for TransactionalProducer<C> {
    fn clone(&self) -> Self {
        TransactionalProducer {
            producer: self.producer.clone(),
            state: self.state.clone(),
        }
    }
}

impl<C: Send + 'static> fmt::Debug for TransactionalProducer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionalProducer")
            .field("transactional_id", &self.state.transactional_id)
            .field("fatal", &*lock(&self.state.fatal))
            .finish_non_exhaustive()
    }
}

impl<C: Send + 'static> TransactionalProducer<C> {
    /// A builder for a producer with this `transactional.id`. The id names the producer across
    /// restarts: a new instance with the same id fences the old one, and aborts what it left
    /// open. Give each instance of a pipeline its own stable id (say, the service name and the
    /// instance's number).
    pub fn builder(
        config: &KafkaConfig,
        transactional_id: impl Into<String>,
    ) -> TransactionalProducerBuilder<C> {
        TransactionalProducerBuilder {
            producer: Producer::builder(config),
            transactional_id: transactional_id.into(),
            transaction_timeout: None,
            operation_timeout: Duration::from_secs(60),
        }
    }

    /// The `transactional.id`.
    pub fn transactional_id(&self) -> &str {
        &self.state.transactional_id
    }

    /// Registers the id with the transaction coordinator, fencing any older instance with the
    /// same id and aborting the transaction it left open. Call it once, before the first
    /// [`begin`](Self::begin); it is safe to call again after a retriable error. A `timeout` of
    /// 24.8 days or more (`Duration::MAX` included) means none.
    pub async fn init(&self, timeout: Duration) -> Result<()> {
        self.check()?;
        let (producer, timeout) = (self.producer.clone(), librdkafka_timeout(timeout));
        let result =
            crate::blocking(move || Ok(producer.rdkafka().init_transactions(timeout)?)).await;
        if result.is_ok() {
            tracing::info!(
                transactional_id = %self.state.transactional_id,
                "kafka_kit: transactional producer initialized"
            );
        }
        self.note(result)
    }

    /// Starts a transaction: everything sent until [`commit`](Self::commit) or
    /// [`abort`](Self::abort) belongs to it. Only local state changes: it does not wait.
    pub fn begin(&self) -> Result<()> {
        self.check()?;
        let result = self
            .producer
            .rdkafka()
            .begin_transaction()
            .map_err(Error::from);
        self.note(result)
    }

    /// Adds consumer offsets to the transaction: they are committed for the consumer's group if,
    /// and only if, the transaction commits. `offsets` are next offsets to read
    /// ([`CommitOffsets::insert_after`] gives `record.offset() + 1`), never the records' own;
    /// `group` comes from [`Consumer::group_metadata`](crate::consumer::Consumer::group_metadata),
    /// taken now, so that the broker can refuse offsets from a member that was rebalanced away.
    pub async fn send_offsets(
        &self,
        offsets: &CommitOffsets,
        group: ConsumerGroupMetadata,
    ) -> Result<()> {
        self.check()?;
        if offsets.is_empty() {
            return Ok(());
        }
        let (producer, list, timeout) = (
            self.producer.clone(),
            offsets.to_list(),
            librdkafka_timeout(self.state.operation_timeout),
        );
        let result = crate::blocking(move || {
            Ok(producer
                .rdkafka()
                .send_offsets_to_transaction(&list, &group, timeout)?)
        })
        .await;
        self.note(result)
    }

    /// Commits the transaction: flushes what was sent, then makes it and the offsets sent with
    /// it visible together. On [`Recovery::Retry`](crate::error::Recovery::Retry), call `commit` again; on
    /// [`Recovery::Abort`](crate::error::Recovery::Abort), [`abort`](Self::abort).
    pub async fn commit(&self) -> Result<()> {
        self.check()?;
        let (producer, timeout) = (
            self.producer.clone(),
            librdkafka_timeout(self.state.operation_timeout),
        );
        let result =
            crate::blocking(move || Ok(producer.rdkafka().commit_transaction(timeout)?)).await;
        self.note(result)
    }

    /// Aborts the transaction: what was sent in it is never shown to `read_committed` readers,
    /// and its offsets are not committed. Messages still queued fail with a purge error.
    pub async fn abort(&self) -> Result<()> {
        self.check()?;
        let (producer, timeout) = (
            self.producer.clone(),
            librdkafka_timeout(self.state.operation_timeout),
        );
        let result =
            crate::blocking(move || Ok(producer.rdkafka().abort_transaction(timeout)?)).await;
        self.note(result)
    }

    /// Sends a record in the current transaction and waits for its delivery. See
    /// [`Producer::send`].
    pub async fn send(
        &self,
        record: Record<'_, C>,
    ) -> std::result::Result<DeliveryReport<C>, ProduceError<C>> {
        let record = self.refuse_if_unusable(record)?;
        let result = self.producer.send(record).await;
        self.note_failed(result)
    }

    /// Sends a JSON value in the current transaction. See [`Producer::send_json`].
    pub async fn send_json<T: Serialize + ?Sized>(
        &self,
        record: Record<'_, C>,
        value: &T,
    ) -> std::result::Result<DeliveryReport<C>, ProduceError<C>> {
        let record = self.refuse_if_unusable(record)?;
        let result = self.producer.send_json(record, value).await;
        self.note_failed(result)
    }

    /// Enqueues a record in the current transaction; await the future for its delivery. See
    /// [`Producer::enqueue`].
    pub async fn enqueue(
        &self,
        record: Record<'_, C>,
    ) -> std::result::Result<DeliveryFuture<C>, ProduceError<C>> {
        let record = self.refuse_if_unusable(record)?;
        let result = self.producer.enqueue(record).await;
        self.note_failed(result)
    }

    /// Sends a record in the current transaction; `callback` gets its result. See
    /// [`Producer::send_with_callback`].
    pub async fn send_with_callback<F>(
        &self,
        record: Record<'_, C>,
        callback: F,
    ) -> std::result::Result<(), ProduceError<C>>
    where
        F: FnOnce(DeliveryResultOf<C>) + Send + 'static,
    {
        let record = self.refuse_if_unusable(record)?;
        self.producer.send_with_callback(record, callback).await
    }

    /// Sends a record in the current transaction without a per-message result. A failed
    /// delivery still makes the commit fail (and asks for an abort): nothing is lost silently.
    pub async fn send_and_forget<D>(
        &self,
        record: Record<'_, D>,
    ) -> std::result::Result<(), ProduceError<D>> {
        if let Err(error) = self.check() {
            return Err(record.refused(error));
        }
        self.producer.send_and_forget(record).await
    }

    /// The underlying producer, for its statistics.
    pub fn producer(&self) -> &Producer<C> {
        &self.producer
    }

    /// The error that ended the producer, if one did.
    fn check(&self) -> Result<()> {
        match &*lock(&self.state.fatal) {
            None => Ok(()),
            Some(cause) => Err(Error::Unusable {
                transactional_id: self.state.transactional_id.clone(),
                cause: cause.clone(),
            }),
        }
    }

    // The refused record is handed back whole, as every send's error does (`ProduceError`).
    #[allow(clippy::result_large_err)]
    fn refuse_if_unusable<'r>(
        &self,
        record: Record<'r, C>,
    ) -> std::result::Result<Record<'r, C>, ProduceError<C>> {
        match self.check() {
            Ok(()) => Ok(record),
            Err(error) => Err(record.refused(error)),
        }
    }

    /// Remembers a fatal error: later calls are refused with it.
    fn note<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            self.remember(e);
        }
        result
    }

    /// [`note`](Self::note) for a send's result.
    #[allow(clippy::result_large_err)] // passes a send's result through, as it is
    fn note_failed<T, D>(
        &self,
        result: std::result::Result<T, ProduceError<D>>,
    ) -> std::result::Result<T, ProduceError<D>> {
        if let Err(failed) = &result {
            self.remember(&failed.error);
        }
        result
    }

    fn remember(&self, error: &Error) {
        if error.is_fatal() && !matches!(error, Error::Unusable { .. }) {
            tracing::error!(transactional_id = %self.state.transactional_id, error = %error,
                "kafka_kit: transactional producer hit a fatal error and can no longer be used");
            lock(&self.state.fatal).get_or_insert_with(|| error.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_timeouts_mean_none_for_librdkafka() {
        let second = Duration::from_secs(1);
        assert_eq!(librdkafka_timeout(second), Timeout::After(second));
        let limit = Duration::from_millis(i32::MAX as u64);
        assert_eq!(
            librdkafka_timeout(limit.checked_sub(Duration::from_millis(1)).unwrap()),
            Timeout::After(limit.checked_sub(Duration::from_millis(1)).unwrap())
        );
        // 25 days: rdkafka's cast would make it negative.
        for long in [limit, Duration::from_secs(25 * 24 * 3600), Duration::MAX] {
            assert_eq!(librdkafka_timeout(long), Timeout::Never, "{long:?}");
        }
    }
}
