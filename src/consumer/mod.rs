//! A consumer whose rebalances are handled on time, whose commits cannot be off by one, and whose
//! processing loop loses nothing.
//!
//! [`Consumer`] reads records ([`ConsumerRecord`]: key, value, typed headers, topic, partition,
//! offset, timestamp) as an async [`Stream`], or one at a time with
//! [`Consumer::recv`]. Commits are manual, and always of the *next* offset to read.
//!
//! # Reading
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use kafka_kit::config::KafkaConfig;
//! use kafka_kit::consumer::{Consumer, OffsetReset};
//!
//! # async fn run() -> anyhow::Result<()> {
//! let config = KafkaConfig::builder().build()?;
//! let mut consumer = Consumer::builder(&config)
//!     .group_id("billing")
//!     .topics(["user-events"])
//!     .offset_reset(OffsetReset::Earliest)
//!     .build()?;
//! while let Some(record) = consumer.next().await {
//!     let record = record?;
//!     let event: serde_json::Value = record.json()?;
//!     println!("{:?}@{}: {event}", record.key_str(), record.offset());
//!     consumer.commit(&record).await?; // commits offset + 1: the next one to read
//! }
//! # Ok(()) }
//! ```
//!
//! For processing with batched commits, retries and a dead-letter topic, use
//! [`AtLeastOnce`](processing::AtLeastOnce).
//!
//! # Rebalances that happen on time
//!
//! librdkafka runs rebalance callbacks only while the application polls, and rdkafka's
//! `StreamConsumer` polls only inside `recv`: a busy application delays its own rebalance, and can
//! be thrown out of the group. kafka-kit polls on a thread of its own, and hands records over
//! through a bounded buffer; when the buffer is full it stops fetching but still serves
//! librdkafka's events at least every 100 ms (and pauses the partitions if the backlog keeps
//! growing), so every rebalance is served on time while the application works at its own pace.
//! On a rebalance:
//!
//! - **revoke**: records of the revoked partitions still buffered are dropped (their new owner
//!   reads them), processing of them in an [`AtLeastOnce`](processing::AtLeastOnce) loop is waited
//!   for (up to [`ConsumerBuilder::revoke_timeout`]), the offsets marked processed are committed
//!   synchronously, and then [`RebalanceListener::on_revoked`] runs;
//! - **lost** (the group moved on without this member): nothing is committed, and
//!   [`RebalanceListener::on_lost`] runs;
//! - **assign**: each partition starts at its saved checkpoint
//!   ([`ConsumerBuilder::checkpoints`]), else where [`StartAt`] says, resolved now that the
//!   assignment is known; then [`RebalanceListener::on_assigned`] runs.
//!
//! kafka-kit sets `fetch.queue.backoff.ms` to 100 ms unless you set it (librdkafka's default, 1 s,
//! leaves a consumer that fell behind for a moment idle for up to a second once it catches up).
//!
//! The hooks run on the polling thread, never on the async runtime, and the polling thread never
//! waits for the application except for that bounded wait: they cannot deadlock against the
//! consuming task. Eager and cooperative (`cooperative-sticky`) assignment both work.
//!
//! # Replay from a time
//!
//! [`StartAt::Time`] (or [`StartAt::ago`]) starts each partition at its first record at or after a
//! time, looked up when the partition is assigned, not right after `subscribe`; partitions without
//! such a record start at the end. [`StopAt`] ends the stream at a time or an offset.
//!
//! # Lag
//!
//! [`Consumer::lag`] gives each assigned partition's lag; [`group_lag`] the lag of any group,
//! from outside it; [`lag_reports`] the same, periodically.

pub mod checkpoint;
pub mod processing;
mod record;
mod replay;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::Stream;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, RebalanceProtocol,
};

pub use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use crate::config::{ConfigError, KafkaConfig, Problem};
use crate::error::{Error, Result};

pub use checkpoint::{CheckpointError, CheckpointStore, FileCheckpoints, MemoryCheckpoints};
pub use record::{CommitOffsets, ConsumerRecord, DecodeError, NextOffset};
pub use replay::{PartitionStart, StartAt, StartReason, StopAt};

/// Where to start a partition the group has no committed offset for (`auto.offset.reset`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OffsetReset {
    /// The oldest record.
    Earliest,
    /// Only new records (Kafka's default).
    #[default]
    Latest,
    /// Fail instead of guessing.
    Error,
}

/// Which records of transactional producers a consumer sees (`isolation.level`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// Only records of committed transactions (librdkafka's default).
    #[default]
    ReadCommitted,
    /// Everything, aborted transactions included.
    ReadUncommitted,
}

/// How a group spreads partitions over its members (`partition.assignment.strategy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Assignment {
    /// Eager `range,roundrobin` (librdkafka's default): every rebalance revokes everything first.
    #[default]
    Eager,
    /// Incremental `cooperative-sticky`: a rebalance moves only the partitions that change owner.
    CooperativeSticky,
}

/// A partition of a topic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.topic, self.partition)
    }
}

/// Application hooks for rebalances. They run on the consumer's polling thread: they may block
/// briefly, but should not wait for the consuming task.
pub trait RebalanceListener: Send + Sync + 'static {
    /// Partitions were assigned, and will start where [`starts`](Assigned::starts) says.
    fn on_assigned(&self, assigned: &Assigned) {
        let _ = assigned;
    }
    /// Partitions were revoked, after kafka-kit tried to commit their processed offsets.
    fn on_revoked(&self, revoked: &Revoked) {
        let _ = revoked;
    }
    /// Partitions were lost: another member may already own them. Nothing was committed.
    fn on_lost(&self, partitions: &[TopicPartition]) {
        let _ = partitions;
    }
}

/// What an assignment gave this consumer (already applied when the listener hears of it).
#[derive(Clone, Debug)]
pub struct Assigned {
    /// Each new partition, where it starts, and why.
    pub starts: Vec<PartitionStart>,
}

/// What a revocation took from this consumer.
#[derive(Clone, Debug)]
pub struct Revoked {
    /// The partitions revoked.
    pub partitions: Vec<TopicPartition>,
    /// The processed offsets committed for them before they went, or why that commit failed (the
    /// new owner then reads those records again: at least once).
    pub committed: std::result::Result<CommitOffsets, String>,
}

