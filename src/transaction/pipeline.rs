//! [`ExactlyOnce`]: consume, transform, produce, each input's results committed exactly once.

use std::collections::HashMap;
use std::fmt::{self, Display};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::core::{Core, Counters, Settings, Sink, Source};
use super::{transactional_problems, TransactionalProducer};
use crate::config::{ConfigError, KafkaConfig, Problem};
use crate::consumer::processing::RetryPolicy;
use crate::consumer::{
    CommitOffsets, Consumer, ConsumerBuilder, ConsumerHandle, ConsumerRecord, Isolation,
    PartitionHold,
};
use crate::error::{Error, Result};
use crate::producer::{DeliveryFuture, OwnedRecord, ProducerBuilder};

/// Builds an [`ExactlyOnce`] pipeline: see [`ExactlyOnce::builder`].
#[must_use = "a builder does nothing until `build()` is called"]
pub struct ExactlyOnceBuilder {
    config: KafkaConfig,
    group_id: Option<String>,
    topics: Vec<String>,
    transactional_id: Option<String>,
    consumer_options: Vec<ConsumerOptions>,
    producer_options: Vec<ProducerOptions>,
    commit_interval: Duration,
    max_records: usize,
    retry: RetryPolicy,
    dead_letter: Option<String>,
    transaction_timeout: Option<Duration>,
    init_timeout: Duration,
    static_membership: bool,
}

/// Options of the pipeline's consumer, applied to its [`ConsumerBuilder`].
type ConsumerOptions = Box<dyn FnOnce(ConsumerBuilder) -> ConsumerBuilder + Send>;
/// Options of the pipeline's producer, applied to its [`ProducerBuilder`].
type ProducerOptions = Box<dyn FnOnce(ProducerBuilder) -> ProducerBuilder + Send>;

impl fmt::Debug for ExactlyOnceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExactlyOnceBuilder")
            .field("config", &self.config)
            .field("group_id", &self.group_id)
            .field("topics", &self.topics)
            .field("transactional_id", &self.transactional_id)
            .field("commit_interval", &self.commit_interval)
            .field("max_records", &self.max_records)
            .field("dead_letter", &self.dead_letter)
            .field("static_membership", &self.static_membership)
            .finish_non_exhaustive()
    }
}

