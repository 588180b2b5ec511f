//! Consumer lag: of this consumer's partitions, of any group from outside, and periodically.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::TopicPartitionList;

use super::poll::LOOKUP_TIMEOUT;
use crate::config::{ConfigError, KafkaConfig, Problem};
use crate::error::{Error, Result};

/// A partition's consumer lag.
#[non_exhaustive]
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

pub(super) fn lag_of<C: ConsumerContext>(
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

/// [`group_lag`] every `interval`, as a stream; the first report comes at once. A zero interval
/// gives one [`ConfigError`] naming it, and the stream ends.
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
    if let Some(problem) = Problem::zero_duration("lag_reports interval", interval) {
        let error = Error::from(ConfigError::single(problem));
        return Box::pin(futures_util::stream::once(async move { Err(error) }));
    }
    // The timer is made at the first poll, in the runtime that polls the stream: the stream
    // itself can be made anywhere.
    Box::pin(futures_util::stream::unfold(
        (None, config, group, topics),
        move |(ticks, config, group, topics)| async move {
            let mut ticks: tokio::time::Interval = ticks.unwrap_or_else(|| {
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                ticks
            });
            ticks.tick().await;
            let report = group_lag(&config, &group, &topics).await;
            Some((report, (Some(ticks), config, group, topics)))
        },
    ))
}