/// Builds a [`Consumer`]. Setters never fail; [`build`](Self::build) reports every problem.
pub struct ConsumerBuilder {
    config: KafkaConfig,
    group_id: Option<String>,
    instance_id: Option<String>,
    topics: Vec<String>,
    assign: Vec<(String, i32)>,
    offset_reset: OffsetReset,
    isolation: Isolation,
    assignment: Assignment,
    start_at: StartAt,
    stop_at: Option<StopAt>,
    checkpoints: Option<Arc<dyn CheckpointStore>>,
    listener: Option<Arc<dyn RebalanceListener>>,
    buffer: usize,
    revoke_timeout: Duration,
}

impl fmt::Debug for ConsumerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerBuilder")
            .field("config", &self.config)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("assign", &self.assign)
            .field("start_at", &self.start_at)
            .field("stop_at", &self.stop_at)
            .finish_non_exhaustive()
    }
}

impl ConsumerBuilder {
    /// The consumer group (`group.id`). Required to subscribe to topics.
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = Some(group.into());
        self
    }

    /// Static membership (`group.instance.id`): a stable id for this member, distinct between
    /// members and kept across restarts.
    ///
    /// Without it, a member that dies (SIGKILL, a crash) is noticed only when its session times
    /// out, and if it dies during a rebalance the group waits for it up to
    /// `max.poll.interval.ms` (5 minutes by default) before going on without it. With it, a
    /// restarted member takes its old place at once, with the same partitions and no rebalance;
    /// the cost is that a member that really went away holds its partitions until
    /// `session.timeout.ms` passes.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Subscribes to these topics: the group assigns partitions.
    pub fn topics<S: Into<String>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        self.topics.extend(topics.into_iter().map(Into::into));
        self
    }

    /// Reads these partitions of `topic` directly, without group assignment. Without a
    /// [`group_id`](Self::group_id), the consumer uses a private group of its own: set one to
    /// commit offsets anyone will read.
    pub fn assign(
        mut self,
        topic: impl Into<String>,
        partitions: impl IntoIterator<Item = i32>,
    ) -> Self {
        let topic = topic.into();
        self.assign
            .extend(partitions.into_iter().map(|p| (topic.clone(), p)));
        self
    }

    /// Where partitions without a committed offset start (default: latest).
    pub fn offset_reset(mut self, reset: OffsetReset) -> Self {
        self.offset_reset = reset;
        self
    }

    /// Which transactional records to see (default: read committed).
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self
    }

    /// Eager or cooperative-sticky assignment (default: eager).
    pub fn assignment(mut self, assignment: Assignment) -> Self {
        self.assignment = assignment;
        self
    }

    /// Where newly assigned partitions start reading (default: the committed offset).
    pub fn start_at(mut self, start: StartAt) -> Self {
        self.start_at = start;
        self
    }

    /// Where partitions stop; the stream ends when all have.
    pub fn stop_at(mut self, stop: StopAt) -> Self {
        self.stop_at = Some(stop);
        self
    }

    /// Restores positions from `store` on assignment, and saves to it on every commit.
    pub fn checkpoints(mut self, store: impl CheckpointStore) -> Self {
        self.checkpoints = Some(Arc::new(store));
        self
    }

    /// Hooks called on assignment, revocation and loss.
    pub fn listener(mut self, listener: impl RebalanceListener) -> Self {
        self.listener = Some(Arc::new(listener));
        self
    }

    /// Records fetched ahead of the application (default 8192). When the buffer is full, the
    /// consumer stops fetching but keeps serving rebalances; a backlog that keeps growing pauses
    /// the partitions.
    pub fn buffer(mut self, records: usize) -> Self {
        self.buffer = records;
        self
    }

    /// How long a revocation waits for records of the revoked partitions still being processed
    /// by an [`AtLeastOnce`](processing::AtLeastOnce) loop (default 10 s). Past it, the processed
    /// offsets are committed anyway, and the new owner may process those records again.
    pub fn revoke_timeout(mut self, timeout: Duration) -> Self {
        self.revoke_timeout = timeout;
        self
    }

    /// Creates the consumer, subscribes or assigns, and starts its polling thread.
    pub fn build(self) -> Result<Consumer> {
        let mut problems = Vec::new();
        if self.topics.is_empty() && self.assign.is_empty() {
            problems.push(Problem::Missing {
                property: "topics".into(),
                reason: "subscribe with topics() or read partitions with assign()".into(),
            });
        }
        if !self.topics.is_empty() && !self.assign.is_empty() {
            problems.push(Problem::Conflict {
                property: "topics".into(),
                reason: "either subscribe with topics() or assign() partitions, not both".into(),
            });
        }
        if !self.topics.is_empty()
            && self.group_id.is_none()
            && self.config.get("group.id").is_none()
        {
            problems.push(Problem::Missing {
                property: "group.id".into(),
                reason: "subscribing to topics needs a consumer group".into(),
            });
        }
        if self.buffer == 0 {
            problems.push(Problem::Conflict {
                property: "buffer".into(),
                reason: "the buffer needs room for a record".into(),
            });
        }
        if !problems.is_empty() {
            return Err(ConfigError::from_problems(problems).into());
        }

        let mut extra: Vec<(&str, String)> = vec![
            ("enable.auto.commit", "false".into()),
            ("enable.auto.offset.store", "false".into()),
            // End-of-partition events tell a bounded replay that a partition has nothing left.
            ("enable.partition.eof", self.stop_at.is_some().to_string()),
            (
                "auto.offset.reset",
                match self.offset_reset {
                    OffsetReset::Earliest => "earliest",
                    OffsetReset::Latest => "latest",
                    OffsetReset::Error => "error",
                }
                .into(),
            ),
            (
                "isolation.level",
                match self.isolation {
                    Isolation::ReadCommitted => "read_committed",
                    Isolation::ReadUncommitted => "read_uncommitted",
                }
                .into(),
            ),
        ];
        if self.assignment == Assignment::CooperativeSticky {
            extra.push(("partition.assignment.strategy", "cooperative-sticky".into()));
        }
        // librdkafka stops fetching a partition for `fetch.queue.backoff.ms` (1 s by default)
        // whenever its local queue holds `queued.min.messages`: a consumer that falls behind for
        // a moment, then catches up, sits idle for the rest of that second. Check again sooner.
        if self.config.get("fetch.queue.backoff.ms").is_none() {
            extra.push(("fetch.queue.backoff.ms", "100".into()));
        }
        if let Some(id) = &self.instance_id {
            extra.push(("group.instance.id", id.clone()));
        }
        if let Some(group) = &self.group_id {
            extra.push(("group.id", group.clone()));
        } else if self.config.get("group.id").is_none() {
            // librdkafka assigns partitions only within a group: a manual assignment without
            // one gets a private group of its own, which nothing else commits to.
            extra.push((
                "group.id",
                format!("kafka-kit-assign-{}", uuid::Uuid::new_v4().simple()),
            ));
        }
        let config = self.config.with(extra)?;
        let group_id = config.get("group.id").map(str::to_owned);

        let shared = Arc::new(Shared::new(self.revoke_timeout, self.stop_at));
        let context = KitContext {
            shared: shared.clone(),
            start_at: self.start_at,
            checkpoints: self.checkpoints.clone(),
            listener: self.listener,
        };
        let consumer: BaseConsumer<KitContext> =
            config.to_client_config().create_with_context(context)?;
        let consumer = Arc::new(consumer);

        if self.assign.is_empty() {
            let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
            consumer.subscribe(&topics)?;
        } else {
            // A manual assignment is known now: resolve the starting offsets at once.
            consumer
                .context()
                .assign(&consumer, &self.assign, |list| consumer.assign(list))?;
        }

        // `buffer` records ahead at most: batches of up to BATCH records.
        let batch = self.buffer.min(BATCH);
        let (sender, receiver) = mpsc::channel(self.buffer / batch);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (consumer, stop) = (consumer.clone(), stop.clone());
            std::thread::Builder::new()
                .name("kafka-kit-consumer".into())
                .spawn(move || poll_loop(&consumer, &sender, &stop, batch))
                .map_err(|e| {
                    Error::Kafka(KafkaError::ClientCreation(format!(
                        "could not start the polling thread: {e}"
                    )))
                })?
        };
        tracing::debug!(group = ?group_id, topics = ?self.topics, "kafka_kit: consumer started");
        Ok(Consumer {
            inner: Arc::new(Inner {
                consumer,
                shared,
                checkpoints: self.checkpoints,
                stop,
                thread: Mutex::new(Some(thread)),
            }),
            receiver,
            pending: VecDeque::new(),
        })
    }
}

