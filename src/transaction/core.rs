//! The exactly-once pipeline's decisions, apart from any I/O.
//!
//! [`Core`] decides when a transaction begins and commits, what is aborted and where the input is
//! rewound, what a revoke, a lost partition, a failed transform or a fenced producer lead to. It
//! talks to its input and its output only through the small [`Source`] and [`Sink`] traits: the
//! pipeline implements them over a [`Consumer`](crate::consumer::Consumer) and a
//! [`TransactionalProducer`](super::TransactionalProducer), and the tests below over fakes that
//! record every call and fail where a test says, so that each interleaving is checked exactly.

use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::consumer::processing::{dead_letter_headers, RetryPolicy};
use crate::consumer::{CommitOffsets, ConsumerRecord, NextOffset};
use crate::error::{Error, Recovery, Result};
use crate::producer::OwnedRecord;

/// Where records come from: a consumer.
pub(crate) trait Source {
    /// The next record; `None` when the input has ended.
    async fn next(&mut self) -> Option<Result<Arc<ConsumerRecord>>>;
    /// Whether offsets of this partition may still be committed (owned, or being revoked).
    fn may_commit(&self, topic: &str, partition: i32) -> bool;
    /// Whether a revoke is waiting for a partition's work to end.
    fn revoke_pending(&self) -> bool;
    /// Completes when a revoke starts (or spuriously).
    fn revoke_started(&self) -> impl Future<Output = ()> + Send + 'static;
    /// The open transaction holds records of this partition: a revoke waits for it.
    fn hold(&self, topic: &str, partition: i32);
    /// Ends a [`hold`](Self::hold).
    fn release(&self, topic: &str, partition: i32);
    /// Moves partitions back to these offsets; later records of them start there.
    async fn rewind(&mut self, to: &CommitOffsets) -> Result<()>;
}

/// Where results go: a transactional producer.
pub(crate) trait Sink {
    /// Begins a transaction.
    fn begin(&mut self) -> Result<()>;
    /// Sends a record in the transaction, on behalf of input number `input` of it. An error here
    /// means the record was not enqueued.
    async fn produce(&mut self, input: usize, record: OwnedRecord) -> Result<()>;
    /// Waits for the deliveries of the transaction: the first failed one, by input number.
    async fn flush(&mut self) -> Option<(usize, Error)>;
    /// Adds the consumer's offsets (next to read) to the transaction.
    async fn send_offsets(&mut self, offsets: &CommitOffsets) -> Result<()>;
    /// Commits the transaction.
    async fn commit(&mut self) -> Result<()>;
    /// Aborts the transaction.
    async fn abort(&mut self) -> Result<()>;
}

/// How the pipeline batches and retries.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    /// A transaction commits once it holds this many input records…
    pub(crate) max_records: usize,
    /// …or this long after it began.
    pub(crate) interval: Duration,
    /// How often an input whose transform (or output) fails is tried before it is
    /// dead-lettered; also the backoff after an abort.
    pub(crate) retry: RetryPolicy,
    /// The dead-letter topic, written inside the transaction.
    pub(crate) dead_letter: Option<String>,
    /// How many times a retriable `send_offsets`, `commit` or `abort` is retried.
    pub(crate) call_retries: u32,
}

/// What the pipeline did, counted as it goes.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) committed: AtomicU64,
    pub(crate) aborted: AtomicU64,
    pub(crate) records_in: AtomicU64,
    pub(crate) records_out: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) retries: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// An input record, by position.
type InputId = (String, i32, i64);

/// The open transaction.
struct Batch {
    began: Instant,
    /// Its inputs, in order: outputs and their failures name inputs by index here.
    inputs: Vec<InputId>,
    /// Where each partition's first input was: an abort rewinds there.
    starts: CommitOffsets,
    /// The next offsets to read after its inputs: committed with it.
    positions: CommitOffsets,
    outputs: u64,
    dead_lettered: u64,
}

/// Why the loop stopped reading.
enum Event {
    Record(Option<Result<Arc<ConsumerRecord>>>),
    Due,
    Revoke,
    Shutdown,
}

/// The pipeline's loop. See the [module docs](self).
pub(crate) struct Core<S, K> {
    pub(crate) source: S,
    pub(crate) sink: K,
    settings: Settings,
    counters: Arc<Counters>,
    /// Failed attempts of inputs not yet committed, with the last error.
    failures: HashMap<InputId, (u32, String)>,
    batch: Option<Batch>,
    /// Aborts since the last commit: the backoff grows with them.
    aborts_in_a_row: u32,
}

impl<S: Source, K: Sink> Core<S, K> {
    pub(crate) fn new(source: S, sink: K, settings: Settings, counters: Arc<Counters>) -> Self {
        Core {
            source,
            sink,
            settings,
            counters,
            failures: HashMap::new(),
            batch: None,
            aborts_in_a_row: 0,
        }
    }

