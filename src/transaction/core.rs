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
    /// Woken after each commit and abort.
    pub(crate) changed: tokio::sync::Notify,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// An input record, by position.
type InputId = (String, i32, i64);

fn input_id(record: &ConsumerRecord) -> InputId {
    (
        record.topic().to_owned(),
        record.partition(),
        record.offset(),
    )
}

/// The open transaction.
struct Batch {
    began: Instant,
    /// Its inputs, in order: outputs and their failures name inputs by index here.
    inputs: Vec<Arc<ConsumerRecord>>,
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
                .map(|b| later(b.began, self.settings.interval));
            let revoke = self.source.revoke_started();
            let event = tokio::select! {
                biased;
                _ = &mut shutdown => Event::Shutdown,
                () = revoke, if due.is_some() => Event::Revoke,
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => Event::Due,
                record = self.source.next() => Event::Record(record),
            };
            match event {
                Event::Shutdown => return self.commit().await,
                // The input ended: commit, unless that aborted and rewound it.
                Event::Record(None) if self.batch.is_none() => return Ok(()),
                Event::Record(None) => self.commit().await?,
                Event::Due => self.commit().await?,
                Event::Revoke => {
                    if self.source.revoke_pending() {
                        self.commit().await?;
                    }
                }
                Event::Record(Some(Err(e))) if e.ends_processing() => {
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
                .insert(topic, partition, NextOffset::resume_at(record.offset()));
            self.source.hold(topic, partition);
        }
        let index = batch.inputs.len();
        batch.inputs.push(record.clone());

        // Most inputs never failed: skip the lookup then.
        let failed = match self.failures.is_empty() {
            true => None,
            false => self.failures.get(&input_id(&record)),
        };
        match failed {
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
                    self.count_failure(&input_id(&record), &error);
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
        self.counters.changed.notify_waiters();
        tracing::debug!(inputs = batch.inputs.len(), outputs = batch.outputs, offsets = ?positions,
            "kafka_kit: transaction committed");
        if !self.failures.is_empty() {
            for input in &batch.inputs {
                self.failures.remove(&input_id(input));
            }
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
                if let Some(batch) = self.batch.take() {
                    self.release(&batch);
                }
                Err(error)
            }
            recovery => {
                let id = input.and_then(|i| Some(input_id(self.batch.as_ref()?.inputs.get(i)?)));
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
        error.clone_into(&mut entry.1);
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
        self.counters.changed.notify_waiters();
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

/// `after` past `at`, saturating: an interval of `Duration::MAX` is a deadline a century away
/// (never, for a transaction), not an overflow panic.
fn later(at: Instant, after: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    at.checked_add(after)
        .or_else(|| at.checked_add(CENTURY))
        .unwrap_or(at)
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

#[cfg(test)]
mod tests {
    //! The core against fakes: every interleaving that matters, with the exact calls it makes.
    //! Time is Tokio's paused clock, so intervals and backoffs are exact and instant.

    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::message::OwnedMessage;
    use rdkafka::Timestamp;
    use tokio::sync::Notify;

    use super::*;
    use crate::headers::HeaderReader;

    type Tp = (String, i32);

    /// What the fakes saw, shared with the test.
    #[derive(Default)]
    struct World {
        calls: Vec<String>,
        /// Outputs of committed transactions, in order.
        committed: Vec<String>,
        /// Outputs of the open transaction.
        open: Vec<String>,
        /// Offsets committed with transactions.
        offsets: BTreeMap<Tp, i64>,
        owned: BTreeSet<Tp>,
        revoking: BTreeSet<Tp>,
        holds: BTreeMap<Tp, usize>,
        /// Headers of the dead letters written, as (name, value) pairs.
        dead_letters: Vec<Vec<(String, String)>>,
        commit_times: Vec<Duration>,
    }

    type Shared = Arc<Mutex<World>>;

    fn world(shared: &Shared) -> std::sync::MutexGuard<'_, World> {
        shared.lock().unwrap()
    }

    fn tp(partition: i32) -> Tp {
        ("in".to_owned(), partition)
    }

    fn show(offsets: &CommitOffsets) -> String {
        let parts: Vec<String> = offsets
            .iter()
            .map(|(t, p, o)| format!("{t}[{p}]={}", o.get()))
            .collect();
        parts.join(" ")
    }

    enum Happening {
        Revoke(i32),
        Lose(i32),
    }

    struct FakeSource {
        world: Shared,
        /// Each partition's records; a record's offset is its index.
        logs: BTreeMap<Tp, Vec<Arc<ConsumerRecord>>>,
        positions: BTreeMap<Tp, i64>,
        delivered: usize,
        /// Happenings, due once that many records were delivered.
        happenings: Vec<(usize, Happening)>,
        /// Whether the input ends when drained (else it waits forever).
        ends: bool,
        revoked: Arc<Notify>,
        turn: usize,
        /// Errors the consumer reports, due once that many records were delivered.
        errors: Vec<(usize, MakeError)>,
    }

    fn fake_source(shared: &Shared, partitions: i32, records: i64, ends: bool) -> FakeSource {
        let mut logs = BTreeMap::new();
        for p in 0..partitions {
            let log = (0..records)
                .map(|o| {
                    let message = OwnedMessage::new(
                        Some(format!("in-{p}-{o}").into_bytes()),
                        Some(format!("key-{o}").into_bytes()),
                        "in".to_owned(),
                        Timestamp::NotAvailable,
                        p,
                        o,
                        None,
                    );
                    Arc::new(ConsumerRecord::new(&message, 0))
                })
                .collect();
            logs.insert(tp(p), log);
            world(shared).owned.insert(tp(p));
        }
        FakeSource {
            world: shared.clone(),
            logs,
            positions: BTreeMap::new(),
            delivered: 0,
            happenings: Vec::new(),
            ends,
            revoked: Arc::new(Notify::new()),
            turn: 0,
            errors: Vec::new(),
        }
    }

    impl FakeSource {
        fn then(mut self, after: usize, happening: Happening) -> Self {
            self.happenings.push((after, happening));
            self
        }

        /// Reports `error` once `after` records were delivered, before the next one.
        fn erring(mut self, after: usize, error: MakeError) -> Self {
            self.errors.push((after, error));
            self
        }

        fn happen(&mut self) {
            let due: Vec<Happening> = {
                let delivered = self.delivered;
                let (due, later) = std::mem::take(&mut self.happenings)
                    .into_iter()
                    .partition(|(after, _)| *after == delivered);
                self.happenings = later;
                due.into_iter().map(|(_, h)| h).collect()
            };
            let mut w = world(&self.world);
            for happening in due {
                match happening {
                    Happening::Revoke(p) => {
                        w.owned.remove(&tp(p));
                        if w.holds.get(&tp(p)).copied().unwrap_or(0) > 0 {
                            w.revoking.insert(tp(p));
                            w.calls.push(format!("revoke in[{p}] (waits)"));
                            self.revoked.notify_one();
                        } else {
                            w.calls.push(format!("revoked in[{p}]"));
                        }
                    }
                    Happening::Lose(p) => {
                        w.owned.remove(&tp(p));
                        w.calls.push(format!("lost in[{p}]"));
                    }
                }
            }
        }
    }

    impl Source for FakeSource {
        async fn next(&mut self) -> Option<Result<Arc<ConsumerRecord>>> {
            self.happen();
            if let Some(i) = self
                .errors
                .iter()
                .position(|(after, _)| *after == self.delivered)
            {
                let (_, error) = self.errors.remove(i);
                let error = error();
                world(&self.world)
                    .calls
                    .push(format!("consumer error: {error}"));
                return Some(Err(error));
            }
            let owned = world(&self.world).owned.clone();
            let readable: Vec<Tp> = self
                .logs
                .iter()
                .filter(|(tp, log)| {
                    owned.contains(*tp)
                        && (self.positions.get(*tp).copied().unwrap_or(0) as usize) < log.len()
                })
                .map(|(tp, _)| tp.clone())
                .collect();
            if readable.is_empty() {
                if self.ends {
                    return None;
                }
                std::future::pending::<()>().await;
            }
            // Round robin over the partitions with something to read.
            let tp = readable[self.turn % readable.len()].clone();
            self.turn += 1;
            let position = self.positions.entry(tp.clone()).or_insert(0);
            let record = self.logs[&tp][*position as usize].clone();
            *position += 1;
            self.delivered += 1;
            Some(Ok(record))
        }

        fn may_commit(&self, topic: &str, partition: i32) -> bool {
            let w = world(&self.world);
            let tp = (topic.to_owned(), partition);
            w.owned.contains(&tp) || w.revoking.contains(&tp)
        }

        fn revoke_pending(&self) -> bool {
            !world(&self.world).revoking.is_empty()
        }

        fn revoke_started(&self) -> impl Future<Output = ()> + Send + 'static {
            let revoked = self.revoked.clone();
            async move { revoked.notified().await }
        }

        fn hold(&self, topic: &str, partition: i32) {
            *world(&self.world)
                .holds
                .entry((topic.to_owned(), partition))
                .or_insert(0) += 1;
        }

        fn release(&self, topic: &str, partition: i32) {
            let mut w = world(&self.world);
            let tp = (topic.to_owned(), partition);
            let holds = w.holds.entry(tp.clone()).or_insert(0);
            *holds = holds.checked_sub(1).expect("released more than held");
            if *holds == 0 && w.revoking.remove(&tp) {
                w.calls.push(format!("revoked {topic}[{partition}]"));
            }
        }

        async fn rewind(&mut self, to: &CommitOffsets) -> Result<()> {
            world(&self.world)
                .calls
                .push(format!("rewind {}", show(to)));
            for (topic, partition, offset) in to.iter() {
                self.positions
                    .insert((topic.to_owned(), partition), offset.get());
            }
            Ok(())
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    enum Op {
        Begin,
        Produce,
        Delivery,
        SendOffsets,
        Commit,
        Abort,
    }

    type MakeError = fn() -> Error;

    fn retriable() -> Error {
        KafkaError::MessageProduction(RDKafkaErrorCode::RequestTimedOut).into()
    }

    fn abortable() -> Error {
        KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge).into()
    }

    fn fenced() -> Error {
        KafkaError::MessageProduction(RDKafkaErrorCode::ProducerFenced).into()
    }

    struct FakeSink {
        world: Shared,
        started: Instant,
        /// Fails the nth (from 1) call of an op with the error.
        failures: Vec<(Op, usize, MakeError)>,
        calls: HashMap<Op, usize>,
        /// Deliveries of the open transaction: input number, payload, failure.
        deliveries: Vec<(usize, String, Option<Error>)>,
        pending_offsets: Option<CommitOffsets>,
    }

    fn fake_sink(shared: &Shared) -> FakeSink {
        FakeSink {
            world: shared.clone(),
            started: Instant::now(),
            failures: Vec::new(),
            calls: HashMap::new(),
            deliveries: Vec::new(),
            pending_offsets: None,
        }
    }

    impl FakeSink {
        fn failing(mut self, op: Op, nth: usize, error: fn() -> Error) -> Self {
            self.failures.push((op, nth, error));
            self
        }

        /// Counts a call of `op`, and says whether it fails.
        fn call(&mut self, op: Op) -> Option<Error> {
            let n = self.calls.entry(op).or_insert(0);
            *n += 1;
            let n = *n;
            self.failures
                .iter()
                .find(|(o, nth, _)| *o == op && *nth == n)
                .map(|(_, _, error)| error())
        }

        fn log(&self, call: String) {
            world(&self.world).calls.push(call);
        }
    }

    impl Sink for FakeSink {
        fn begin(&mut self) -> Result<()> {
            if let Some(e) = self.call(Op::Begin) {
                self.log("begin failed".into());
                return Err(e);
            }
            self.log("begin".into());
            Ok(())
        }

        async fn produce(&mut self, input: usize, record: OwnedRecord) -> Result<()> {
            let payload = String::from_utf8_lossy(record.payload.as_deref().unwrap_or_default());
            let shown = if record.topic == "dlt" {
                let headers = record.headers.clone().unwrap_or_default();
                let pairs = HeaderReader::new(Some(&headers))
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_owned(),
                            String::from_utf8_lossy(v.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect();
                world(&self.world).dead_letters.push(pairs);
                format!("dlt:{payload}")
            } else {
                payload.into_owned()
            };
            if let Some(e) = self.call(Op::Produce) {
                self.log(format!("produce {shown} failed"));
                return Err(e);
            }
            self.log(format!("produce {shown}"));
            let failure = self.call(Op::Delivery);
            self.deliveries.push((input, shown, failure));
            Ok(())
        }

        async fn flush(&mut self) -> Option<(usize, Error)> {
            for (input, shown, failure) in self.deliveries.drain(..) {
                if let Some(e) = failure {
                    world(&self.world)
                        .calls
                        .push(format!("delivery {shown} failed"));
                    return Some((input, e));
                }
                world(&self.world).open.push(shown);
            }
            None
        }

        async fn send_offsets(&mut self, offsets: &CommitOffsets) -> Result<()> {
            if let Some(e) = self.call(Op::SendOffsets) {
                self.log(format!("send_offsets {} failed", show(offsets)));
                return Err(e);
            }
            self.log(format!("send_offsets {}", show(offsets)));
            self.pending_offsets = Some(offsets.clone());
            Ok(())
        }

        async fn commit(&mut self) -> Result<()> {
            if let Some(e) = self.call(Op::Commit) {
                self.log("commit failed".into());
                return Err(e);
            }
            let elapsed = self.started.elapsed();
            let mut w = world(&self.world);
            w.calls.push("commit".into());
            w.commit_times.push(elapsed);
            let open = std::mem::take(&mut w.open);
            w.committed.extend(open);
            for (topic, partition, offset) in self.pending_offsets.take().unwrap_or_default().iter()
            {
                w.offsets
                    .insert((topic.to_owned(), partition), offset.get());
            }
            Ok(())
        }

        async fn abort(&mut self) -> Result<()> {
            if let Some(e) = self.call(Op::Abort) {
                self.log("abort failed".into());
                return Err(e);
            }
            self.deliveries.clear();
            self.pending_offsets = None;
            let mut w = world(&self.world);
            w.calls.push("abort".into());
            w.open.clear();
            Ok(())
        }
    }

    fn settings(max_records: usize) -> Settings {
        Settings {
            max_records,
            interval: Duration::from_millis(100),
            retry: RetryPolicy::attempts(3).backoff(Duration::from_millis(10)),
            dead_letter: Some("dlt".into()),
            call_retries: 3,
        }
    }

    /// One output per input, named after it.
    async fn one_each(
        record: Arc<ConsumerRecord>,
    ) -> std::result::Result<Vec<OwnedRecord>, String> {
        Ok(vec![out(&record)])
    }

    fn out(record: &ConsumerRecord) -> OwnedRecord {
        OwnedRecord::to("out").payload(format!("out-{}-{}", record.partition(), record.offset()))
    }

    /// A transform that fails `times` times on the input at `partition`/`offset`, every time if
    /// `times` is `u32::MAX`.
    fn failing_on(
        partition: i32,
        offset: i64,
        times: u32,
    ) -> impl Fn(Arc<ConsumerRecord>) -> std::future::Ready<std::result::Result<Vec<OwnedRecord>, String>>
    {
        let failed = Mutex::new(0u32);
        move |record| {
            let mut failed = failed.lock().unwrap();
            if (record.partition(), record.offset()) == (partition, offset) && *failed < times {
                *failed += 1;
                return std::future::ready(Err(format!("bad input {offset}")));
            }
            std::future::ready(Ok(vec![out(&record)]))
        }
    }

    fn calls(shared: &Shared) -> Vec<String> {
        world(shared).calls.clone()
    }

    fn strs(calls: &[&str]) -> Vec<String> {
        calls.iter().map(|c| (*c).to_owned()).collect()
    }

    /// Committed outputs: each input's exactly once, in order per partition.
    fn assert_exactly_once(shared: &Shared, partitions: i32, records: i64) {
        let w = world(shared);
        let mut expected: Vec<String> = (0..partitions)
            .flat_map(|p| (0..records).map(move |o| format!("out-{p}-{o}")))
            .collect();
        let mut committed = w.committed.clone();
        expected.sort();
        committed.sort();
        assert_eq!(committed, expected, "committed outputs");
        for p in 0..partitions {
            assert_eq!(w.offsets.get(&tp(p)), Some(&records), "offset of in[{p}]");
        }
    }

    fn new_core(
        source: FakeSource,
        sink: FakeSink,
        settings: Settings,
    ) -> (Core<FakeSource, FakeSink>, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        (
            Core::new(source, sink, settings, counters.clone()),
            counters,
        )
    }

    fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn commits_in_batches_of_max_records() {
        let shared = Shared::default();
        let (mut core, counters) = new_core(
            fake_source(&shared, 1, 10, true),
            fake_sink(&shared),
            settings(4),
        );
        core.run(one_each, std::future::pending::<()>())
            .await
            .unwrap();
        assert_eq!(
            calls(&shared),
            strs(&[
                "begin",
                "produce out-0-0",
                "produce out-0-1",
                "produce out-0-2",
                "produce out-0-3",
                "send_offsets in[0]=4",
                "commit",
                "begin",
                "produce out-0-4",
                "produce out-0-5",
                "produce out-0-6",
                "produce out-0-7",
                "send_offsets in[0]=8",
                "commit",
                "begin",
                "produce out-0-8",
                "produce out-0-9",
                "send_offsets in[0]=10",
                "commit",
            ])
        );
        assert_exactly_once(&shared, 1, 10);
        assert_eq!(
            (
                count(&counters.committed),
                count(&counters.records_in),
                count(&counters.records_out)
            ),
            (3, 10, 10)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn commits_on_the_interval() {
        let shared = Shared::default();
        let (mut core, counters) = new_core(
            fake_source(&shared, 2, 2, false),
            fake_sink(&shared),
            settings(100),
        );
        core.run(one_each, tokio::time::sleep(Duration::from_secs(1)))
            .await
            .unwrap();
        let w = world(&shared);
        assert_eq!(
            w.calls,
            strs(&[
                "begin",
                "produce out-0-0",
                "produce out-1-0",
                "produce out-0-1",
                "produce out-1-1",
                "send_offsets in[0]=2 in[1]=2",
                "commit",
            ])
        );
        // Committed by the interval, not by the shutdown at 1 s.
        assert_eq!(w.commit_times, [Duration::from_millis(100)]);
        drop(w);
        assert_eq!(count(&counters.committed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_commits_the_open_transaction() {
        let shared = Shared::default();
        let mut settings = settings(100);
        settings.interval = Duration::from_secs(60);
        let (mut core, _) = new_core(
            fake_source(&shared, 1, 3, false),
            fake_sink(&shared),
            settings,
        );
        core.run(one_each, tokio::time::sleep(Duration::from_secs(1)))
            .await
            .unwrap();
        let w = world(&shared);
        assert_eq!(w.calls.last().map(String::as_str), Some("commit"));
        assert_eq!(w.commit_times, [Duration::from_secs(1)]);
        drop(w);
        assert_exactly_once(&shared, 1, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn transform_error_aborts_rewinds_and_retries() {
        let shared = Shared::default();
        let (mut core, counters) = new_core(
            fake_source(&shared, 2, 2, true),
            fake_sink(&shared),
            settings(100),
        );
        core.run(failing_on(1, 0, 1), std::future::pending::<()>())
            .await
            .unwrap();
        assert_eq!(
            calls(&shared),
            strs(&[
                "begin",
                "produce out-0-0",
                "abort",
                "rewind in[0]=0 in[1]=0",
                "begin",
                "produce out-0-0",
                "produce out-1-0",
                "produce out-0-1",
                "produce out-1-1",
                "send_offsets in[0]=2 in[1]=2",
                "commit",
            ])
        );
        assert_exactly_once(&shared, 2, 2);
        assert_eq!(
            (
                count(&counters.aborted),
                count(&counters.retries),
                count(&counters.committed)
            ),
            (1, 1, 1)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn poison_input_is_dead_lettered_inside_the_transaction() {
        let shared = Shared::default();
        let (mut core, counters) = new_core(
            fake_source(&shared, 1, 3, true),
            fake_sink(&shared),
            settings(100),
        );
        core.run(failing_on(0, 1, u32::MAX), std::future::pending::<()>())
            .await
            .unwrap();
        let attempt = ["begin", "produce out-0-0", "abort", "rewind in[0]=0"];
        let mut expected: Vec<&str> = attempt.repeat(3);
        expected.extend([
            "begin",
            "produce out-0-0",
            "produce dlt:in-0-1",
            "produce out-0-2",
            "send_offsets in[0]=3",
            "commit",
        ]);
        assert_eq!(calls(&shared), strs(&expected));
        let w = world(&shared);
        assert_eq!(w.committed, ["out-0-0", "dlt:in-0-1", "out-0-2"]);
        let headers = &w.dead_letters[0];
        for (name, value) in [
            ("dlt.original.topic", "in"),
            ("dlt.original.partition", "0"),
            ("dlt.original.offset", "1"),
            ("dlt.error", "bad input 1"),
            ("dlt.attempts", "3"),
        ] {
            assert!(
                headers.contains(&(name.to_owned(), value.to_owned())),
                "{name} in {headers:?}"
            );
        }
        drop(w);
        assert_eq!(
            (
                count(&counters.aborted),
                count(&counters.retries),
                count(&counters.dead_lettered),
                count(&counters.records_out)
            ),
            (3, 3, 1, 2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn poison_input_without_dead_letter_topic_stops_uncommitted() {
        let shared = Shared::default();
        let mut settings = settings(100);
        settings.dead_letter = None;
        let (mut core, _) = new_core(
            fake_source(&shared, 1, 3, true),
            fake_sink(&shared),
            settings,
        );
        let error = core
            .run(failing_on(0, 1, u32::MAX), std::future::pending::<()>())
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::Processing { offset: 1, attempts: 3, message, .. } if message == "bad input 1"),
            "{error:?}"
        );
        let calls = calls(&shared);
        assert_eq!(
            calls[calls.len() - 4..],
            strs(&["begin", "produce out-0-0", "abort", "rewind in[0]=0"])
        );
        assert!(world(&shared).committed.is_empty() && world(&shared).offsets.is_empty());
    }

    /// An abortable error at any step aborts, rewinds and does the transaction again; a
    /// retriable one retries the same call.
    #[tokio::test(start_paused = true)]
    async fn errors_at_each_step() {
        let abort_again = |first: &[&str]| {
            let mut calls = strs(first);
            calls.extend(strs(&[
                "abort",
                "rewind in[0]=0",
                "begin",
                "produce out-0-0",
                "produce out-0-1",
                "send_offsets in[0]=2",
                "commit",
            ]));
            calls
        };
        let cases: Vec<(Op, MakeError, Vec<String>)> = vec![
            (
                Op::Produce,
                abortable,
                abort_again(&["begin", "produce out-0-0", "produce out-0-1 failed"]),
            ),
            (
                Op::Delivery,
                abortable,
                abort_again(&[
                    "begin",
                    "produce out-0-0",
                    "produce out-0-1",
                    "delivery out-0-1 failed",
                ]),
            ),
            (
                Op::SendOffsets,
                abortable,
                abort_again(&[
                    "begin",
                    "produce out-0-0",
                    "produce out-0-1",
                    "send_offsets in[0]=2 failed",
                ]),
            ),
            (
                Op::Commit,
                abortable,
                abort_again(&[
                    "begin",
                    "produce out-0-0",
                    "produce out-0-1",
                    "send_offsets in[0]=2",
                    "commit failed",
                ]),
            ),
            // Retriable: the same call again, no abort.
            (
                Op::SendOffsets,
                retriable,
                strs(&[
                    "begin",
                    "produce out-0-0",
                    "produce out-0-1",
                    "send_offsets in[0]=2 failed",
                    "send_offsets in[0]=2",
                    "commit",
                ]),
            ),
            (
                Op::Commit,
                retriable,
                strs(&[
                    "begin",
                    "produce out-0-0",
                    "produce out-0-1",
                    "send_offsets in[0]=2",
                    "commit failed",
                    "commit",
                ]),
            ),
            // A retriable delivery failure aborts too: the transaction cannot commit without it.
            (
                Op::Delivery,
                retriable,
                abort_again(&[
                    "begin",
                    "produce out-0-0",
                    "produce out-0-1",
                    "delivery out-0-1 failed",
                ]),
            ),
        ];
        for (op, error, expected) in cases {
            let nth = if matches!(op, Op::Produce | Op::Delivery) {
                2
            } else {
                1
            };
            let shared = Shared::default();
            let sink = fake_sink(&shared).failing(op, nth, error);
            let (mut core, _) = new_core(fake_source(&shared, 1, 2, true), sink, settings(100));
            core.run(one_each, std::future::pending::<()>())
                .await
                .unwrap();
            assert_eq!(calls(&shared), expected, "{op:?} failing with {}", error());
            assert_exactly_once(&shared, 1, 2);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_abort_is_retried_then_stops_the_pipeline() {
        let shared = Shared::default();
        let sink = fake_sink(&shared)
            .failing(Op::Commit, 1, abortable)
            .failing(Op::Abort, 1, retriable);
        let (mut core, _) = new_core(fake_source(&shared, 1, 1, true), sink, settings(100));
        core.run(one_each, std::future::pending::<()>())
            .await
            .unwrap();
        assert_eq!(
            calls(&shared),
            strs(&[
                "begin",
                "produce out-0-0",
                "send_offsets in[0]=1",
                "commit failed",
                "abort failed",
                "abort",
                "rewind in[0]=0",
                "begin",
                "produce out-0-0",
                "send_offsets in[0]=1",
                "commit"
            ])
        );

        // An abort that fails for good leaves the producer in an unknown state: stop.
        let shared = Shared::default();
        let sink = fake_sink(&shared)
            .failing(Op::Commit, 1, abortable)
            .failing(Op::Abort, 1, abortable);
        let (mut core, _) = new_core(fake_source(&shared, 1, 1, true), sink, settings(100));
        assert!(core
            .run(one_each, std::future::pending::<()>())
            .await
            .is_err());
        assert!(world(&shared).committed.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn fenced_producer_stops_without_committing() {
        for op in [Op::Begin, Op::Produce, Op::SendOffsets, Op::Commit] {
            let shared = Shared::default();
            let sink = fake_sink(&shared).failing(op, 1, fenced);
            let (mut core, counters) =
                new_core(fake_source(&shared, 1, 3, true), sink, settings(100));
            let error = core
                .run(one_each, std::future::pending::<()>())
                .await
                .unwrap_err();
            assert_eq!(error.recovery(), Recovery::Fatal, "{op:?}");
            let w = world(&shared);
            assert!(w.committed.is_empty() && w.offsets.is_empty(), "{op:?}");
            // No abort after a fatal error: the producer can no longer make any call.
            assert!(
                !w.calls.iter().any(|c| c == "abort"),
                "{op:?}: {:?}",
                w.calls
            );
            assert_eq!(count(&counters.committed), 0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn revoke_mid_batch_commits_before_the_partition_goes() {
        let shared = Shared::default();
        let source = fake_source(&shared, 2, 4, true).then(3, Happening::Revoke(0));
        let (mut core, _) = new_core(source, fake_sink(&shared), settings(100));
        core.run(one_each, std::future::pending::<()>())
            .await
            .unwrap();
        assert_eq!(
            calls(&shared),
            strs(&[
                "begin",
                "produce out-0-0",
                "produce out-1-0",
                "produce out-0-1",
                "revoke in[0] (waits)",
                "produce out-1-1",
                // The revoke is served at once: in[0]'s offsets go with this transaction...
                "send_offsets in[0]=2 in[1]=2",
                "commit",
                "revoked in[0]",
                // ...and nothing of in[0] is read after it.
                "begin",
                "produce out-1-2",
                "produce out-1-3",
                "send_offsets in[1]=4",
                "commit",
            ])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn lost_partition_is_never_committed() {
        let shared = Shared::default();
        let source = fake_source(&shared, 2, 2, true).then(3, Happening::Lose(0));
        let (mut core, counters) = new_core(source, fake_sink(&shared), settings(100));
        core.run(one_each, std::future::pending::<()>())
            .await
            .unwrap();
        assert_eq!(
            calls(&shared),
            strs(&[
                "begin",
                "produce out-0-0",
                "produce out-1-0",
                "produce out-0-1",
                "lost in[0]",
                "produce out-1-1",
                // in[0] is gone: the transaction holding its offsets aborts; only in[1] is rewound.
                "abort",
                "rewind in[1]=0",
                "begin",
                "produce out-1-0",
                "produce out-1-1",
                "send_offsets in[1]=2",
                "commit",
            ])
        );
        let w = world(&shared);
        assert_eq!(w.committed, ["out-1-0", "out-1-1"]);
        assert!(!w.offsets.contains_key(&tp(0)));
        drop(w);
        assert_eq!(count(&counters.aborted), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_after_an_abort_leaves_nothing_half_done() {
        // The commit at shutdown fails for good: the transaction aborts, nothing is committed,
        // and a restart reads the inputs again.
        let shared = Shared::default();
        let sink = fake_sink(&shared).failing(Op::Commit, 1, abortable);
        let mut settings = settings(100);
        settings.interval = Duration::from_secs(60);
        let (mut core, _) = new_core(fake_source(&shared, 1, 2, false), sink, settings);
        core.run(one_each, tokio::time::sleep(Duration::from_secs(1)))
            .await
            .unwrap();
        let w = world(&shared);
        assert_eq!(
            w.calls[w.calls.len() - 3..],
            strs(&["commit failed", "abort", "rewind in[0]=0"])
        );
        assert!(w.committed.is_empty() && w.offsets.is_empty());
    }

    fn group_id_not_found() -> Error {
        KafkaError::MessageConsumption(RDKafkaErrorCode::GroupIdNotFound).into()
    }

    fn panicked() -> Error {
        Error::Panicked {
            callback: "RebalanceListener::on_assigned",
            message: "boom".into(),
        }
    }

    fn consumption_fatal() -> Error {
        KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::Fatal).into()
    }

    /// A consumer error that is not fatal (some brokers answer a committed-offset fetch for a new
    /// group with GROUP_ID_NOT_FOUND) is logged and skipped, between transactions and inside one:
    /// nothing aborts, everything commits.
    #[tokio::test(start_paused = true)]
    async fn non_fatal_consumer_errors_do_not_end_the_pipeline() {
        assert!(!group_id_not_found().is_fatal());
        let shared = Shared::default();
        let source = fake_source(&shared, 1, 4, true)
            .erring(0, group_id_not_found)
            .erring(2, group_id_not_found);
        let (mut core, counters) = new_core(source, fake_sink(&shared), settings(100));
        core.run(one_each, std::future::pending::<()>())
            .await
            .unwrap();
        let error = format!("consumer error: {}", group_id_not_found());
        assert_eq!(
            calls(&shared),
            strs(&[
                &error,
                "begin",
                "produce out-0-0",
                "produce out-0-1",
                &error,
                "produce out-0-2",
                "produce out-0-3",
                "send_offsets in[0]=4",
                "commit",
            ])
        );
        assert_exactly_once(&shared, 1, 4);
        assert_eq!(count(&counters.aborted), 0);
    }

    /// A panic in the consumer's callbacks (a rebalance hook, a checkpoint store), or a fatal
    /// consumer error, ends the pipeline with that error: the open transaction is aborted, never
    /// committed.
    #[tokio::test(start_paused = true)]
    async fn a_panic_or_fatal_error_from_the_source_ends_the_pipeline() {
        for make in [panicked as MakeError, consumption_fatal] {
            // Inside a transaction: it aborts first.
            let shared = Shared::default();
            let source = fake_source(&shared, 1, 4, true).erring(2, make);
            let (mut core, counters) = new_core(source, fake_sink(&shared), settings(100));
            let error = core
                .run(one_each, std::future::pending::<()>())
                .await
                .unwrap_err();
            assert_eq!(error.to_string(), make().to_string());
            assert!(error.ends_processing(), "{error:?}");
            assert_eq!(
                calls(&shared),
                strs(&[
                    "begin",
                    "produce out-0-0",
                    "produce out-0-1",
                    &format!("consumer error: {}", make()),
                    "abort",
                    "rewind in[0]=0",
                ])
            );
            {
                let w = world(&shared);
                assert!(w.committed.is_empty() && w.offsets.is_empty());
                assert!(w.holds.values().all(|&n| n == 0), "{:?}", w.holds);
            }
            assert_eq!(count(&counters.committed), 0);

            // Between transactions: it stops at once.
            let shared = Shared::default();
            let source = fake_source(&shared, 1, 4, true).erring(0, make);
            let (mut core, _) = new_core(source, fake_sink(&shared), settings(100));
            let error = core
                .run(one_each, std::future::pending::<()>())
                .await
                .unwrap_err();
            assert_eq!(error.to_string(), make().to_string());
            assert_eq!(calls(&shared), [format!("consumer error: {}", make())]);
        }
        assert!(matches!(
            panicked(),
            Error::Panicked {
                callback: "RebalanceListener::on_assigned",
                ..
            }
        ));
    }

    /// `Duration::MAX` as the commit interval and as the backoff: no overflow. The interval
    /// never comes due; the shutdown, or the end of the input, commits.
    #[tokio::test(start_paused = true)]
    async fn duration_max_interval_and_backoff_do_not_overflow() {
        let shared = Shared::default();
        let mut never = settings(100);
        never.interval = Duration::MAX;
        let (mut core, _) = new_core(fake_source(&shared, 1, 3, false), fake_sink(&shared), never);
        core.run(one_each, tokio::time::sleep(Duration::from_secs(1)))
            .await
            .unwrap();
        assert_eq!(world(&shared).commit_times, [Duration::from_secs(1)]);
        assert_exactly_once(&shared, 1, 3);

        let shared = Shared::default();
        let mut never = settings(100);
        never.interval = Duration::MAX;
        never.retry = RetryPolicy::attempts(3)
            .backoff(Duration::MAX)
            .max_backoff(Duration::MAX);
        let (mut core, counters) =
            new_core(fake_source(&shared, 1, 3, true), fake_sink(&shared), never);
        core.run(failing_on(0, 1, 1), std::future::pending::<()>())
            .await
            .unwrap();
        assert_exactly_once(&shared, 1, 3);
        assert_eq!(
            (count(&counters.aborted), count(&counters.committed)),
            (1, 1)
        );
    }

    #[test]
    fn deadlines_saturate() {
        let now = Instant::now();
        assert_eq!(
            later(now, Duration::from_millis(100)),
            now + Duration::from_millis(100)
        );
        assert!(later(now, Duration::MAX) > now + Duration::from_secs(50 * 365 * 24 * 3600));
    }
}