/// State shared by the polling thread (and its rebalance callbacks) and the application.
struct Shared {
    /// Bumped on every assignment change; records carry the generation they were fetched in.
    generation: AtomicU64,
    /// Owned partitions, with the generation in which each was assigned.
    owned: Mutex<HashMap<(String, i32), u64>>,
    /// Partitions being revoked: no new record of them is processed, but records already being
    /// processed may still be marked, and their offsets are committed before they go.
    revoking: Mutex<Vec<(String, i32)>>,
    /// The highest offsets marked processed, per owned partition. Commits send those above
    /// `committed`; nothing is removed until the partition goes, so a failed commit is simply
    /// sent again by the next one.
    processed: Mutex<CommitOffsets>,
    /// The highest offsets the group confirmed committing.
    committed: Mutex<CommitOffsets>,
    /// Records handed to a processing loop and not yet finished, per partition.
    in_flight: Mutex<HashMap<(String, i32), usize>>,
    finished: Condvar,
    /// Records fetched but not yet handed over (the buffer was full).
    overflow: Mutex<VecDeque<ConsumerRecord>>,
    paused: AtomicBool,
    /// Partitions that reached the stop, and whether all have (the stream then ends).
    stopped: Mutex<Vec<(String, i32)>>,
    stop_at: Option<StopAt>,
    revoke_timeout: Duration,
    stats: crate::monitoring::StatsHub,
    /// Seeks asked for by the application, served by the polling thread.
    seeks: Mutex<Vec<SeekRequest>>,
    /// Woken when a revoke starts, so that a transaction holding the partitions ends early.
    revoke_started: tokio::sync::Notify,
}

