//! At-least-once processing: a record is committed only once handled, or dead-lettered.
//!
//! [`AtLeastOnce`] runs your handler on every record of a [`Consumer`]:
//!
//! - a record's offset is committed only after its handler succeeded, or after the record reached
//!   the dead-letter topic; commits go out in batches (by count or interval), not one round trip
//!   per record;
//! - order within a partition is kept; partitions can be processed in parallel, or, with
//!   [`concurrency`](AtLeastOnce::concurrency), many records at once with each key's records in
//!   offset order; commits then never pass a record still being processed;
//! - a failing record is retried as [`RetryPolicy`] says, then sent to the dead-letter topic with
//!   headers naming its origin and the error ([`dead_letter_headers`]); a record whose value
//!   cannot be decoded goes there at once. Processing then goes on: a poison record never stops
//!   its partition, and never vanishes. Without a dead-letter topic, such a record stops the loop
//!   with an error instead, uncommitted, so that it is read again after a restart.
//!
//! ```no_run
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use kafka_kit::config::KafkaConfig;
//! use kafka_kit::consumer::processing::{AtLeastOnce, RetryPolicy};
//! use kafka_kit::consumer::{Consumer, ConsumerRecord, OffsetReset};
//! use kafka_kit::producer::Producer;
//!
//! # async fn run() -> anyhow::Result<()> {
//! let config = KafkaConfig::builder().build()?;
//! let consumer = Consumer::builder(&config).group_id("billing").topics(["orders"])
//!     .offset_reset(OffsetReset::Earliest).build()?;
//! let dead_letters: Producer = Producer::builder(&config).build()?;
//!
//! let stats = AtLeastOnce::new(consumer)
//!     .retry(RetryPolicy::attempts(3).backoff(Duration::from_millis(100)))
//!     .dead_letter(dead_letters, "orders.dlt")
//!     .run_json(|order: serde_json::Value, record: Arc<ConsumerRecord>| async move {
//!         println!("{:?}: {order}", record.key_str());
//!         Ok::<_, anyhow::Error>(())
//!     }, tokio::signal::ctrl_c())
//!     .await?;
//! println!("{stats:?}");
//! # Ok(()) }
//! ```

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::consumer::CommitMode;
use serde::de::DeserializeOwned;
use tokio::task::JoinSet;

use futures_util::FutureExt as _;

use super::{CommitOffsets, Consumer, ConsumerHandle, ConsumerRecord, InFlight, WeakHandle};

mod keyed;

use crate::config::{ConfigError, Problem};
use crate::error::{Error, Result};
use crate::headers::Headers;
use crate::producer::{Producer, Record};
pub use keyed::KeylessOrder;
use keyed::{Keyed, LaneBy, Placed};

/// Header names on dead-lettered records (the original headers are kept too).
pub mod dead_letter_headers {
    /// The topic the record was read from.
    pub const ORIGINAL_TOPIC: &str = "dlt.original.topic";
    /// Its partition, in decimal.
    pub const ORIGINAL_PARTITION: &str = "dlt.original.partition";
    /// Its offset, in decimal.
    pub const ORIGINAL_OFFSET: &str = "dlt.original.offset";
    /// What went wrong, as text.
    pub const ERROR: &str = "dlt.error";
    /// How many times the handler ran (0: the value could not be decoded).
    pub const ATTEMPTS: &str = "dlt.attempts";
}

/// How often a failing record is tried before it is dead-lettered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    attempts: u32,
    backoff: Duration,
    max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Three attempts, 100 ms apart at first, doubling up to 5 s.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// One attempt: no retry.
    pub fn none() -> Self {
        RetryPolicy {
            attempts: 1,
            ..Self::default()
        }
    }

    /// `attempts` in all (at least one).
    pub fn attempts(attempts: u32) -> Self {
        RetryPolicy {
            attempts: attempts.max(1),
            ..Self::default()
        }
    }

    /// The wait before the first retry; it doubles for each later one.
    pub fn backoff(mut self, backoff: Duration) -> Self {
        self.backoff = backoff;
        self
    }

    /// The longest wait between attempts.
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// How many attempts in all.
    pub(crate) fn max_attempts(&self) -> u32 {
        self.attempts
    }

    /// The wait before retry number `retry` (from 0).
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        self.backoff
            .saturating_mul(1 << retry.min(16))
            .min(self.max_backoff)
    }
}

