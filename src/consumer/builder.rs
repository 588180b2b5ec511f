//! [`ConsumerBuilder`]: settings checked together, then the consumer and its polling thread.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::KafkaError;
use tokio::sync::mpsc;

use super::poll::{self, CloseWait, Inner, Shared};
use super::rebalance::KitContext;
use super::{
    Assignment, CheckpointStore, Consumer, Isolation, OffsetReset, RebalanceListener, StartAt,
    StopAt,
};
use crate::config::{ConfigError, KafkaConfig, Problem};
use crate::error::{Error, Result};

/// Builds a [`Consumer`]. Setters never fail; [`build`](Self::build) reports every problem.
#[must_use = "a builder does nothing until `build()` is called"]
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
    pub(super) fn new(config: &KafkaConfig) -> Self {
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
    /// by an [`AtLeastOnce`](super::processing::AtLeastOnce) loop (default 10 s). Past it, the processed
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
            offset_reset: self.offset_reset,
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
        let thread = poll::spawn(consumer.clone(), sender, stop.clone(), batch).map_err(|e| {
            Error::Kafka(KafkaError::ClientCreation(format!(
                "could not start the polling thread: {e}"
            )))
        })?;
        tracing::debug!(group = ?group_id, topics = ?self.topics, "kafka_kit: consumer started");
        Ok(Consumer {
            inner: Arc::new(Inner {
                consumer,
                shared,
                checkpoints: self.checkpoints,
                stop,
                thread: Mutex::new(Some(thread)),
                deadline: Mutex::default(),
                closed: CloseWait::default(),
            }),
            receiver,
            pending: VecDeque::new(),
        })
    }
}

/// Records handed to the application in one channel message, at most (fewer with a smaller
/// buffer).
const BATCH: usize = 256;
