//! Test support: an embedded Kafka broker, or the real one named by `KAFKA_BOOTSTRAP_SERVERS`.
//!
//! [`TestCluster::from_env_or_embedded`] is what kafka-kit's examples and tests start with: it uses
//! the cluster in `KAFKA_BOOTSTRAP_SERVERS` when that is set, and otherwise starts an
//! [`EmbeddedKafka`] in-process (librdkafka's mock cluster), so everything runs on a machine with
//! no Kafka and no Docker.
//!
//! ```no_run
//! use kafka_kit::testing::TestCluster;
//!
//! # async fn run() -> kafka_kit::Result<()> {
//! let cluster = TestCluster::from_env_or_embedded()?;
//! cluster.create_topic("user-events", 6).await?;
//! let config = cluster.config().build()?;
//! println!("using {}", cluster.describe());
//! # Ok(()) }
//! ```
//!
//! # Read loops that survive passing errors
//!
//! Consumers report errors they recover from by themselves (a broker restarting, a committed-offset
//! fetch answered with `GROUP_ID_NOT_FOUND`) on their stream, among the records. A read loop that
//! stops at the first `Err` then fails for nothing: [`next_unless_fatal`] and [`unless_fatal`] log
//! and skip those, and end the loop only on a fatal error or a caught panic, as kafka-kit's
//! processing loops do. [`TestCluster::read_topic`] and the examples read that way.
//!
//! # What the embedded broker cannot do
//!
//! The mock cluster speaks enough of the protocol for producers, idempotence, consumer groups and
//! transactions' calls, but it is not Kafka. It ignores `isolation.level=read_committed`, keeps
//! aborted records visible, drops offsets committed through a transaction, does not look offsets
//! up by timestamp, waits `session.timeout.ms` less a second before completing a rebalance
//! (use [`TestCluster::consumer_config`]), answers every produce with a log-append time of 1234 ms (so delivery reports
//! carry `Timestamp::LogAppendTime(1234)`), and has no admin API for topics (use
//! [`TestCluster::create_topic`]). Tests of
//! those behaviours need a real broker: check [`TestCluster::is_embedded`] and skip, saying why.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::OwnedMessage;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::config::{ConfigBuilder, KafkaConfig, BOOTSTRAP_ENV};
use crate::error::{Error, Result};

/// librdkafka's mock cluster, as rdkafka exposes it.
pub type Mock = MockCluster<'static, DefaultProducerContext>;

type Job = Box<dyn FnOnce(&Mock) + Send>;

/// An in-process Kafka cluster: librdkafka's mock brokers, listening on localhost.
///
/// The mock cluster is not `Send`, so it lives on a thread of its own; this handle is `Send` and
/// `Sync`, and dropping it shuts the cluster down.
pub struct EmbeddedKafka {
    bootstrap: String,
    brokers: i32,
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKafka")
            .field("bootstrap", &self.bootstrap)
            .field("brokers", &self.brokers)
            .finish()
    }
}

