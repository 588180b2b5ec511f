//! Client statistics and topic health: the figures a Kafka monitor wants.
//!
//! # Statistics
//!
//! With [`ConfigBuilder::statistics_interval`](crate::config::ConfigBuilder::statistics_interval)
//! set, librdkafka reports its statistics periodically; rdkafka parses them into its
//! [`Statistics`], and kafka-kit turns each report into a [`ClientStats`] snapshot with the rates
//! computed since the previous one. [`Producer::client_stats`](crate::producer::Producer::client_stats)
//! and [`Consumer::client_stats`](crate::consumer::Consumer::client_stats) are streams of them.
//!
//! ```no_run
//! use std::time::Duration;
//! use futures_util::StreamExt;
//! use kafka_kit::config::KafkaConfig;
//! use kafka_kit::producer::Producer;
//!
//! # async fn run() -> anyhow::Result<()> {
//! let config = KafkaConfig::builder().statistics_interval(Duration::from_secs(5)).build()?;
//! let producer: Producer = Producer::builder(&config).build()?;
//! let mut stats = producer.client_stats();
//! while let Some(s) = stats.next().await {
//!     println!("{:.0} msg/s, {:.1} errors/s, queue {}, batches of {:.1} messages",
//!         s.messages_sent_per_sec, s.send_errors_per_sec, s.queue_depth, s.avg_batch_messages);
//! }
//! # Ok(()) }
//! ```
//!
//! # Topic health
//!
//! [`topic_health`] gives a topic's partitions with their leader, replicas, in-sync replicas and
//! watermarks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::BoxStream;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::Statistics;
use tokio::sync::watch;

use crate::config::KafkaConfig;
use crate::consumer::TopicPartition;
use crate::error::{Error, Result};

/// One statistics report of a client, with rates since the previous report.
#[non_exhaustive]
#[derive(Clone, Debug)]
pub struct ClientStats {
    /// The time since the previous report (since the client started, for the first).
    pub interval: Duration,
    /// Messages sent to brokers, in all.
    pub messages_sent: i64,
    /// Messages sent per second since the previous report.
    pub messages_sent_per_sec: f64,
    /// Produce requests that failed (all brokers), in all.
    pub send_errors: u64,
    /// Failed produce requests per second since the previous report.
    pub send_errors_per_sec: f64,
    /// Messages received from brokers, in all.
    pub messages_received: i64,
    /// Messages received per second since the previous report.
    pub messages_received_per_sec: f64,
    /// Messages waiting in the producer's queues (not yet delivered).
    pub queue_depth: u64,
    /// Bytes waiting in the producer's queues.
    pub queue_bytes: u64,
    /// Messages per produced batch, on average over the last window.
    pub avg_batch_messages: f64,
    /// Bytes per produced batch, on average over the last window.
    pub avg_batch_bytes: f64,
    /// Each broker's round-trip time.
    pub brokers: Vec<BrokerStats>,
    /// Each consumed partition's lag as librdkafka sees it: the partition's end (its last stable
    /// offset under `read_committed`) minus the committed offset (-1: not known yet).
    pub partition_lag: BTreeMap<TopicPartition, i64>,
    /// Everything librdkafka reported.
    pub raw: Arc<Statistics>,
}

/// A broker's figures.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerStats {
    /// The broker's name (`host:port/id`).
    pub name: String,
    /// Its node id (-1 for bootstrap entries).
    pub node_id: i32,
    /// Its connection state (`UP`, `DOWN`, …).
    pub state: String,
    /// Average round-trip time over the last window, in microseconds (None before any request).
    pub rtt_avg_us: Option<i64>,
    /// 99th percentile round-trip time, in microseconds.
    pub rtt_p99_us: Option<i64>,
}

/// Turns librdkafka's reports into [`ClientStats`] and publishes the latest; clients hold one.
pub(crate) struct StatsHub {
    previous: Mutex<Option<(i64, i64, u64, i64)>>,
    latest: watch::Sender<Option<Arc<ClientStats>>>,
}

impl Default for StatsHub {
    fn default() -> Self {
        StatsHub {
            previous: Mutex::new(None),
            latest: watch::Sender::new(None),
        }
    }
}