/// What an [`AtLeastOnce`] loop did.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessingStats {
    /// Records whose handler succeeded.
    pub processed: u64,
    /// Handler runs that failed and were retried.
    pub retries: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Batch commits sent.
    pub commits: u64,
}

#[derive(Default)]
struct Counters {
    processed: AtomicU64,
    retries: AtomicU64,
    dead_lettered: AtomicU64,
    commits: AtomicU64,
    /// Records finished (processed or dead-lettered) since the last commit.
    since_commit: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ProcessingStats {
        ProcessingStats {
            processed: self.processed.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
        }
    }
}

/// An at-least-once processing loop over a [`Consumer`]. See the [module docs](self).
#[must_use = "an `AtLeastOnce` does nothing until `run` (or `run_json`) is awaited"]
pub struct AtLeastOnce {
    consumer: Consumer,
    commit_records: u64,
    commit_interval: Duration,
    retry: RetryPolicy,
    dead_letter: Option<(Producer, String)>,
    parallel: bool,
    concurrency: usize,
    keyless: KeylessOrder,
    progress: Arc<Shared>,
}

impl std::fmt::Debug for AtLeastOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtLeastOnce")
            .field("commit_records", &self.commit_records)
            .field("commit_interval", &self.commit_interval)
            .field("retry", &self.retry)
            .field("dead_letter", &self.dead_letter.as_ref().map(|d| &d.1))
            .field("parallel", &self.parallel)
            .field("concurrency", &self.concurrency)
            .field("keyless", &self.keyless)
            .finish()
    }
}

/// What a handler's run of one record came to.
enum Outcome {
    Done,
    /// Its partition was revoked meanwhile: the new owner processes it.
    Abandoned,
}

impl AtLeastOnce {
    /// A loop over `consumer`: commits every 500 records or every second, three attempts per
    /// record, no dead-letter topic, partitions one after another.
    pub fn new(consumer: Consumer) -> Self {
        AtLeastOnce {
            consumer,
            commit_records: 500,
            commit_interval: Duration::from_secs(1),
            retry: RetryPolicy::default(),
            dead_letter: None,
            parallel: false,
            concurrency: 1,
            keyless: KeylessOrder::default(),
            progress: Arc::default(),
        }
    }

    /// Commits once `records` records are finished, or `interval` after the last commit,
    /// whichever comes first. A zero interval is refused: [`run`](Self::run) returns a
    /// [`ConfigError`] naming it.
    pub fn commit_every(mut self, records: u64, interval: Duration) -> Self {
        self.commit_records = records.max(1);
        self.commit_interval = interval;
        self
    }

    /// How failing records are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Sends records that keep failing, or cannot be decoded, to `topic` through `producer`.
    pub fn dead_letter(mut self, producer: Producer, topic: impl Into<String>) -> Self {
        self.dead_letter = Some((producer, topic.into()));
        self
    }

    /// Processes partitions in parallel, each in order (default: one record at a time).
    pub fn parallel_partitions(mut self, parallel: bool) -> Self {
        self.parallel = parallel;
        self
    }

    /// Processes up to `records` records at once (default 1): records of one key one after
    /// another, in offset order, and different keys in parallel, whatever partition they are
    /// in. Records without a key follow [`keyless`](Self::keyless). Retries and dead letters
    /// work per record, as without concurrency.
    ///
    /// Commits never pass a record that is not finished: a partition commits up to its first
    /// record still in processing (or waiting behind its key), so after a crash every record is
    /// processed at least once, and only records past that point that had already finished are
    /// processed again. A revoke waits for the revoked partitions' records in processing (up to
    /// the consumer's revoke timeout) and commits what they finished; a lost partition commits
    /// nothing.
    ///
    /// Memory stays bounded: at most 256 records wait per key (past that, the key's partition
    /// is paused until half of them are done) and 16,384 in all (past that, reading stops).
    /// `0` counts as 1.
    pub fn concurrency(mut self, records: usize) -> Self {
        self.concurrency = records.max(1);
        self
    }

    /// How records without a key are ordered under [`concurrency`](Self::concurrency): per
    /// partition (the default), or not at all.
    pub fn keyless(mut self, order: KeylessOrder) -> Self {
        self.keyless = order;
        self
    }

    /// A live view of the loop, to keep before [`run`](Self::run): records processed, in
    /// processing and waiting, and each partition's commit point.
    pub fn progress(&self) -> Progress {
        Progress(self.progress.clone())
    }