impl EmbeddedKafka {
    /// Starts a cluster of `brokers` mock brokers.
    pub fn start(brokers: i32) -> Result<Self> {
        let (jobs, job_queue) = mpsc::channel::<Job>();
        let (ready, started) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("kafka-kit-embedded-broker".into())
            .spawn(move || match MockCluster::new(brokers) {
                Ok(mock) => {
                    let _ = ready.send(Ok(mock.bootstrap_servers()));
                    // Serve jobs until every handle is gone; then the cluster drops here.
                    for job in job_queue {
                        job(&mock);
                    }
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            })
            .map_err(|e| Error::Testing(format!("could not start its thread: {e}")))?;
        let bootstrap = started
            .recv()
            .map_err(|_| Error::Testing("its thread stopped while starting".into()))??;
        tracing::debug!(%bootstrap, brokers, "kafka_kit: embedded broker started");
        Ok(EmbeddedKafka {
            bootstrap,
            brokers,
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// The brokers' `host:port` list.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// The number of brokers.
    pub fn brokers(&self) -> i32 {
        self.brokers
    }

    /// Runs `f` on the mock cluster and returns its result: error injection, brokers going down,
    /// anything rdkafka's [`MockCluster`] offers.
    pub fn with_mock<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&Mock) -> R + Send + 'static,
    {
        let (reply, result) = mpsc::channel();
        let job: Job = Box::new(move |mock| {
            let _ = reply.send(f(mock));
        });
        let gone = || Error::Testing("the cluster has shut down".into());
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        result.recv().map_err(|_| gone())
    }

    /// Creates a topic with `partitions` partitions, replicated on up to three brokers. A topic
    /// that exists with as many partitions is left as it is; one with another partition count is
    /// an [`Error::Testing`]. It blocks (briefly: the cluster is in this process).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let (name, replication) = (topic.to_owned(), self.brokers.min(3));
        match self.with_mock(move |mock| mock.create_topic(&name, partitions, replication))? {
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::TopicAlreadyExists) => {
                let existing = lookup_partitions(&client_config(&self.bootstrap), topic)?;
                same_partitions(topic, existing, partitions)
            }
            other => Ok(other?),
        }
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The cluster examples and tests run against: `KAFKA_BOOTSTRAP_SERVERS` if set, else embedded.
#[derive(Debug)]
pub struct TestCluster {
    bootstrap: String,
    embedded: Option<EmbeddedKafka>,
}

impl TestCluster {
    /// The cluster in `KAFKA_BOOTSTRAP_SERVERS` when it is set and not empty; otherwise a new
    /// embedded cluster of three brokers.
    pub fn from_env_or_embedded() -> Result<Self> {
        match std::env::var(BOOTSTRAP_ENV) {
            Ok(servers) if !servers.trim().is_empty() => Ok(Self::external(servers)),
            _ => Self::embedded(3),
        }
    }

    /// A new embedded cluster of `brokers` brokers.
    pub fn embedded(brokers: i32) -> Result<Self> {
        let embedded = EmbeddedKafka::start(brokers)?;
        Ok(TestCluster {
            bootstrap: embedded.bootstrap.clone(),
            embedded: Some(embedded),
        })
    }

    /// An existing cluster.
    pub fn external(bootstrap_servers: impl Into<String>) -> Self {
        TestCluster {
            bootstrap: bootstrap_servers.into(),
            embedded: None,
        }
    }

    /// The brokers' `host:port` list.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    /// Whether this is the embedded mock cluster (see the module docs for what it cannot do).
    pub fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }

    /// The embedded cluster, for error injection.
    pub fn mock(&self) -> Option<&EmbeddedKafka> {
        self.embedded.as_ref()
    }

    /// One line saying which cluster this is, for examples to print.
    pub fn describe(&self) -> String {
        match &self.embedded {
            Some(e) => format!(
                "embedded mock cluster ({} brokers) at {}",
                e.brokers, self.bootstrap
            ),
            None => format!("{} (from {BOOTSTRAP_ENV})", self.bootstrap),
        }
    }

    /// A configuration builder pointed at this cluster.
    pub fn config(&self) -> ConfigBuilder {
        KafkaConfig::builder().bootstrap_servers(self.bootstrap.clone())
    }

    /// A configuration builder for consumers in a group. On the embedded cluster it sets a short
    /// session timeout (3 s, heartbeats every 500 ms): the mock coordinator waits the session
    /// timeout less one second before it completes any rebalance of a group with members, which
    /// with Kafka's default of 45 s makes every rebalance take 44 s.
    pub fn consumer_config(&self) -> ConfigBuilder {
        match self.embedded {
            Some(_) => self
                .config()
                .set("session.timeout.ms", "3000")
                .set("heartbeat.interval.ms", "500"),
            None => self.config(),
        }
    }

    /// Creates a topic (replicated on up to three brokers) if the cluster's metadata does not show
    /// it yet, and waits until its metadata is visible.
    ///
    /// A topic that exists with as many partitions is used as it is, without asking the cluster
    /// to create it: a cluster that refuses `CreateTopics` for an existing topic (ACLs, or
    /// librdkafka's standalone mock cluster, which cannot answer it at all) is fine. A topic that
    /// exists with another partition count is an [`Error::Testing`] that says so: tests and
    /// examples count on the partitions they asked for (MD5 routing, per-partition offsets).
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        if let Some(existing) = self.existing_partitions(topic).await? {
            tracing::debug!(topic, partitions = existing, "kafka_kit: topic exists");
            return same_partitions(topic, Some(existing), partitions);
        }
        match &self.embedded {
            Some(embedded) => embedded.create_topic(topic, partitions)?,
            None => self.create_with_admin(topic, partitions).await?,
        }
        let deadline = crate::deadline(Duration::from_secs(30));
        loop {
            if let Some(created) = self.existing_partitions(topic).await? {
                // Someone else may have created it first, with another count.
                return same_partitions(topic, Some(created), partitions);
            }
            if Instant::now() >= deadline {
                return Err(Error::Testing(format!(
                    "topic `{topic}` was created but its metadata did not show it within 30 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Asks the cluster to create a topic; one that exists by now is not an error.
    async fn create_with_admin(&self, topic: &str, partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics([&new_topic], &options).await? {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    tracing::warn!(topic = name, error = %code, "kafka_kit: could not create topic");
                    return Err(Error::Kafka(rdkafka::error::KafkaError::AdminOp(code)));
                }
            }
        }
        Ok(())
    }

    /// The topic's partition count, from the cluster's metadata; `None` if it shows no such topic
    /// (or none usable yet).
    async fn existing_partitions(&self, topic: &str) -> Result<Option<i32>> {
        let (config, topic) = (self.client_config(), topic.to_owned());
        crate::blocking(move || lookup_partitions(&config, &topic)).await
    }

    /// The topic's partition count, from the cluster's metadata.
    pub async fn partition_count(&self, topic: &str) -> Result<i32> {
        self.existing_partitions(topic).await?.ok_or(Error::Kafka(
            rdkafka::error::KafkaError::MetadataFetch(RDKafkaErrorCode::UnknownTopicOrPartition),
        ))
    }

    /// Reads a topic from the beginning of every partition, without a consumer group, until
    /// `count` messages have arrived or `timeout` has passed (`Duration::MAX`: no deadline);
    /// returns what arrived. Tests use it to check what the broker really holds.
    ///
    /// Errors the consumer reports along the way that are not fatal (a broker restarting, all
    /// brokers down for a moment) are logged and skipped, as [`unless_fatal`] does; a fatal one is
    /// returned.
    pub async fn read_topic(
        &self,
        topic: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<OwnedMessage>> {
        let partitions = self.partition_count(topic).await?;
        let (config, topic) = (self.client_config(), topic.to_owned());
        crate::blocking(move || {
            let consumer: BaseConsumer = config
                .clone()
                .set("group.id", "kafka-kit-test-reader")
                .set("enable.auto.commit", "false")
                .create()?;
            let mut assignment = TopicPartitionList::new();
            for partition in 0..partitions {
                assignment.add_partition_offset(&topic, partition, Offset::Beginning)?;
            }
            consumer.assign(&assignment)?;
            let deadline = crate::deadline(timeout);
            let mut messages = Vec::with_capacity(count);
            while messages.len() < count && Instant::now() < deadline {
                if let Some(polled) = consumer.poll(Duration::from_millis(100)) {
                    if let Some(message) = unless_fatal(polled.map_err(Error::from))? {
                        messages.push(message.detach());
                    }
                }
            }
            messages.sort_by_key(|m| (m.partition(), m.offset()));
            Ok(messages)
        })
        .await
    }

    fn client_config(&self) -> ClientConfig {
        client_config(&self.bootstrap)
    }
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    config
}

/// A topic's partition count in the cluster's metadata (blocking); `None` if the metadata shows
/// no such topic, or none usable yet (an error for it, or no partitions).
fn lookup_partitions(config: &ClientConfig, topic: &str) -> Result<Option<i32>> {
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    Ok(found
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

/// `Ok` if a topic that exists has the partition count asked for, or an error that says it does
/// not (`None`: it is not in the metadata after all).
fn same_partitions(topic: &str, existing: Option<i32>, asked: i32) -> Result<()> {
    match existing {
        Some(n) if n == asked => Ok(()),
        Some(n) => Err(Error::Testing(format!(
            "topic `{topic}` exists with {n} partitions, not the {asked} asked for: \
             use another topic name, or delete it first"
        ))),
        None => Err(Error::Testing(format!(
            "topic `{topic}` exists, but the cluster's metadata does not show its partitions"
        ))),
    }
}

/// What a read loop makes of one item of a consumer's stream: `Ok(Some(record))` for a record,
/// `Ok(None)` for an error to skip, and `Err` for an error that must end the loop.
///
/// Consumers report errors they recover from by themselves (a broker restarting, a committed-offset
/// fetch that some brokers answer with `GROUP_ID_NOT_FOUND` for a group that does not exist yet):
/// those are logged as a `tracing` warning (`kafka_kit: consumer error; reading on`, with an
/// `error` field) and skipped. A fatal error ([`Error::is_fatal`]), or a caught panic
/// ([`Error::Panicked`]), ends the loop, as it ends kafka-kit's processing loops.
///
/// ```
/// use kafka_kit::testing::unless_fatal;
/// use kafka_kit::Error;
/// use kafka_kit::rdkafka::error::{KafkaError, RDKafkaErrorCode};
///
/// let transient = Error::from(KafkaError::MessageConsumption(RDKafkaErrorCode::GroupIdNotFound));
/// assert!(matches!(unless_fatal::<u32>(Err(transient)), Ok(None)));
/// let fatal = Error::from(KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::Fatal));
/// assert!(unless_fatal::<u32>(Err(fatal)).is_err());
/// assert!(matches!(unless_fatal(Ok(7)), Ok(Some(7))));
/// ```
pub fn unless_fatal<T>(item: Result<T>) -> Result<Option<T>> {
    match item {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.ends_processing() => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "kafka_kit: consumer error; reading on");
            Ok(None)
        }
    }
}

/// The next item of a stream of results (a [`Consumer`](crate::consumer::Consumer), lag
/// reports) that is not an error to skip: errors that are not fatal are logged and skipped as
/// [`unless_fatal`] says; `Some(Err(..))` is an error that must end the loop, and `None` the end
/// of the stream.
///
/// ```no_run
/// # async fn run(mut consumer: kafka_kit::consumer::Consumer) -> kafka_kit::Result<()> {
/// use kafka_kit::testing::next_unless_fatal;
///
/// while let Some(record) = next_unless_fatal(&mut consumer).await {
///     let record = record?; // only a fatal error (or a panic) ends the loop
///     println!("{}@{}", record.partition(), record.offset());
/// }
/// # Ok(()) }
/// ```
pub async fn next_unless_fatal<S, T>(stream: &mut S) -> Option<Result<T>>
where
    S: futures_util::Stream<Item = Result<T>> + Unpin + ?Sized,
{
    use futures_util::StreamExt as _;
    loop {
        match unless_fatal(stream.next().await?) {
            Ok(Some(value)) => return Some(Ok(value)),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
    }
}

/// `prefix` and a short random suffix: a topic or group name no earlier run used, so that a run
/// against a real cluster (which keeps topics) reads back only what it wrote.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", run_id())
}

/// A short random id (8 hex digits), to name several topics and groups of one run alike.
pub fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    fn consumption(code: RDKafkaErrorCode) -> Error {
        Error::Kafka(KafkaError::MessageConsumption(code))
    }

    #[tokio::test]
    async fn read_loops_skip_non_fatal_errors_and_stop_on_fatal_ones_and_panics() {
        let items: Vec<Result<u32>> = vec![
            Ok(1),
            Err(consumption(RDKafkaErrorCode::GroupIdNotFound)),
            Err(consumption(RDKafkaErrorCode::AllBrokersDown)),
            Ok(2),
            Err(Error::Kafka(KafkaError::MessageConsumptionFatal(
                RDKafkaErrorCode::Fatal,
            ))),
            Ok(3),
            Err(Error::Panicked {
                callback: "RebalanceListener::on_assigned",
                message: "boom".into(),
            }),
            Err(consumption(RDKafkaErrorCode::BrokerTransportFailure)),
        ];
        let mut stream = futures_util::stream::iter(items);
        let mut seen = Vec::new();
        while let Some(item) = next_unless_fatal(&mut stream).await {
            seen.push(item.map_err(|e| e.to_string()));
        }
        assert_eq!(seen.len(), 5, "{seen:?}");
        assert_eq!(seen[..2], [Ok(1), Ok(2)]);
        assert!(
            matches!(&seen[2], Err(e) if e.contains("Fatal")),
            "{seen:?}"
        );
        assert_eq!(seen[3], Ok(3));
        assert!(
            matches!(&seen[4], Err(e) if e.contains("panicked")),
            "{seen:?}"
        );
    }
}