impl ExactlyOnceBuilder {
    /// The consumer group the pipeline reads in (required).
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = Some(group.into());
        self
    }

    /// The input topics (required).
    pub fn topics<S: Into<String>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        self.topics.extend(topics.into_iter().map(Into::into));
        self
    }

    /// The producer's `transactional.id` (required): stable across restarts of this instance,
    /// distinct between instances. A restarted instance fences the old one and aborts what it
    /// left open. It is also the consumer's `group.instance.id` unless
    /// [`static_membership`](Self::static_membership) is turned off, so by default it may only
    /// hold the characters Kafka allows there: up to 249 of `a-z`, `A-Z`, `0-9`, `.`, `_`, `-`.
    pub fn transactional_id(mut self, id: impl Into<String>) -> Self {
        self.transactional_id = Some(id.into());
        self
    }

    /// A transaction commits once it holds `max_records` inputs (default 1,000), or `interval`
    /// after it began (default 100 ms), whichever comes first: the same order as
    /// [`AtLeastOnce::commit_every`](crate::consumer::processing::AtLeastOnce::commit_every).
    pub fn commit_every(mut self, max_records: usize, interval: Duration) -> Self {
        self.commit_interval = interval;
        self.max_records = max_records;
        self
    }

    /// How often an input whose transform fails is tried (each failure aborts the transaction
    /// and rewinds) before it goes to the dead-letter topic; the same backoff follows every
    /// abort. Default: three attempts.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Inputs that keep failing are written to `topic`, inside the transaction, with the
    /// [`dead_letter_headers`](crate::consumer::processing::dead_letter_headers). Without one, such
    /// an input stops the pipeline with [`Error::Processing`], uncommitted.
    pub fn dead_letter(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter = Some(topic.into());
        self
    }

    /// `transaction.timeout.ms`: it must be below the group's `session.timeout.ms`. Default: 10 s
    /// (Kafka Streams' choice), or one second under the session timeout if that is shorter.
    pub fn transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = Some(timeout);
        self
    }

    /// How long the start waits for the transaction coordinator (default 30 s).
    pub fn init_timeout(mut self, timeout: Duration) -> Self {
        self.init_timeout = timeout;
        self
    }

    /// Options of the pipeline's consumer, set on its [`ConsumerBuilder`]: where partitions
    /// without a committed offset start, the assignment strategy, the buffer, the revoke
    /// timeout, a rebalance listener, and the rest. The consumer takes the same options as any
    /// [`Consumer`]; what exactly-once needs (the group, the topics, `read_committed`, the
    /// instance id under [static membership](Self::static_membership)) is set after them, and
    /// wins.
    ///
    /// ```
    /// # use kafka_kit::config::KafkaConfig;
    /// # use kafka_kit::consumer::{Assignment, OffsetReset};
    /// # use kafka_kit::transaction::ExactlyOnce;
    /// # fn f() -> kafka_kit::Result<()> {
    /// # let config = KafkaConfig::builder().build()?;
    /// let builder = ExactlyOnce::builder(&config)
    ///     .group_id("points")
    ///     .topics(["user-events"])
    ///     .transactional_id("points-0")
    ///     .consumer(|c| c.offset_reset(OffsetReset::Earliest).assignment(Assignment::CooperativeSticky));
    /// # Ok(()) }
    /// ```
    pub fn consumer(
        mut self,
        options: impl FnOnce(ConsumerBuilder) -> ConsumerBuilder + Send + 'static,
    ) -> Self {
        self.consumer_options.push(Box::new(options));
        self
    }

    /// Options of the pipeline's producer, set on its [`ProducerBuilder`] (e.g. how outputs
    /// without a partition are routed: Python-compatible MD5 by default).
    pub fn producer(
        mut self,
        options: impl FnOnce(ProducerBuilder) -> ProducerBuilder + Send + 'static,
    ) -> Self {
        self.producer_options.push(Box::new(options));
        self
    }

    /// Static group membership (on by default): the consumer joins its group with the
    /// transactional id as its `group.instance.id`. A transactional id already has to be unique
    /// to one instance and stable across its restarts (two live instances with one id fence each
    /// other), which is exactly what an instance id must be.
    ///
    /// What each choice costs in recovery time after a crash (SIGKILL, an OOM kill, a lost
    /// machine), with Kafka's defaults:
    ///
    /// - **Static (`true`, the default).** The restarted instance takes its old place in the
    ///   group at once, with its old partitions, without waiting for the dead member's session
    ///   to expire. The cost: a member never leaves the group by itself, not even at a clean
    ///   shutdown, so an instance that went away for good (scaled down, moved to another id)
    ///   holds its partitions, unread, until `session.timeout.ms` (45 s) passes.
    /// - **Dynamic (`false`).** A restarted instance is a new member. A member killed during a
    ///   rebalance holds the whole group up for as long as `max.poll.interval.ms` (300 s); one
    ///   killed at any other time holds its partitions until `session.timeout.ms` (45 s). A
    ///   clean shutdown leaves the group at once.
    ///
    /// Static membership needs Kafka 2.3 or later. A `group.instance.id` set in the
    /// configuration is used instead of the transactional id; with `static_membership(false)`
    /// such a setting is refused by [`build`](Self::build).
    pub fn static_membership(mut self, enabled: bool) -> Self {
        self.static_membership = enabled;
        self
    }

    /// Checks the settings, reporting every one that breaks exactly-once at once, then creates
    /// the consumer and the producer.
    pub fn build(self) -> Result<ExactlyOnce> {
        let config = &self.config;
        let mut problems = transactional_problems(config);
        if self.topics.is_empty() {
            problems.push(Problem::Missing {
                property: "topics".into(),
                reason: "name the input topics with topics()".into(),
            });
        }
        if self.group_id.is_none() && config.get("group.id").is_none() {
            problems.push(Problem::Missing {
                property: "group.id".into(),
                reason: "the input offsets are committed for a consumer group".into(),
            });
        }
        let transactional_id = self
            .transactional_id
            .clone()
            .or_else(|| config.get("transactional.id").map(str::to_owned))
            .filter(|id| !id.trim().is_empty());
        if transactional_id.is_none() {
            problems.push(Problem::Missing {
                property: "transactional.id".into(),
                reason: "set one with transactional_id(), stable across restarts".into(),
            });
        }
        if config.get("enable.auto.commit") == Some("true") {
            problems.push(Problem::Conflict {
                property: "enable.auto.commit".into(),
                reason: "exactly-once commits offsets inside its transactions; auto-commit would \
                         commit them outside, for outputs that may yet be aborted"
                    .into(),
            });
        }
        if let Some(level) = config
            .get("isolation.level")
            .filter(|l| *l != "read_committed")
        {
            problems.push(Problem::Conflict {
                property: "isolation.level".into(),
                reason: format!(
                    "exactly-once reads with read_committed; {level} would read aborted outputs of \
                     an upstream transaction"
                ),
            });
        }
        let instance_id = self.instance_id(transactional_id.as_deref(), &mut problems);
        problems.extend(
            [
                ("commit_interval", Some(self.commit_interval)),
                ("init_timeout", Some(self.init_timeout)),
                ("transaction.timeout.ms", self.transaction_timeout),
            ]
            .into_iter()
            .filter_map(|(setting, d)| Problem::zero_duration(setting, d?)),
        );
        let session = millis_of(config, "session.timeout.ms").unwrap_or(45_000);
        let transaction = self
            .transaction_timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
            .or_else(|| millis_of(config, "transaction.timeout.ms"));
        if let Some(transaction) = transaction.filter(|&t| t >= session) {
            problems.push(Problem::Conflict {
                property: "transaction.timeout.ms".into(),
                reason: format!(
                    "{transaction} ms is not below session.timeout.ms ({session} ms): a member \
                     that dies with a transaction open would hold its partitions' readers back \
                     after the group has moved them"
                ),
            });
        }
        if self.max_records == 0 {
            problems.push(Problem::Conflict {
                property: "max_records".into(),
                reason: "a transaction needs room for a record".into(),
            });
        }
        if !problems.is_empty() {
            return Err(ConfigError::from_problems(problems).into());
        }
        let transaction =
            transaction.unwrap_or_else(|| 10_000.min(session.saturating_sub(1_000)).max(1_000));

        let mut consumer = Consumer::builder(config);
        for options in self.consumer_options {
            consumer = options(consumer);
        }
        let mut consumer = consumer
            .topics(self.topics.iter().cloned())
            .isolation(Isolation::ReadCommitted);
        if let Some(group) = &self.group_id {
            consumer = consumer.group_id(group.clone());
        }
        if let Some(id) = instance_id {
            consumer = consumer.instance_id(id);
        }
        let consumer = consumer.build()?;
        let producer_options = self.producer_options;
        let producer = TransactionalProducer::builder(config, transactional_id.unwrap_or_default())
            .transaction_timeout(Duration::from_millis(transaction))
            .producer(move |mut producer| {
                for options in producer_options {
                    producer = options(producer);
                }
                producer
            })
            .build()?;
        Ok(ExactlyOnce {
            consumer,
            producer,
            settings: Settings {
                max_records: self.max_records,
                interval: self.commit_interval,
                retry: self.retry,
                dead_letter: self.dead_letter,
                call_retries: 10,
            },
            init_timeout: self.init_timeout,
            counters: Arc::default(),
        })
    }
}