    /// Runs `handler` on every record until `shutdown` completes, the consumer's stream ends, or a
    /// record fails for good without a dead-letter topic. Commits what was finished before it
    /// returns, and closes the consumer.
    pub async fn run<F, Fut, E>(
        self,
        handler: F,
        shutdown: impl Future<Output = impl Sized>,
    ) -> Result<ProcessingStats>
    where
        F: Fn(Arc<ConsumerRecord>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send,
        E: Display,
    {
        self.run_with(|_| Ok(()), move |(): (), record| handler(record), shutdown)
            .await
    }

    /// Like [`run`](Self::run), with each value decoded from JSON first; a value that cannot be
    /// decoded goes straight to the dead-letter topic.
    pub async fn run_json<T, F, Fut, E>(
        self,
        handler: F,
        shutdown: impl Future<Output = impl Sized>,
    ) -> Result<ProcessingStats>
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(T, Arc<ConsumerRecord>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send,
        E: Display,
    {
        self.run_with(|record| Ok(record.json()?), handler, shutdown)
            .await
    }

    async fn run_with<T, F, Fut, E>(
        self,
        decode: fn(&ConsumerRecord) -> Result<T>,
        handler: F,
        shutdown: impl Future<Output = impl Sized>,
    ) -> Result<ProcessingStats>
    where
        T: Send + 'static,
        F: Fn(T, Arc<ConsumerRecord>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send,
        E: Display,
    {
        let AtLeastOnce {
            mut consumer,
            commit_records,
            commit_interval,
            retry,
            dead_letter,
            parallel,
            concurrency,
            keyless,
            progress,
        } = self;
        if let Some(problem) = Problem::zero_duration("commit_every interval", commit_interval) {
            consumer.close().await?;
            return Err(ConfigError::single(problem).into());
        }
        let handle = consumer.handle();
        let worker = Arc::new(Worker {
            handle: handle.clone(),
            decode,
            handler,
            retry,
            dead_letter,
            progress: progress.clone(),
        });
        // Partitions in parallel: one lane per partition, each with a permit when it has work.
        let lanes_by = match (concurrency > 1, parallel) {
            (true, _) => Some((concurrency, LaneBy::Key(keyless))),
            (false, true) => Some((usize::MAX, LaneBy::Partition)),
            (false, false) => None,
        };
        let keyed = lanes_by.map(|(n, by)| Arc::new(Keyed::new(n, by, handle.clone())));
        progress.attach(&handle, keyed.as_ref());
        let mut shutdown = std::pin::pin!(shutdown);
        let mut ticker = tokio::time::interval(commit_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut workers = JoinSet::new();

        let result: Result<()> = loop {
            if worker
                .progress
                .counters
                .since_commit
                .load(Ordering::Relaxed)
                >= commit_records
            {
                if let Err(e) = worker.commit(CommitMode::Async).await {
                    break Err(e);
                }
            }
            // A lane that failed for good stops the loop.
            let mut failed = None;
            while let Some(done) = workers.try_join_next() {
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => failed = Some(e),
                    Err(e) => failed = Some(Error::Background(e)),
                }
            }
            if let Some(e) = failed {
                break Err(e);
            }
            // Too much waiting for keys: make room before reading more.
            if let Some(keyed) = keyed.as_ref().filter(|k| k.is_full()) {
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break Ok(()),
                    () = keyed.room() => {}
                    _ = ticker.tick() => {}
                }
                continue;
            }
            let record = tokio::select! {
                biased;
                _ = &mut shutdown => break Ok(()),
                _ = ticker.tick() => {
                    if let Err(e) = worker.commit(CommitMode::Async).await {
                        break Err(e);
                    }
                    continue;
                }
                record = consumer.recv() => match record {
                    None => break Ok(()),
                    Some(Err(e)) if e.ends_processing() => break Err(e),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "kafka_kit: consumer error; going on");
                        continue;
                    }
                    Some(Ok(record)) => record,
                },
            };
            let in_flight = worker.handle.start(Arc::new(record));
            if let Some(keyed) = &keyed {
                if let Placed::NewLane(id, first) = keyed.place(in_flight) {
                    let (worker, keyed) = (worker.clone(), keyed.clone());
                    workers.spawn(async move {
                        keyed
                            .run_lane(id, first, |in_flight| worker.process(in_flight))
                            .await
                    });
                }
                continue;
            }
            if let Err(e) = worker.process(in_flight).await {
                break Err(e);
            }
        };

        // Stopping: records in processing finish; those still waiting behind their key are
        // given up (commits stop before them, so they are read again after a restart).
        if let Some(keyed) = &keyed {
            keyed.clear();
        }
        let mut result = result;
        while let Some(done) = workers.join_next().await {
            let lane = done.map_err(Error::Background).and_then(|r| r);
            if let (Ok(()), Err(e)) = (&result, lane) {
                result = Err(e);
            }
        }
        // Commit what was finished, even when stopping on an error: those records are done.
        let committed = worker.handle.commit_processed(CommitMode::Sync).await;
        let stats = worker.progress.counters.snapshot();
        // The consumer closes when its last handle goes: drop the loop's first.
        drop((worker, keyed, handle));
        consumer.close().await?;
        tracing::info!(?stats, "kafka_kit: processing loop stopped");
        result.and(committed).map(|()| stats)
    }
}