type SeekRequest = (CommitOffsets, tokio::sync::oneshot::Sender<Result<()>>);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn new(revoke_timeout: Duration, stop_at: Option<StopAt>) -> Self {
        Shared {
            generation: AtomicU64::new(0),
            owned: Mutex::default(),
            revoking: Mutex::default(),
            processed: Mutex::default(),
            committed: Mutex::default(),
            in_flight: Mutex::default(),
            finished: Condvar::new(),
            overflow: Mutex::default(),
            paused: AtomicBool::new(false),
            stopped: Mutex::default(),
            stop_at,
            revoke_timeout,
            stats: Default::default(),
            seeks: Mutex::default(),
            revoke_started: tokio::sync::Notify::new(),
        }
    }

    /// Whether a record may still be handed out: its partition is owned since before it was fetched.
    fn is_current(&self, record: &ConsumerRecord) -> bool {
        if record.generation == self.generation.load(Ordering::Acquire) {
            return true;
        }
        let owned = lock(&self.owned);
        owned
            .get(&(record.topic().to_owned(), record.partition()))
            .is_some_and(|&since| since <= record.generation)
    }

    fn owns(&self, topic: &str, partition: i32) -> bool {
        lock(&self.owned).contains_key(&(topic.to_owned(), partition))
    }

    /// Whether a processed record of this partition may still be committed.
    fn may_commit(&self, topic: &str, partition: i32) -> bool {
        self.owns(topic, partition)
            || lock(&self.revoking)
                .iter()
                .any(|(t, p)| t == topic && *p == partition)
    }

    /// Waits until no record of `partitions` is being processed, or the revoke timeout passes.
    fn wait_for_in_flight(&self, partitions: &[(String, i32)]) -> bool {
        let deadline = Instant::now() + self.revoke_timeout;
        let mut in_flight = lock(&self.in_flight);
        loop {
            let busy = partitions
                .iter()
                .any(|p| in_flight.get(p).is_some_and(|&n| n > 0));
            let left = deadline.saturating_duration_since(Instant::now());
            if !busy {
                return true;
            }
            if left.is_zero() {
                return false;
            }
            in_flight = self
                .finished
                .wait_timeout(in_flight, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// The rdkafka context: rebalances are decided here, on the polling thread.
struct KitContext {
    shared: Arc<Shared>,
    start_at: StartAt,
    checkpoints: Option<Arc<dyn CheckpointStore>>,
    listener: Option<Arc<dyn RebalanceListener>>,
}

impl ClientContext for KitContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        self.shared.stats.publish(statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        use rdkafka::error::RDKafkaErrorCode::PartitionEOF;
        match error.rdkafka_error_code() {
            // The end of a partition is news for a bounded replay, not an error.
            Some(PartitionEOF) => tracing::debug!(reason, "kafka_kit: end of partition"),
            _ => tracing::error!(error = %error, reason, "kafka_kit: consumer error"),
        }
    }
}

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

impl KitContext {
    /// Decides where newly assigned `partitions` start: a checkpoint, else `start_at`. If that
    /// cannot be decided, they start at the committed offsets rather than stall the group.
    fn starts(
        &self,
        consumer: &BaseConsumer<KitContext>,
        partitions: &[(String, i32)],
    ) -> Vec<PartitionStart> {
        let checkpoint = |topic: &str, partition: i32| match &self.checkpoints {
            Some(store) => store.load(topic, partition),
            None => Ok(None),
        };
        let by_time = |asked: &[(String, i32)], time: i64| -> KafkaResult<Vec<Option<i64>>> {
            let mut list = TopicPartitionList::with_capacity(asked.len());
            for (topic, partition) in asked {
                list.add_partition_offset(topic, *partition, Offset::Offset(time))?;
            }
            let found = consumer.offsets_for_times(list, LOOKUP_TIMEOUT)?;
            Ok(asked
                .iter()
                .map(|(t, p)| {
                    found
                        .find_partition(t, *p)
                        .and_then(|e| e.offset().to_raw())
                })
                .collect())
        };
        replay::start_offsets(partitions, self.start_at, checkpoint, by_time).unwrap_or_else(|e| {
            let error = match e {
                replay::StartError::Checkpoint(e) => Error::Checkpoint(e),
                replay::StartError::Lookup(e) => Error::Kafka(e),
            };
            tracing::error!(error = %error, "kafka_kit: could not decide starting offsets; using the committed ones");
            partitions
                .iter()
                .map(|(topic, partition)| PartitionStart {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: Offset::Stored,
                    reason: StartReason::Fallback,
                })
                .collect()
        })
    }

    /// Records the partitions as owned and returns the list to assign.
    fn take_ownership(&self, starts: &[PartitionStart]) -> TopicPartitionList {
        let mut list = TopicPartitionList::with_capacity(starts.len());
        let generation = self.shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let mut owned = lock(&self.shared.owned);
        for start in starts {
            // Cannot fail: a plain, special or absolute offset.
            let _ = list.add_partition_offset(&start.topic, start.partition, start.offset);
            owned.insert((start.topic.clone(), start.partition), generation);
            tracing::info!(topic = %start.topic, partition = start.partition, offset = ?start.offset,
                reason = ?start.reason, "kafka_kit: partition assigned");
        }
        list
    }

    /// Decides where `partitions` start, assigns them with `assign`, then tells the listener.
    fn assign(
        &self,
        consumer: &BaseConsumer<KitContext>,
        partitions: &[(String, i32)],
        assign: impl FnOnce(&TopicPartitionList) -> KafkaResult<()>,
    ) -> KafkaResult<()> {
        let starts = self.starts(consumer, partitions);
        let list = self.take_ownership(&starts);
        if self.shared.paused.load(Ordering::Acquire) {
            let _ = consumer.pause(&list);
        }
        assign(&list)?;
        if let Some(listener) = &self.listener {
            listener.on_assigned(&Assigned { starts });
        }
        Ok(())
    }

    /// Takes revoked (or lost) partitions away: before librdkafka unassigns them.
    fn revoke(
        &self,
        consumer: &BaseConsumer<KitContext>,
        partitions: &[(String, i32)],
        lost: bool,
    ) {
        let shared = &self.shared;
        {
            let mut owned = lock(&shared.owned);
            for p in partitions {
                owned.remove(p);
            }
            lock(&shared.revoking).extend(partitions.iter().cloned());
        }
        shared.generation.fetch_add(1, Ordering::AcqRel);
        shared.revoke_started.notify_one();
        let _revoking = Revoking { shared, partitions };
        lock(&shared.overflow).retain(|r| {
            !partitions
                .iter()
                .any(|(t, p)| t == r.topic() && *p == r.partition())
        });
        let listed: Vec<TopicPartition> = partitions
            .iter()
            .map(|(topic, partition)| TopicPartition {
                topic: topic.clone(),
                partition: *partition,
            })
            .collect();
        let forget = |offsets: &Mutex<CommitOffsets>| {
            lock(offsets).retain(|t, p| !partitions.iter().any(|(rt, rp)| rt == t && *rp == p));
        };
        if lost {
            forget(&shared.processed);
            forget(&shared.committed);
            tracing::warn!(partitions = ?listed, "kafka_kit: partitions lost; their processed offsets were not committed");
            if let Some(listener) = &self.listener {
                listener.on_lost(&listed);
            }
            return;
        }
        if !shared.wait_for_in_flight(partitions) {
            tracing::warn!(partitions = ?listed, timeout = ?shared.revoke_timeout,
                "kafka_kit: records of revoked partitions still processing; committing what is done");
        }
        let mut to_commit = pending_commits(shared);
        to_commit.retain(|t, p| partitions.iter().any(|(rt, rp)| rt == t && *rp == p));
        forget(&shared.processed);
        forget(&shared.committed);
        let committed = match commit_offsets(
            consumer,
            self.checkpoints.as_deref(),
            &to_commit,
            CommitMode::Sync,
        ) {
            Ok(()) => {
                tracing::info!(partitions = ?listed, committed = ?to_commit, "kafka_kit: partitions revoked");
                Ok(to_commit)
            }
            Err(e) => {
                tracing::warn!(partitions = ?listed, error = %e, offsets = ?to_commit,
                    "kafka_kit: partitions revoked, but their processed offsets could not be committed: the new owner reads those records again");
                Err(e.to_string())
            }
        };
        if let Some(listener) = &self.listener {
            listener.on_revoked(&Revoked {
                partitions: listed,
                committed,
            });
        }
    }
}

impl ConsumerContext for KitContext {
    /// Every commit's result, synchronous or not: confirmed offsets are recorded, so that only
    /// what is above them is sent again.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => record_committed(&self.shared, offsets),
            Err(error) => {
                tracing::warn!(error = %error, "kafka_kit: commit failed; the next commit sends its offsets again")
            }
        }
    }

    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(consumer, &partitions, |list| {
                    if cooperative {
                        consumer.incremental_assign(list)
                    } else {
                        consumer.assign(list)
                    }
                })
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(consumer, &partitions, consumer.assignment_lost());
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                tracing::error!(error = ?other, "kafka_kit: rebalance error; unassigning");
                self.revoke(consumer, &partitions, true);
                consumer.unassign()
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "kafka_kit: could not apply the rebalance");
        }
    }
}

