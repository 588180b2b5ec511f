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

    /// Creates a topic with `partitions` partitions, replicated on up to three brokers. Creating a
    /// topic that exists is not an error.
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let (name, replication) = (topic.to_owned(), self.brokers.min(3));
        match self.with_mock(move |mock| mock.create_topic(&name, partitions, replication))? {
            Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::TopicAlreadyExists) => {
                Ok(())
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

    /// Creates a topic (replicated on up to three brokers) and waits until its metadata is visible.
    /// Creating a topic that exists is not an error.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        if let Some(embedded) = &self.embedded {
            return embedded.create_topic(topic, partitions);
        }
        let admin: AdminClient<DefaultClientContext> = self.client_config().create()?;
        let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin.create_topics([&new_topic], &options).await? {
            match result {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(Error::Kafka(rdkafka::error::KafkaError::AdminOp(code)))
                        .inspect_err(|_| {
                            tracing::warn!(topic = name, "kafka_kit: could not create topic")
                        })
                }
            }
        }
        let deadline = crate::deadline(Duration::from_secs(30));
        while self.partition_count(topic).await.is_err() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The topic's partition count, from the cluster's metadata.
    pub async fn partition_count(&self, topic: &str) -> Result<i32> {
        let (config, topic) = (self.client_config(), topic.to_owned());
        crate::blocking(move || {
            let consumer: BaseConsumer = config.create()?;
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
            let found = metadata.topics().iter().find(|t| t.name() == topic);
            match found {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                    Ok(t.partitions().len() as i32)
                }
                _ => Err(Error::Kafka(rdkafka::error::KafkaError::MetadataFetch(
                    RDKafkaErrorCode::UnknownTopicOrPartition,
                ))),
            }
        })
        .await
    }

    /// Reads a topic from the beginning of every partition, without a consumer group, until
    /// `count` messages have arrived or `timeout` has passed (`Duration::MAX`: no deadline);
    /// returns what arrived. Tests use it to check what the broker really holds.
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
                match consumer.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) => messages.push(message.detach()),
                    Some(Err(e)) => return Err(e.into()),
                    None => {}
                }
            }
            messages.sort_by_key(|m| (m.partition(), m.offset()));
            Ok(messages)
        })
        .await
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.bootstrap);
        config
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