    /// Runs until `shutdown` completes or the input ends (committing the open transaction
    /// first), or until an error that stops it: a fatal one (the producer was fenced), a
    /// record that failed for good with no dead-letter topic, or a rewind that failed.
    pub(crate) async fn run<F, Fut, E>(
        &mut self,
        transform: F,
        shutdown: impl Future<Output = impl Sized>,
    ) -> Result<()>
    where
        F: Fn(Arc<ConsumerRecord>) -> Fut,
        Fut: Future<Output = std::result::Result<Vec<OwnedRecord>, E>>,
        E: Display,
    {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let due = self
                .batch
                .as_ref()
                .map(|b| b.began + self.settings.interval);
            let revoke = self.source.revoke_started();
            let event = tokio::select! {
                biased;
                _ = &mut shutdown => Event::Shutdown,
                _ = revoke, if due.is_some() => Event::Revoke,
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => Event::Due,
                record = self.source.next() => Event::Record(record),
            };
            match event {
                Event::Shutdown | Event::Record(None) => return self.commit().await,
                Event::Due => self.commit().await?,
                Event::Revoke => {
                    if self.source.revoke_pending() {
                        self.commit().await?;
                    }
                }
                Event::Record(Some(Err(e))) if e.is_fatal() => {
                    self.abort_if_open(&e.to_string()).await?;
                    return Err(e);
                }
                Event::Record(Some(Err(e))) => {
                    tracing::warn!(error = %e, "kafka_kit: consumer error; going on");
                }
                Event::Record(Some(Ok(record))) => {
                    self.process(record, &transform).await?;
                    let full = self
                        .batch
                        .as_ref()
                        .is_some_and(|b| b.inputs.len() >= self.settings.max_records);
                    if full || self.source.revoke_pending() {
                        self.commit().await?;
                    }
                }
            }
        }
    }

    /// Adds one input to the open transaction (beginning one if needed).
    async fn process<F, Fut, E>(&mut self, record: Arc<ConsumerRecord>, transform: &F) -> Result<()>
    where
        F: Fn(Arc<ConsumerRecord>) -> Fut,
        Fut: Future<Output = std::result::Result<Vec<OwnedRecord>, E>>,
        E: Display,
    {
        let (topic, partition) = (record.topic(), record.partition());
        if self.batch.is_none() {
            self.sink.begin()?;
            self.batch = Some(Batch {
                began: Instant::now(),
                inputs: Vec::new(),
                starts: CommitOffsets::new(),
                positions: CommitOffsets::new(),
                outputs: 0,
                dead_lettered: 0,
            });
        }
        let batch = self.batch.as_mut().expect("a transaction is open");
        if batch.starts.get(topic, partition).is_none() {
            batch
                .starts
                .insert(topic, partition, NextOffset::new(record.offset()));
            self.source.hold(topic, partition);
        }
        let index = batch.inputs.len();
        let id: InputId = (topic.to_owned(), partition, record.offset());
        batch.inputs.push(id.clone());

        match self.failures.get(&id) {
            Some((attempts, error)) if *attempts >= self.settings.retry.max_attempts() => {
                let Some(dead_letter) = &self.settings.dead_letter else {
                    let error = Error::Processing {
                        topic: topic.to_owned(),
                        partition,
                        offset: record.offset(),
                        attempts: *attempts,
                        message: error.clone(),
                    };
                    self.abort_if_open(&error.to_string()).await?;
                    return Err(error);
                };
                let letter = dead_letter_record(dead_letter, &record, error, *attempts);
                tracing::warn!(topic, partition, offset = record.offset(), attempts, error = %error,
                    dead_letter_topic = %dead_letter, "kafka_kit: record dead-lettered in the transaction");
                if let Err(e) = self.sink.produce(index, letter).await {
                    return self.failed(Some(index), e).await;
                }
                self.batch.as_mut().expect("open").dead_lettered += 1;
            }
            _ => match transform(record.clone()).await {
                Ok(outputs) => {
                    let produced = outputs.len() as u64;
                    for output in outputs {
                        if let Err(e) = self.sink.produce(index, output).await {
                            return self.failed(Some(index), e).await;
                        }
                    }
                    self.batch.as_mut().expect("open").outputs += produced;
                }
                Err(e) => {
                    let error = e.to_string();
                    self.count_failure(&id, &error);
                    add(&self.counters.retries, 1);
                    return self
                        .abort(&format!(
                            "transform failed on {topic}[{partition}]@{}: {error}",
                            record.offset()
                        ))
                        .await;
                }
            },
        }
        self.batch
            .as_mut()
            .expect("open")
            .positions
            .insert_after(&record);
        Ok(())
    }

    /// Commits the open transaction, if there is one: its outputs, then its offsets.
    async fn commit(&mut self) -> Result<()> {
        let Some(batch) = &self.batch else {
            return Ok(());
        };
        if let Some((index, error)) = self.sink.flush().await {
            return self.failed(Some(index), error).await;
        }
        // Never commit offsets of a partition this member no longer owns.
        let lost: Vec<String> = batch
            .starts
            .iter()
            .filter(|(t, p, _)| !self.source.may_commit(t, *p))
            .map(|(t, p, _)| format!("{t}[{p}]"))
            .collect();
        if !lost.is_empty() {
            return self
                .abort(&format!(
                    "partitions lost before the commit: {}",
                    lost.join(", ")
                ))
                .await;
        }
        let positions = batch.positions.clone();
        if let Err(e) = self.call(Call::SendOffsets(&positions)).await {
            return self.failed(None, e).await;
        }
        if let Err(e) = self.call(Call::Commit).await {
            return self.failed(None, e).await;
        }
        let batch = self.batch.take().expect("open");
        add(&self.counters.committed, 1);
        add(&self.counters.records_in, batch.inputs.len() as u64);
        add(&self.counters.records_out, batch.outputs);
        add(&self.counters.dead_lettered, batch.dead_lettered);
        tracing::debug!(inputs = batch.inputs.len(), outputs = batch.outputs, offsets = ?positions,
            "kafka_kit: transaction committed");
        for id in &batch.inputs {
            self.failures.remove(id);
        }
        self.release(&batch);
        self.aborts_in_a_row = 0;
        Ok(())
    }

    /// What follows an error of the transaction: a retriable or abortable one aborts (an
    /// abortable one counts against the input it came from), a fatal one stops the pipeline.
    async fn failed(&mut self, input: Option<usize>, error: Error) -> Result<()> {
        match error.recovery() {
            Recovery::Fatal => {
                tracing::error!(error = %error, "kafka_kit: transaction failed fatally; the pipeline stops");
                self.batch = None;
                Err(error)
            }
            recovery => {
                let id = input.and_then(|i| self.batch.as_ref()?.inputs.get(i).cloned());
                if let (Recovery::Abort, Some(id)) = (recovery, &id) {
                    self.count_failure(id, &error.to_string());
                }
                let reason = match id {
                    Some((t, p, o)) => format!("output of {t}[{p}]@{o} failed: {error}"),
                    None => error.to_string(),
                };
                self.abort(&reason).await
            }
        }
    }

    fn count_failure(&mut self, id: &InputId, error: &str) {
        let entry = self
            .failures
            .entry(id.clone())
            .or_insert((0, String::new()));
        entry.0 += 1;
        entry.1 = error.to_owned();
    }

    async fn abort_if_open(&mut self, reason: &str) -> Result<()> {
        if self.batch.is_some() {
            self.abort(reason).await?;
        }
        Ok(())
    }

    /// Aborts the open transaction and rewinds its partitions (those still owned) to where it
    /// began, so that its inputs are read again.
    async fn abort(&mut self, reason: &str) -> Result<()> {
        let Some(batch) = self.batch.take() else {
            return Ok(());
        };
        if let Err(e) = self.call(Call::Abort).await {
            self.release(&batch);
            return Err(e);
        }
        add(&self.counters.aborted, 1);
        tracing::warn!(reason, inputs = batch.inputs.len(), rewind_to = ?batch.starts,
            "kafka_kit: transaction aborted; its inputs are read again");
        // Release first: a revoke may be waiting for these partitions, and a rewind waits for the
        // consumer, which waits for the revoke.
        self.release(&batch);
        let mut rewind = batch.starts;
        rewind.retain(|t, p| self.source.may_commit(t, p));
        self.source.rewind(&rewind).await?;
        let delay = self.settings.retry.delay(self.aborts_in_a_row);
        self.aborts_in_a_row = self.aborts_in_a_row.saturating_add(1);
        tokio::time::sleep(delay).await;
        Ok(())
    }

    fn release(&self, batch: &Batch) {
        for (topic, partition, _) in batch.starts.iter() {
            self.source.release(topic, partition);
        }
    }

    /// Makes a transaction call, retrying it while its error says so.
    async fn call(&mut self, call: Call<'_>) -> Result<()> {
        let mut retries = 0;
        loop {
            let result = match call {
                Call::SendOffsets(offsets) => self.sink.send_offsets(offsets).await,
                Call::Commit => self.sink.commit().await,
                Call::Abort => self.sink.abort().await,
            };
            match result {
                Err(e)
                    if e.recovery() == Recovery::Retry && retries < self.settings.call_retries =>
                {
                    tracing::debug!(error = %e, call = call.name(), "kafka_kit: transaction call failed; retrying");
                    tokio::time::sleep(self.settings.retry.delay(retries)).await;
                    retries += 1;
                }
                other => return other,
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Call<'a> {
    SendOffsets(&'a CommitOffsets),
    Commit,
    Abort,
}

impl Call<'_> {
    fn name(&self) -> &'static str {
        match self {
            Call::SendOffsets(_) => "send_offsets",
            Call::Commit => "commit",
            Call::Abort => "abort",
        }
    }
}

/// The record written to the dead-letter topic for an input that failed for good.
fn dead_letter_record(
    topic: &str,
    record: &ConsumerRecord,
    error: &str,
    attempts: u32,
) -> OwnedRecord {
    OwnedRecord {
        topic: topic.to_owned(),
        partition: None,
        key: record.key().map(<[u8]>::to_vec),
        payload: record.payload().map(<[u8]>::to_vec),
        timestamp: None,
        headers: Some(dead_letter_headers(record, error, attempts).into()),
    }
}