fn record_committed(shared: &Shared, offsets: &TopicPartitionList) {
    let mut committed = lock(&shared.committed);
    for e in offsets.elements() {
        if let Some(offset) = e.offset().to_raw().filter(|&o| o >= 0) {
            committed.insert(e.topic(), e.partition(), NextOffset::new(offset));
        }
    }
}

/// Ends a revocation, however it ends: the partitions stop being committable.
struct Revoking<'a> {
    shared: &'a Shared,
    partitions: &'a [(String, i32)],
}

impl Drop for Revoking<'_> {
    fn drop(&mut self) {
        lock(&self.shared.revoking).retain(|p| !self.partitions.contains(p));
    }
}

/// Commits `offsets` and saves them as checkpoints.
fn commit_offsets(
    consumer: &BaseConsumer<KitContext>,
    checkpoints: Option<&dyn CheckpointStore>,
    offsets: &CommitOffsets,
    mode: CommitMode,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let list = offsets.to_list();
    consumer.commit(&list, mode)?;
    if let CommitMode::Sync = mode {
        record_committed(&consumer.context().shared, &list);
    }
    if let Some(store) = checkpoints {
        let saved: Vec<(&str, i32, i64)> =
            offsets.iter().map(|(t, p, o)| (t, p, o.get())).collect();
        store.save(&saved)?;
    }
    Ok(())
}

/// Records handed to the application in one channel message, at most (fewer with a smaller
/// buffer).
const BATCH: usize = 256;