impl ExactlyOnceBuilder {
    /// The `group.instance.id` to give the consumer: the transactional id, under static
    /// membership, unless the configuration sets one itself (then `None`: the configuration's
    /// is used). Adds a problem for an id Kafka would refuse, and for a configured one that
    /// contradicts `static_membership(false)`.
    fn instance_id(
        &self,
        transactional_id: Option<&str>,
        problems: &mut Vec<Problem>,
    ) -> Option<String> {
        let configured = self.config.get("group.instance.id");
        if !self.static_membership {
            if configured.is_some() {
                problems.push(Problem::Conflict {
                    property: "group.instance.id".into(),
                    reason: "static_membership(false) asks for dynamic membership; remove \
                             group.instance.id from the configuration, or keep static membership"
                        .into(),
                });
            }
            return None;
        }
        if configured.is_some() {
            return None;
        }
        let id = transactional_id?;
        if let Err(reason) = check_instance_id(id) {
            problems.push(Problem::InvalidValue {
                property: "group.instance.id".into(),
                value: id.to_owned(),
                reason: format!(
                    "static membership uses the transactional id as the consumer's \
                     group.instance.id, and {reason}; choose a transactional id that fits, or \
                     opt out with static_membership(false)"
                ),
            });
            return None;
        }
        Some(id.to_owned())
    }
}