/// The counts and, once running, the consumer and lanes of a loop, for [`Progress`].
#[derive(Default)]
struct Shared {
    counters: Counters,
    /// Weak: a view must not keep the consumer open after the loop ends or is dropped.
    running: Mutex<Option<(WeakHandle, Option<std::sync::Weak<Keyed>>)>>,
}

impl Shared {
    fn attach(&self, handle: &ConsumerHandle, keyed: Option<&Arc<Keyed>>) {
        *crate::lock(&self.running) = Some((handle.downgrade(), keyed.map(Arc::downgrade)));
    }
}

/// A live view of an [`AtLeastOnce`] loop: see [`AtLeastOnce::progress`].
#[derive(Clone)]
pub struct Progress(Arc<Shared>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Progress").field(&self.snapshot()).finish()
    }
}

/// What an [`AtLeastOnce`] loop is doing now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProgressSnapshot {
    /// The counts so far.
    pub stats: ProcessingStats,
    /// Records being processed now (at most the [`concurrency`](AtLeastOnce::concurrency)).
    pub in_flight: usize,
    /// Records waiting behind an earlier record of their key.
    pub waiting: usize,
    /// The most records waiting for one key.
    pub max_waiting_per_key: usize,
    /// Each owned partition's commit point: the next offset to read that a commit sends now
    /// (never past a record not finished), or the one committed.
    pub commit_points: CommitOffsets,
}

impl Progress {
    /// The loop's state now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let running = crate::lock(&self.0.running).clone();
        let (in_flight, waiting, max_waiting_per_key) = running
            .as_ref()
            .and_then(|(_, keyed)| keyed.as_ref()?.upgrade())
            .map_or((0, 0, 0), |keyed| keyed.load());
        ProgressSnapshot {
            stats: self.0.counters.snapshot(),
            in_flight,
            waiting,
            max_waiting_per_key,
            commit_points: running
                .and_then(|(handle, _)| handle.upgrade())
                .map(|handle| handle.commit_points())
                .unwrap_or_default(),
        }
    }
}

struct Worker<T, F> {
    handle: ConsumerHandle,
    decode: fn(&ConsumerRecord) -> Result<T>,
    handler: F,
    retry: RetryPolicy,
    dead_letter: Option<(Producer, String)>,
    progress: Arc<Shared>,
}