/// The polling thread: fetches records, hands them over, serves rebalances, never blocks on the
/// application.
fn poll_loop(
    consumer: &BaseConsumer<KitContext>,
    sender: &mpsc::Sender<KafkaResult<Vec<ConsumerRecord>>>,
    stop: &AtomicBool,
    batch: usize,
) {
    /// How often the polling thread serves librdkafka's events (rebalances) at the least.
    const SERVE_EVENTS_EVERY: Duration = Duration::from_millis(100);
    /// Records waiting beyond the buffer before the partitions are paused.
    const PAUSE_BACKLOG: usize = 1024;
    let shared = consumer.context().shared.clone();
    let mut last_poll = Instant::now();
    while !stop.load(Ordering::Acquire) {
        serve_seeks(consumer, &shared);
        // Hand over what is waiting, as far as the buffer has room.
        let backlog = {
            let mut overflow = lock(&shared.overflow);
            // Only this thread sends, so room seen is room had.
            while !overflow.is_empty() && sender.capacity() > 0 {
                let n = overflow.len().min(batch);
                let batch: Vec<ConsumerRecord> = overflow.drain(..n).collect();
                if sender.try_send(Ok(batch)).is_err() {
                    return; // the consumer was dropped
                }
            }
            overflow.len()
        };
        if all_stopped(consumer, &shared) {
            return; // dropping the sender ends the stream
        }
        // The application is behind: wait for room rather than fetch more, but poll at least
        // every 100 ms so that rebalances are served on time. Pausing makes librdkafka drop what
        // it prefetched, so only a backlog that keeps growing (a stuck application) pauses.
        if backlog > 0 && last_poll.elapsed() < SERVE_EVENTS_EVERY {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        if backlog >= PAUSE_BACKLOG {
            set_paused(consumer, &shared, true);
        } else if backlog == 0 {
            set_paused(consumer, &shared, false);
        }
        // Wait for the first record, then take what librdkafka has ready, up to a batch.
        let mut timeout = if backlog > 0 {
            Duration::ZERO
        } else {
            SERVE_EVENTS_EVERY
        };
        last_poll = Instant::now();
        for _ in 0..batch {
            if !poll_once(consumer, &shared, sender, timeout) {
                break;
            }
            timeout = Duration::ZERO;
        }
    }
}

/// Sends to the application, waiting for room while still serving seeks: an application waiting
/// for a seek reads nothing until it is done.
fn send_waiting(
    consumer: &BaseConsumer<KitContext>,
    shared: &Shared,
    sender: &mpsc::Sender<KafkaResult<Vec<ConsumerRecord>>>,
    mut item: KafkaResult<Vec<ConsumerRecord>>,
) {
    loop {
        match sender.try_send(item) {
            Err(mpsc::error::TrySendError::Full(back)) => {
                item = back;
                serve_seeks(consumer, shared);
                std::thread::sleep(Duration::from_millis(1));
            }
            // Sent, or the application is gone.
            _ => return,
        }
    }
}

/// Polls librdkafka once: a record goes to the overflow queue, an event is handled. Returns
/// whether there was anything, so that the caller polls again at once.
fn poll_once(
    consumer: &BaseConsumer<KitContext>,
    shared: &Shared,
    sender: &mpsc::Sender<KafkaResult<Vec<ConsumerRecord>>>,
    timeout: Duration,
) -> bool {
    {
        match consumer.poll(timeout) {
            None => false,
            Some(Ok(message)) => {
                let generation = shared.generation.load(Ordering::Acquire);
                let record = ConsumerRecord::new(message.detach(), generation);
                match shared.stop_at {
                    Some(stop) if stop.is_past(record.offset(), record.timestamp().to_millis()) => {
                        mark_stopped(consumer, shared, record.topic(), record.partition());
                    }
                    _ => lock(&shared.overflow).push_back(record),
                }
                true
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                reached_end(consumer, shared, partition);
                true
            }
            Some(Err(error)) => {
                tracing::warn!(error = %error, "kafka_kit: consumer error");
                // Errors go out in order: hand over the records before them first.
                let records: Vec<ConsumerRecord> = lock(&shared.overflow).drain(..).collect();
                if !records.is_empty() {
                    send_waiting(consumer, shared, sender, Ok(records));
                }
                send_waiting(consumer, shared, sender, Err(error));
                false
            }
        }
    }
}

const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

fn serve_seeks(consumer: &BaseConsumer<KitContext>, shared: &Shared) {
    let requests = std::mem::take(&mut *lock(&shared.seeks));
    for (offsets, reply) in requests {
        // The application may have stopped waiting: nothing to tell it then.
        let _ = reply.send(seek(consumer, shared, &offsets));
    }
}

/// Moves owned partitions to `offsets`, on the polling thread: records polled after this are
/// from the new position (librdkafka drops what it fetched before), and records of these
/// partitions polled before, buffered here or in the channel, belong to an older generation and
/// are dropped.
fn seek(
    consumer: &BaseConsumer<KitContext>,
    shared: &Shared,
    offsets: &CommitOffsets,
) -> Result<()> {
    let generation = shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
    for (topic, partition, offset) in offsets.iter() {
        if !shared.owns(topic, partition) {
            continue; // revoked meanwhile: its new owner starts from the committed offset
        }
        consumer.seek(topic, partition, Offset::Offset(offset.get()), SEEK_TIMEOUT)?;
        lock(&shared.owned).insert((topic.to_owned(), partition), generation);
        lock(&shared.overflow).retain(|r| r.topic() != topic || r.partition() != partition);
        tracing::debug!(
            topic,
            partition,
            offset = offset.get(),
            "kafka_kit: partition moved"
        );
    }
    Ok(())
}

fn set_paused(consumer: &BaseConsumer<KitContext>, shared: &Shared, pause: bool) {
    if shared.paused.load(Ordering::Acquire) == pause {
        return;
    }
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let result = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    match result {
        Ok(()) => {
            shared.paused.store(pause, Ordering::Release);
            tracing::debug!(paused = pause, "kafka_kit: buffer backpressure");
        }
        Err(e) => tracing::warn!(error = %e, "kafka_kit: could not pause or resume"),
    }
}

fn mark_stopped(consumer: &BaseConsumer<KitContext>, shared: &Shared, topic: &str, partition: i32) {
    let mut stopped = lock(&shared.stopped);
    if !stopped.iter().any(|(t, p)| t == topic && *p == partition) {
        stopped.push((topic.to_owned(), partition));
        let mut list = TopicPartitionList::new();
        list.add_partition(topic, partition);
        let _ = consumer.pause(&list);
        tracing::debug!(topic, partition, "kafka_kit: partition reached its stop");
    }
}

/// A partition has nothing more to read now. With a stop time in the past, nothing later can
/// still be before it: the partition is done. (The event names only the partition number; with
/// several topics it is applied only where that number is unambiguous.)
fn reached_end(consumer: &BaseConsumer<KitContext>, shared: &Shared, partition: i32) {
    let Some(StopAt::Time(stop)) = shared.stop_at else {
        return;
    };
    if stop > replay::millis(std::time::SystemTime::now()) {
        return;
    }
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let matching: Vec<String> = assignment
        .elements()
        .iter()
        .filter(|e| e.partition() == partition)
        .map(|e| e.topic().to_owned())
        .collect();
    if let [topic] = matching.as_slice() {
        mark_stopped(consumer, shared, topic, partition);
    }
}

fn all_stopped(consumer: &BaseConsumer<KitContext>, shared: &Shared) -> bool {
    if shared.stop_at.is_none() || !lock(&shared.overflow).is_empty() {
        return false;
    }
    let Ok(assignment) = consumer.assignment() else {
        return false;
    };
    let stopped = lock(&shared.stopped);
    assignment.count() > 0
        && assignment.elements().iter().all(|e| {
            stopped
                .iter()
                .any(|(t, p)| t == e.topic() && *p == e.partition())
        })
}

struct Inner {
    consumer: Arc<BaseConsumer<KitContext>>,
    shared: Arc<Shared>,
    checkpoints: Option<Arc<dyn CheckpointStore>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    async fn commit(self: &Arc<Self>, offsets: CommitOffsets, mode: CommitMode) -> Result<()> {
        match mode {
            // librdkafka's asynchronous commit returns at once; saving checkpoints does file I/O,
            // which belongs off the async runtime.
            CommitMode::Async if self.checkpoints.is_none() => {
                commit_offsets(&self.consumer, None, &offsets, mode)
            }
            CommitMode::Async => {
                let inner = self.clone();
                crate::blocking(move || {
                    commit_offsets(
                        &inner.consumer,
                        inner.checkpoints.as_deref(),
                        &offsets,
                        mode,
                    )
                })
                .await
            }
            CommitMode::Sync => {
                let inner = self.clone();
                crate::blocking(move || inner.commit_sync(offsets)).await
            }
        }
    }

    /// Commits, retrying retriable errors for up to 10 s; each retry only for partitions this
    /// consumer may still commit, so that a late retry never overwrites a new owner's progress.
    /// A stale generation is retried too: the polling thread rejoins the group meanwhile.
    fn commit_sync(&self, mut offsets: CommitOffsets) -> Result<()> {
        use rdkafka::error::RDKafkaErrorCode::{IllegalGeneration, UnknownMemberId};
        let deadline = Instant::now() + LOOKUP_TIMEOUT;
        loop {
            match commit_offsets(
                &self.consumer,
                self.checkpoints.as_deref(),
                &offsets,
                CommitMode::Sync,
            ) {
                Err(e)
                    if (e.is_retriable()
                        || matches!(e.code(), Some(IllegalGeneration | UnknownMemberId)))
                        && !offsets.is_empty()
                        && Instant::now() < deadline =>
                {
                    tracing::debug!(error = %e, "kafka_kit: commit failed; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                    offsets.retain(|t, p| self.shared.may_commit(t, p));
                }
                other => return other,
            }
        }
    }

    fn shut_down(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shut_down();
        // Dropping the rdkafka consumer closes it: librdkafka revokes the assignment, and the
        // revoke hook commits what was processed.
    }
}

/// A Kafka consumer. See the [module documentation](self).
pub struct Consumer {
    inner: Arc<Inner>,
    /// Batches of records from the polling thread, and the rest of the current batch.
    receiver: mpsc::Receiver<KafkaResult<Vec<ConsumerRecord>>>,
    pending: VecDeque<ConsumerRecord>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer").finish_non_exhaustive()
    }
}

impl Consumer {
    /// Starts building a consumer from a checked configuration.
    pub fn builder(config: &KafkaConfig) -> ConsumerBuilder {
        ConsumerBuilder {
            config: config.clone(),
            group_id: None,
            instance_id: None,
            topics: Vec::new(),
            assign: Vec::new(),
            offset_reset: OffsetReset::default(),
            isolation: Isolation::default(),
            assignment: Assignment::default(),
            start_at: StartAt::default(),
            stop_at: None,
            checkpoints: None,
            listener: None,
            buffer: 8192,
            revoke_timeout: Duration::from_secs(10),
        }
    }

    /// The next record; `None` once the consumer has stopped (see [`StopAt`]).
    pub async fn recv(&mut self) -> Option<Result<ConsumerRecord>> {
        std::future::poll_fn(|cx| self.poll_record(cx)).await
    }

    /// The next current record of the batch at hand, or of the next batch.
    fn poll_record(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<ConsumerRecord>>> {
        loop {
            while let Some(record) = self.pending.pop_front() {
                if self.inner.shared.is_current(&record) {
                    return Poll::Ready(Some(Ok(record)));
                }
            }
            match self.receiver.poll_recv(cx) {
                Poll::Ready(Some(Ok(batch))) => self.pending = batch.into(),
                Poll::Ready(Some(Err(error))) => return Poll::Ready(Some(Err(error.into()))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Commits the offset after `record`, synchronously: when it returns, the group resumes after
    /// this record.
    pub async fn commit(&self, record: &ConsumerRecord) -> Result<()> {
        let mut offsets = CommitOffsets::new();
        offsets.insert_after(record);
        self.commit_offsets(&offsets, CommitMode::Sync).await
    }

    /// Commits explicit next-to-read offsets, synchronously or asynchronously.
    ///
    /// A synchronous commit, like Java's `commitSync`, retries retriable errors (a rebalance in
    /// progress, a coordinator moving) for up to 10 s.
    pub async fn commit_offsets(&self, offsets: &CommitOffsets, mode: CommitMode) -> Result<()> {
        self.inner.commit(offsets.clone(), mode).await
    }

    /// Marks `record` processed: [`commit_processed`](Self::commit_processed) and revocations
    /// commit the offset after it. Marking a record of a partition no longer owned does nothing.
    pub fn mark_processed(&self, record: &ConsumerRecord) {
        mark_processed(&self.inner.shared, record);
    }

    /// Commits every offset marked processed since the last commit.
    pub async fn commit_processed(&self, mode: CommitMode) -> Result<()> {
        self.inner
            .commit(pending_commits(&self.inner.shared), mode)
            .await
    }

    /// The committed offsets of the assigned partitions.
    pub async fn committed(&self) -> Result<CommitOffsets> {
        let inner = self.inner.clone();
        crate::blocking(move || {
            let list = inner.consumer.committed(LOOKUP_TIMEOUT)?;
            let mut offsets = CommitOffsets::new();
            for e in list.elements() {
                if let Some(offset) = e.offset().to_raw().filter(|&o| o >= 0) {
                    offsets.insert(e.topic(), e.partition(), NextOffset::new(offset));
                }
            }
            Ok(offsets)
        })
        .await
    }

    /// Moves owned partitions to these next-to-read offsets (to rewind, or to skip ahead).
    /// Records of them already buffered are dropped: the next record of each partition is read
    /// from its new position. Partitions not owned (any more) are left alone.
    ///
    /// The polling thread does the move between two polls, so this may wait up to 100 ms.
    pub async fn seek(&self, offsets: &CommitOffsets) -> Result<()> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        lock(&self.inner.shared.seeks).push((offsets.clone(), reply));
        answer.await.map_err(|_| Error::Closed)?
    }

    /// The group's metadata (group, generation, member id), to send with offsets in a
    /// transaction ([`TransactionalProducer::send_offsets`](crate::transaction::TransactionalProducer::send_offsets)).
    /// `None` for a consumer that is not in a group. Take it afresh for each transaction: it
    /// carries the current generation, and the broker refuses offsets of an older one.
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.inner.consumer.group_metadata()
    }

    /// The partitions assigned now.
    pub fn assignment(&self) -> Result<Vec<TopicPartition>> {
        let list = self.inner.consumer.assignment()?;
        Ok(list
            .elements()
            .iter()
            .map(|e| TopicPartition {
                topic: e.topic().to_owned(),
                partition: e.partition(),
            })
            .collect())
    }

    /// Each assigned partition's lag: its high watermark minus the group's committed offset.
    pub async fn lag(&self) -> Result<Vec<PartitionLag>> {
        let inner = self.inner.clone();
        crate::blocking(move || {
            let assignment = inner.consumer.assignment()?;
            lag_of(&*inner.consumer, assignment)
        })
        .await
    }

    /// The client's statistics reports, as they come (needs
    /// [`statistics_interval`](crate::config::ConfigBuilder::statistics_interval)); they include
    /// the lag of each partition as this consumer sees it.
    pub fn statistics(
        &self,
    ) -> futures_util::stream::BoxStream<'static, Arc<crate::monitoring::ClientStats>> {
        self.inner.shared.stats.subscribe()
    }

    /// Checks that the cluster answers, like kafka-python's `bootstrap_connected()`: the number of
    /// brokers it reports.
    pub async fn check_connection(&self, timeout: Duration) -> Result<usize> {
        let inner = self.inner.clone();
        crate::blocking(move || {
            Ok(inner
                .consumer
                .fetch_metadata(None, timeout)?
                .brokers()
                .len())
        })
        .await
    }

    /// The rdkafka consumer, for what kafka-kit doesn't wrap. Don't poll it: the polling thread
    /// does.
    pub fn rdkafka(&self) -> &BaseConsumer<impl ConsumerContext> {
        &*self.inner.consumer
    }

    /// Stops polling, commits what was marked processed, and leaves the group.
    pub async fn close(self) -> Result<()> {
        let Consumer {
            inner, receiver, ..
        } = self;
        // Commit while the polling thread still serves rebalances, so that a commit racing one
        // can be retried once the group has settled.
        let committed = inner
            .commit(pending_commits(&inner.shared), CommitMode::Sync)
            .await;
        drop(receiver);
        crate::blocking(move || {
            inner.shut_down();
            // `inner` drops here (if it is the last handle): the rdkafka consumer closes, the
            // revoke hook commits anything marked since, and the consumer leaves the group.
            Ok(())
        })
        .await?;
        committed
    }

    pub(crate) fn handle(&self) -> ConsumerHandle {
        ConsumerHandle {
            inner: self.inner.clone(),
        }
    }
}

impl Stream for Consumer {
    type Item = Result<ConsumerRecord>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.poll_record(cx)
    }
}

/// What a processing loop needs of a consumer besides its records.
#[derive(Clone)]
pub(crate) struct ConsumerHandle {
    inner: Arc<Inner>,
}

impl ConsumerHandle {
    pub(crate) fn is_current(&self, record: &ConsumerRecord) -> bool {
        self.inner.shared.is_current(record)
    }

    pub(crate) fn owns(&self, topic: &str, partition: i32) -> bool {
        self.inner.shared.owns(topic, partition)
    }

    pub(crate) fn mark_processed(&self, record: &ConsumerRecord) {
        mark_processed(&self.inner.shared, record);
    }

    /// Counts a record as being processed until [`finish`](Self::finish) is called for it.
    pub(crate) fn start(&self, record: &ConsumerRecord) {
        self.hold(record.topic(), record.partition());
    }

    pub(crate) fn finish(&self, record: &ConsumerRecord) {
        self.release(record.topic(), record.partition());
    }

    /// Work on this partition is under way: a revoke waits for it (up to the revoke timeout).
    pub(crate) fn hold(&self, topic: &str, partition: i32) {
        *lock(&self.inner.shared.in_flight)
            .entry((topic.to_owned(), partition))
            .or_insert(0) += 1;
    }

    /// Ends one [`hold`](Self::hold).
    pub(crate) fn release(&self, topic: &str, partition: i32) {
        let shared = &self.inner.shared;
        if let Some(n) = lock(&shared.in_flight).get_mut(&(topic.to_owned(), partition)) {
            *n = n.saturating_sub(1);
        }
        shared.finished.notify_all();
    }

    /// Whether offsets of this partition may still be committed: it is owned, or being revoked
    /// (and the revoke waits for its work).
    pub(crate) fn may_commit(&self, topic: &str, partition: i32) -> bool {
        self.inner.shared.may_commit(topic, partition)
    }

    pub(crate) fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        self.inner.consumer.group_metadata()
    }

    /// Whether a revoke is waiting for work to finish.
    pub(crate) fn revoke_pending(&self) -> bool {
        !lock(&self.inner.shared.revoking).is_empty()
    }

    /// Completes when a revoke starts (or spuriously: check [`revoke_pending`](Self::revoke_pending)).
    pub(crate) async fn revoke_started(&self) {
        self.inner.shared.revoke_started.notified().await;
    }

    pub(crate) async fn commit_processed(&self, mode: CommitMode) -> Result<()> {
        self.inner
            .commit(pending_commits(&self.inner.shared), mode)
            .await
    }
}

fn mark_processed(shared: &Shared, record: &ConsumerRecord) {
    if shared.may_commit(record.topic(), record.partition()) {
        lock(&shared.processed).insert_after(record);
    }
}

/// The processed offsets not yet confirmed committed, of partitions this consumer may commit.
fn pending_commits(shared: &Shared) -> CommitOffsets {
    let processed = lock(&shared.processed).clone();
    let committed = lock(&shared.committed).clone();
    let mut pending = CommitOffsets::new();
    for (topic, partition, offset) in processed.iter() {
        let done = committed.get(topic, partition).is_some_and(|c| c >= offset);
        if !done && shared.may_commit(topic, partition) {
            pending.insert(topic, partition, offset);
        }
    }
    pending
}

/// A partition's consumer lag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The group's committed offset (next to read), if it has one.
    pub committed: Option<i64>,
    /// The partition's first offset.
    pub low_watermark: i64,
    /// The offset the next produced record will get.
    pub high_watermark: i64,
    /// Records not yet consumed: high watermark minus committed offset (minus the low watermark
    /// when nothing is committed).
    pub lag: i64,
}