/// Kafka's rule for a `group.instance.id` (the one for topic names, which its clients check):
/// 1 to 249 characters of `a-z`, `A-Z`, `0-9`, `.`, `_` and `-`, and not `.` or `..`.
fn check_instance_id(id: &str) -> std::result::Result<(), String> {
    const MAX: usize = 249;
    if id.is_empty() || id == "." || id == ".." {
        return Err(format!("Kafka refuses {id:?} as one"));
    }
    if id.len() > MAX {
        return Err(format!(
            "Kafka allows at most {MAX} characters there, not {}",
            id.len()
        ));
    }
    match id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(c) => Err(format!(
            "Kafka allows only a-z, A-Z, 0-9, '.', '_' and '-' there, not {c:?}"
        )),
        None => Ok(()),
    }
}

fn millis_of(config: &KafkaConfig, property: &str) -> Option<u64> {
    config.get(property)?.parse().ok()
}

/// A consume-transform-produce pipeline whose outputs and input offsets commit together, in
/// transactions: after crashes, restarts, rebalances and aborts, a `read_committed` reader sees
/// exactly one result per input.
///
/// # How it works
///
/// - It reads with `read_committed`, and batches inputs into one transaction until the commit
///   interval (100 ms by default) or the maximum number of records is reached, then sends
///   their outputs' offsets (next to read) with the group's metadata and commits.
/// - A failed output, an abortable error of the producer or a failed transform aborts the
///   transaction and rewinds the consumer to where the transaction began; the inputs are then
///   read and transformed again. An input that keeps failing goes to the dead-letter topic,
///   inside the transaction, or stops the pipeline if there is none.
/// - On a revoke the open transaction is committed (or aborted) before the partitions go; a
///   partition lost without a revoke is never committed for.
/// - A fatal error (a newer instance with the same `transactional.id` fenced this one) stops it
///   with that error; nothing uncommitted is ever shown to `read_committed` readers.
/// - At shutdown the open transaction commits.
///
/// The transform may run more than once for an input (after an abort): keep it free of side
/// effects outside Kafka, or make those idempotent.
///
/// # Restarts: static membership
///
/// By default the consumer is a static member of its group, with the transactional id as its
/// `group.instance.id` (see [`ExactlyOnceBuilder::static_membership`]). Transactional ids are
/// already unique per instance and stable across its restarts, which is what an instance id must
/// be. What that changes after a crash (SIGKILL, an OOM kill), with Kafka's defaults:
///
/// | | restarted with the same id | gone for good |
/// |---|---|---|
/// | static (default) | takes its old place and partitions at once | holds its partitions until `session.timeout.ms` (45 s), even after a clean shutdown |
/// | dynamic (`static_membership(false)`) | waits until `session.timeout.ms` (45 s) for the dead member; up to `max.poll.interval.ms` (300 s) if it died during a rebalance | the same, after a crash; nothing after a clean shutdown |
///
/// Either way the restarted producer fences the old one and aborts the transaction it left open,
/// so nothing is committed twice.
///
/// ```no_run
/// use std::sync::Arc;
/// use kafka_kit::config::KafkaConfig;
/// use kafka_kit::consumer::{ConsumerRecord, OffsetReset};
/// use kafka_kit::producer::OwnedRecord;
/// use kafka_kit::transaction::ExactlyOnce;
///
/// # async fn run() -> anyhow::Result<()> {
/// let config = KafkaConfig::builder().build()?;
/// let stats = ExactlyOnce::builder(&config)
///     .group_id("points")
///     .topics(["user-events"])
///     .transactional_id("points-0")
///     .consumer(|c| c.offset_reset(OffsetReset::Earliest))
///     .dead_letter("user-events.dlt")
///     .build()?
///     .run(|record: Arc<ConsumerRecord>| async move {
///         let event: serde_json::Value = record.json()?;
///         let out = serde_json::json!({ "event": event, "points": 10 });
///         Ok::<_, anyhow::Error>(vec![OwnedRecord::to("processed-events")
///             .key(record.key().unwrap_or_default())
///             .json(&out)?])
///     }, tokio::signal::ctrl_c())
///     .await?;
/// println!("{stats:?}");
/// # Ok(()) }
/// ```
pub struct ExactlyOnce {
    consumer: Consumer,
    producer: TransactionalProducer,
    settings: Settings,
    init_timeout: Duration,
    counters: Arc<Counters>,
}