impl<T, F, Fut, E> Worker<T, F>
where
    T: Send + 'static,
    F: Fn(T, Arc<ConsumerRecord>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), E>> + Send,
    E: Display,
{
    /// Processes one record to its end: done (processed or dead-lettered), given up (its
    /// partition went), or failed for good (an error: the loop stops).
    async fn process(&self, in_flight: InFlight) -> Result<()> {
        let record = in_flight.record().clone();
        let outcome = self.handle_record(&record).await;
        let done = matches!(outcome, Ok(Outcome::Done));
        in_flight.finish(done);
        if done {
            self.progress
                .counters
                .since_commit
                .fetch_add(1, Ordering::Relaxed);
        }
        outcome.map(drop)
    }

    async fn handle_record(&self, record: &Arc<ConsumerRecord>) -> Result<Outcome> {
        if !self.handle.is_current(record) {
            return Ok(Outcome::Abandoned);
        }
        let value = match (self.decode)(record) {
            Ok(value) => Some(value),
            Err(e) => return self.dead_letter(record, &e.to_string(), 0).await,
        };
        let mut value = value;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let decoded = match value.take() {
                Some(v) => v,
                // Retries decode again: the handler consumed the value.
                None => match (self.decode)(record) {
                    Ok(v) => v,
                    Err(e) => return self.dead_letter(record, &e.to_string(), attempt - 1).await,
                },
            };
            // As text at once: the error type need not be `Send`. A panic is a failed attempt
            // like any other: a record that makes the handler panic is retried, then
            // dead-lettered, and never takes the loop down.
            let run = AssertUnwindSafe((self.handler)(decoded, record.clone())).catch_unwind();
            let result = match run.await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(panic) => Err(Error::panicked("the handler", &*panic).to_string()),
            };
            match result {
                Ok(()) => {
                    self.progress
                        .counters
                        .processed
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(Outcome::Done);
                }
                Err(e) if attempt >= self.retry.attempts => {
                    return self.dead_letter(record, &e, attempt).await;
                }
                Err(e) => {
                    self.progress
                        .counters
                        .retries
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(topic = record.topic(), partition = record.partition(), offset = record.offset(),
                        attempt, error = %e, "kafka_kit: handler failed; retrying");
                    tokio::time::sleep(self.retry.delay(attempt - 1)).await;
                    if !self.handle.owns(record.topic(), record.partition()) {
                        return Ok(Outcome::Abandoned);
                    }
                }
            }
        }
    }

    /// Sends `record` to the dead-letter topic, retrying the send while the partition is owned.
    async fn dead_letter(
        &self,
        record: &ConsumerRecord,
        error: &str,
        attempts: u32,
    ) -> Result<Outcome> {
        let Some((producer, topic)) = &self.dead_letter else {
            return Err(Error::Processing {
                topic: record.topic().to_owned(),
                partition: record.partition(),
                offset: record.offset(),
                attempts,
                message: error.to_owned(),
            });
        };
        let headers = dead_letter_headers(record, error, attempts);
        let mut delay = self.retry.backoff;
        loop {
            let mut message = Record::to(topic).headers(headers.clone());
            if let Some(key) = record.key() {
                message = message.key(key);
            }
            if let Some(payload) = record.payload() {
                message = message.payload(payload);
            }
            match producer.send(message).await {
                Ok(report) => {
                    self.progress
                        .counters
                        .dead_lettered
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(topic = record.topic(), partition = record.partition(), offset = record.offset(),
                        attempts, error, dead_letter_topic = %topic, dead_letter_offset = report.offset,
                        "kafka_kit: record dead-lettered");
                    return Ok(Outcome::Done);
                }
                Err(failed) => {
                    tracing::error!(topic = record.topic(), partition = record.partition(), offset = record.offset(),
                        error = %failed.error, "kafka_kit: could not dead-letter a record; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.retry.max_backoff);
                    if !self.handle.owns(record.topic(), record.partition()) {
                        return Ok(Outcome::Abandoned);
                    }
                }
            }
        }
    }

    /// Commits what was finished; a failure is retried by the next commit, unless it must stop
    /// the loop (a panicking checkpoint store).
    async fn commit(&self, mode: CommitMode) -> Result<()> {
        if self
            .progress
            .counters
            .since_commit
            .swap(0, Ordering::Relaxed)
            == 0
        {
            return Ok(());
        }
        match self.handle.commit_processed(mode).await {
            Ok(()) => drop(
                self.progress
                    .counters
                    .commits
                    .fetch_add(1, Ordering::Relaxed),
            ),
            Err(e) if e.ends_processing() => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "kafka_kit: batch commit failed; the next one retries");
            }
        }
        Ok(())
    }
}

pub(crate) fn dead_letter_headers(record: &ConsumerRecord, error: &str, attempts: u32) -> Headers {
    let original = record.owned_headers().cloned().unwrap_or_default();
    Headers::from(original)
        .insert(dead_letter_headers::ORIGINAL_TOPIC, record.topic())
        .insert(
            dead_letter_headers::ORIGINAL_PARTITION,
            record.partition().to_string(),
        )
        .insert(
            dead_letter_headers::ORIGINAL_OFFSET,
            record.offset().to_string(),
        )
        .insert(dead_letter_headers::ERROR, error)
        .insert(dead_letter_headers::ATTEMPTS, attempts.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let policy = RetryPolicy::attempts(5)
            .backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(350));
        let delays: Vec<u128> = (0..4).map(|r| policy.delay(r).as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        assert_eq!(RetryPolicy::attempts(0).attempts, 1);
    }
}