impl StatsHub {
    pub(crate) fn publish(&self, raw: Statistics) {
        let send_errors: u64 = raw.brokers.values().map(|b| b.txerrs).sum();
        let now = (raw.ts, raw.txmsgs, send_errors, raw.rxmsgs);
        let previous = crate::lock(&self.previous).replace(now);
        let (interval, sent, errors, received) = match previous {
            Some((ts, sent, errors, received)) if raw.ts > ts => (
                Duration::from_micros((raw.ts - ts) as u64),
                (raw.txmsgs - sent) as f64,
                send_errors.saturating_sub(errors) as f64,
                (raw.rxmsgs - received) as f64,
            ),
            // The first report: since the client started.
            _ => (
                Duration::from_micros(raw.age.max(0) as u64),
                raw.txmsgs as f64,
                send_errors as f64,
                raw.rxmsgs as f64,
            ),
        };
        let per_sec = |n: f64| {
            if interval.is_zero() {
                0.0
            } else {
                n / interval.as_secs_f64()
            }
        };
        let (mut batches, mut batch_messages, mut batch_bytes) = (0i64, 0f64, 0f64);
        for topic in raw.topics.values() {
            batches += topic.batchcnt.cnt;
            batch_messages += (topic.batchcnt.avg * topic.batchcnt.cnt) as f64;
            batch_bytes += (topic.batchsize.avg * topic.batchsize.cnt) as f64;
        }
        let average = |total: f64| {
            if batches == 0 {
                0.0
            } else {
                total / batches as f64
            }
        };
        let mut brokers: Vec<BrokerStats> = raw
            .brokers
            .values()
            .map(|b| BrokerStats {
                name: b.name.clone(),
                node_id: b.nodeid,
                state: b.state.clone(),
                rtt_avg_us: b.rtt.as_ref().filter(|w| w.cnt > 0).map(|w| w.avg),
                rtt_p99_us: b.rtt.as_ref().filter(|w| w.cnt > 0).map(|w| w.p99),
            })
            .collect();
        brokers.sort_by(|a, b| a.name.cmp(&b.name));
        let partition_lag: BTreeMap<TopicPartition, i64> = raw
            .topics
            .values()
            .flat_map(|t| {
                t.partitions
                    .values()
                    .filter(|p| p.partition >= 0 && p.consumer_lag >= -1 && p.fetch_state != "none")
                    .map(move |p| {
                        let partition = TopicPartition {
                            topic: t.topic.clone(),
                            partition: p.partition,
                        };
                        (partition, p.consumer_lag)
                    })
            })
            .collect();
        let stats = ClientStats {
            interval,
            messages_sent: raw.txmsgs,
            messages_sent_per_sec: per_sec(sent),
            send_errors,
            send_errors_per_sec: per_sec(errors),
            messages_received: raw.rxmsgs,
            messages_received_per_sec: per_sec(received),
            queue_depth: raw.msg_cnt,
            queue_bytes: raw.msg_size,
            avg_batch_messages: average(batch_messages),
            avg_batch_bytes: average(batch_bytes),
            brokers,
            partition_lag,
            raw: Arc::new(raw),
        };
        self.latest.send_replace(Some(Arc::new(stats)));
    }

    /// The reports from now on, as a stream (only the latest, if the reader falls behind).
    pub(crate) fn subscribe(&self) -> BoxStream<'static, Arc<ClientStats>> {
        Box::pin(futures_util::stream::unfold(
            self.latest.subscribe(),
            |mut receiver| async move {
                loop {
                    receiver.changed().await.ok()?;
                    let latest = receiver.borrow_and_update().clone();
                    if let Some(stats) = latest {
                        return Some((stats, receiver));
                    }
                }
            },
        ))
    }
}

/// A topic's partitions, their leaders, replicas and watermarks.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicHealth {
    /// The topic.
    pub topic: String,
    /// Its partitions, in order.
    pub partitions: Vec<PartitionHealth>,
}

impl TopicHealth {
    /// Whether every partition has a leader and all its replicas in sync.
    pub fn is_healthy(&self) -> bool {
        !self.partitions.is_empty()
            && self
                .partitions
                .iter()
                .all(|p| p.leader >= 0 && p.error.is_none() && p.in_sync.len() == p.replicas.len())
    }
}

/// A partition's leader, replicas and watermarks.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionHealth {
    /// The partition.
    pub partition: i32,
    /// The leader's broker id (-1: none).
    pub leader: i32,
    /// The brokers holding a replica.
    pub replicas: Vec<i32>,
    /// The replicas in sync with the leader.
    pub in_sync: Vec<i32>,
    /// The first offset.
    pub low_watermark: i64,
    /// The offset the next record will get.
    pub high_watermark: i64,
    /// The error the cluster reports for the partition, if any.
    pub error: Option<String>,
}

/// The health of `topic`: partition count, each partition's leader and in-sync replicas, and its
/// watermarks. An unknown topic is an error.
pub async fn topic_health(config: &KafkaConfig, topic: &str) -> Result<TopicHealth> {
    const TIMEOUT: Duration = Duration::from_secs(10);
    let (config, topic) = (config.clone(), topic.to_owned());
    crate::blocking(move || {
        let consumer: BaseConsumer = config.to_client_config().create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), TIMEOUT)?;
        let found = metadata.topics().iter().find(|t| t.name() == topic);
        let Some(found) = found.filter(|t| t.error().is_none()) else {
            let code = found
                .and_then(rdkafka::metadata::MetadataTopic::error)
                .map_or(
                    rdkafka::error::RDKafkaErrorCode::UnknownTopicOrPartition,
                    Into::into,
                );
            return Err(Error::Kafka(rdkafka::error::KafkaError::MetadataFetch(
                code,
            )));
        };
        let mut partitions = Vec::with_capacity(found.partitions().len());
        for p in found.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p.id(), TIMEOUT)
                .unwrap_or((-1, -1));
            partitions.push(PartitionHealth {
                partition: p.id(),
                leader: p.leader(),
                replicas: p.replicas().to_vec(),
                in_sync: p.isr().to_vec(),
                low_watermark: low,
                high_watermark: high,
                error: p
                    .error()
                    .map(|e| rdkafka::error::RDKafkaErrorCode::from(e).to_string()),
            });
        }
        partitions.sort_by_key(|p| p.partition);
        Ok(TopicHealth { topic, partitions })
    })
    .await
}