impl fmt::Debug for ExactlyOnce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExactlyOnce")
            .field("producer", &self.producer)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What an [`ExactlyOnce`] pipeline did so far.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExactlyOnceStats {
    /// Transactions committed.
    pub transactions_committed: u64,
    /// Transactions aborted (their inputs were read again).
    pub transactions_aborted: u64,
    /// Inputs committed.
    pub records_in: u64,
    /// Outputs committed (dead letters not included).
    pub records_out: u64,
    /// Inputs committed as dead letters.
    pub dead_lettered: u64,
    /// Transform failures (each one aborted a transaction).
    pub retries: u64,
}

/// A live view of an [`ExactlyOnce`] pipeline's [`ExactlyOnceStats`], to read while it runs.
#[derive(Clone, Debug)]
pub struct Progress(Arc<Counters>);

impl Progress {
    /// The counts now.
    pub fn snapshot(&self) -> ExactlyOnceStats {
        let c = &self.0;
        let get = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
        ExactlyOnceStats {
            transactions_committed: get(&c.committed),
            transactions_aborted: get(&c.aborted),
            records_in: get(&c.records_in),
            records_out: get(&c.records_out),
            dead_lettered: get(&c.dead_lettered),
            retries: get(&c.retries),
        }
    }

    /// Waits until the counts satisfy `done` (checked now, then after each commit and abort),
    /// and returns them: a shutdown signal for "stop once N inputs are committed".
    pub async fn wait_for(
        &self,
        mut done: impl FnMut(&ExactlyOnceStats) -> bool,
    ) -> ExactlyOnceStats {
        loop {
            let changed = self.0.changed.notified();
            let mut changed = std::pin::pin!(changed);
            // Registered before the counts are read: a commit in between still wakes it.
            changed.as_mut().enable();
            let stats = self.snapshot();
            if done(&stats) {
                return stats;
            }
            changed.await;
        }
    }
}

impl ExactlyOnce {
    /// A builder over a shared configuration (bootstrap servers, security, producer tuning).
    pub fn builder(config: &KafkaConfig) -> ExactlyOnceBuilder {
        ExactlyOnceBuilder {
            config: config.clone(),
            group_id: None,
            topics: Vec::new(),
            transactional_id: None,
            consumer_options: Vec::new(),
            producer_options: Vec::new(),
            commit_interval: Duration::from_millis(100),
            max_records: 1_000,
            retry: RetryPolicy::default(),
            dead_letter: None,
            transaction_timeout: None,
            init_timeout: Duration::from_secs(30),
            static_membership: true,
        }
    }

    /// A live view of the counts, to keep before [`run`](Self::run).
    pub fn progress(&self) -> Progress {
        Progress(self.counters.clone())
    }

    /// The consumer, for its lag and statistics.
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// Initializes the producer (fencing older instances with the same id), then runs
    /// `transform` on every input until `shutdown` completes (the open transaction commits) or
    /// a fatal error stops it. Each input gives zero, one or many outputs.
    pub async fn run<F, Fut, E>(
        self,
        transform: F,
        shutdown: impl Future<Output = impl Sized>,
    ) -> Result<ExactlyOnceStats>
    where
        F: Fn(Arc<ConsumerRecord>) -> Fut,
        Fut: Future<Output = std::result::Result<Vec<OwnedRecord>, E>>,
        E: Display,
    {
        let ExactlyOnce {
            consumer,
            producer,
            settings,
            init_timeout,
            counters,
        } = self;
        producer.init(init_timeout).await?;
        let handle = consumer.handle();
        let source = ConsumerSource {
            consumer,
            handle: handle.clone(),
            holds: Holds {
                handle: handle.clone(),
                held: Mutex::default(),
            },
        };
        let sink = ProducerSink {
            producer,
            group: handle,
            deliveries: Vec::new(),
        };
        let mut core = Core::new(source, sink, settings, counters.clone());
        let result = core.run(transform, shutdown).await;
        let stats = Progress(counters).snapshot();
        tracing::info!(?stats, "kafka_kit: exactly-once pipeline stopped");
        let Core { source, sink, .. } = core;
        let ConsumerSource {
            consumer,
            holds,
            handle,
        } = source;
        // A transaction the pipeline stopped in (a fatal error) may still hold partitions; and
        // the consumer closes only once its other handles are gone.
        drop((holds, handle, sink));
        let closed = consumer.close().await;
        result.and(closed).map(|()| stats)
    }
}