fn lag_of<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    partitions: TopicPartitionList,
) -> Result<Vec<PartitionLag>> {
    let committed = consumer.committed_offsets(partitions, LOOKUP_TIMEOUT)?;
    let mut lags = Vec::with_capacity(committed.count());
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(e.topic(), e.partition(), LOOKUP_TIMEOUT)?;
        let committed = e.offset().to_raw().filter(|&o| o >= 0);
        lags.push(PartitionLag {
            topic: e.topic().to_owned(),
            partition: e.partition(),
            committed,
            low_watermark: low,
            high_watermark: high,
            lag: (high - committed.unwrap_or(low).max(low)).max(0),
        });
    }
    lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(lags)
}

/// The lag of `group` on every partition of `topics`, seen from outside the group (the group is
/// not joined).
pub async fn group_lag<T: AsRef<str>>(
    config: &KafkaConfig,
    group: &str,
    topics: impl IntoIterator<Item = T>,
) -> Result<Vec<PartitionLag>> {
    let config = config.with([("group.id", group), ("enable.auto.commit", "false")])?;
    let topics: Vec<String> = topics.into_iter().map(|t| t.as_ref().to_owned()).collect();
    crate::blocking(move || {
        let consumer: BaseConsumer = config.to_client_config().create()?;
        let mut partitions = TopicPartitionList::new();
        for topic in &topics {
            let metadata = consumer.fetch_metadata(Some(topic), LOOKUP_TIMEOUT)?;
            for t in metadata.topics() {
                if let Some(e) = t.error() {
                    return Err(Error::Kafka(KafkaError::MetadataFetch(e.into())));
                }
                for p in t.partitions() {
                    partitions.add_partition(topic, p.id());
                }
            }
        }
        lag_of(&consumer, partitions)
    })
    .await
}

/// [`group_lag`] every `interval`, as a stream; the first report comes at once.
pub fn lag_reports<T: AsRef<str>>(
    config: KafkaConfig,
    group: impl Into<String>,
    topics: impl IntoIterator<Item = T>,
    interval: Duration,
) -> futures_util::stream::BoxStream<'static, Result<Vec<PartitionLag>>> {
    let (group, topics): (String, Vec<String>) = (
        group.into(),
        topics.into_iter().map(|t| t.as_ref().to_owned()).collect(),
    );
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    Box::pin(futures_util::stream::unfold(
        (ticks, config, group, topics),
        |(mut ticks, config, group, topics)| async move {
            ticks.tick().await;
            let report = group_lag(&config, &group, &topics).await;
            Some((report, (ticks, config, group, topics)))
        },
    ))
}