struct ConsumerSource {
    consumer: Consumer,
    handle: ConsumerHandle,
    holds: Holds,
}

/// The partitions the open transaction holds. Dropping it releases them: a pipeline dropped with
/// a transaction open (its task cancelled), or stopped by a fatal error in one, would otherwise
/// make the consumer's revoke, when it closes, wait its whole revoke timeout for them.
struct Holds {
    handle: ConsumerHandle,
    held: Mutex<HashMap<(String, i32), Vec<PartitionHold>>>,
}

impl Holds {
    fn hold(&self, topic: &str, partition: i32) {
        let hold = self.handle.hold(topic, partition);
        crate::lock(&self.held)
            .entry((topic.to_owned(), partition))
            .or_default()
            .push(hold);
    }

    fn release(&self, topic: &str, partition: i32) {
        let mut held = crate::lock(&self.held);
        let key = (topic.to_owned(), partition);
        if let Some(holds) = held.get_mut(&key) {
            drop(holds.pop());
            if holds.is_empty() {
                held.remove(&key);
            }
        }
    }
}

impl Source for ConsumerSource {
    async fn next(&mut self) -> Option<Result<Arc<ConsumerRecord>>> {
        Some(self.consumer.recv().await?.map(Arc::new))
    }

    fn may_commit(&self, topic: &str, partition: i32) -> bool {
        self.handle.may_commit(topic, partition)
    }

    fn revoke_pending(&self) -> bool {
        self.handle.revoke_pending()
    }

    fn revoke_started(&self) -> impl Future<Output = ()> + Send + 'static {
        let handle = self.handle.clone();
        async move { handle.revoke_started().await }
    }

    fn hold(&self, topic: &str, partition: i32) {
        self.holds.hold(topic, partition);
    }

    fn release(&self, topic: &str, partition: i32) {
        self.holds.release(topic, partition);
    }

    async fn rewind(&mut self, to: &CommitOffsets) -> Result<()> {
        self.consumer.seek(to).await
    }
}

struct ProducerSink {
    producer: TransactionalProducer,
    group: ConsumerHandle,
    /// The transaction's deliveries, by input number.
    deliveries: Vec<(usize, DeliveryFuture)>,
}

impl Sink for ProducerSink {
    fn begin(&mut self) -> Result<()> {
        self.deliveries.clear();
        self.producer.begin()
    }

    async fn produce(&mut self, input: usize, record: OwnedRecord) -> Result<()> {
        let mut message = record.as_record();
        if let Some(partition) = record.partition {
            message = message.partition(partition);
        }
        let delivery = self.producer.enqueue(message).await?;
        self.deliveries.push((input, delivery));
        Ok(())
    }

    async fn flush(&mut self) -> Option<(usize, Error)> {
        for (input, delivery) in self.deliveries.drain(..) {
            if let Err(failed) = delivery.await {
                return Some((input, failed.error));
            }
        }
        None
    }

    async fn send_offsets(&mut self, offsets: &CommitOffsets) -> Result<()> {
        let Some(group) = self.group.group_metadata() else {
            return Err(ConfigError::single(Problem::Missing {
                property: "group.id".into(),
                reason: "the consumer is not in a group".into(),
            })
            .into());
        };
        self.producer.send_offsets(offsets, group).await
    }

    async fn commit(&mut self) -> Result<()> {
        self.producer.commit().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.deliveries.clear();
        self.producer.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn progress_waits_for_a_commit() {
        let counters = Arc::new(Counters::default());
        let progress = Progress(counters.clone());
        let waiting = tokio::spawn(async move { progress.wait_for(|s| s.records_in >= 5).await });
        for _ in 0..5 {
            tokio::task::yield_now().await;
            counters.records_in.fetch_add(1, Ordering::Relaxed);
            counters.changed.notify_waiters();
        }
        let stats = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the commits")
            .unwrap();
        assert_eq!(stats.records_in, 5);
    }
}
