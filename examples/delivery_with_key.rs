//! One structured JSON log line per delivery, with the message key (seed 000).
//!
//! kafka-python's `RecordMetadata` has no key, so the tutorial threads it through `add_callback`.
//! kafka-kit's delivery reports always carry the key, and a per-message context of your type
//! (here a request id and the time the request started), so the callback has everything to log.
//!
//! ```text
//! cargo run --example delivery_with_key
//! ```

use std::time::{Duration, Instant};

use kafka_kit::config::Preset;
use kafka_kit::producer::{Producer, Record};
use kafka_kit::testing::TestCluster;

/// What the application wants to know about each message when its report arrives.
struct RequestContext {
    request_id: u64,
    started: Instant,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // JSON lines on stdout: one object per event, fields at the top level.
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .init();

    let cluster = TestCluster::from_env_or_embedded()?;
    tracing::info!(cluster = %cluster.describe(), "starting");
    cluster.create_topic("my_topic", 3).await?;

    let config = cluster.config().preset(Preset::Reliable).build()?;
    let producer: Producer<RequestContext> = Producer::builder(&config).build()?;

    for (request_id, user) in (1..=6).zip(["alice", "bob", "carol", "alice", "bob", "carol"]) {
        let value =
            serde_json::to_vec(&serde_json::json!({ "user": user, "request": request_id }))?;
        let context = RequestContext {
            request_id,
            started: Instant::now(),
        };
        let record = Record::to("my_topic")
            .key(user)
            .payload(&value)
            .context(context);
        producer
            .send_with_callback(record, |result| match result {
                Ok(report) => tracing::info!(
                    event = "message_sent",
                    topic = %report.topic,
                    partition = report.partition,
                    offset = report.offset,
                    key = %report.key_lossy().unwrap_or_default(),
                    // The embedded mock broker stamps every message LogAppendTime(1234); Kafka keeps
                    // the create time unless the topic says otherwise.
                    record_timestamp = ?report.timestamp,
                    request_id = report.context.request_id,
                    latency_us = report.context.started.elapsed().as_micros() as u64,
                ),
                Err(failed) => tracing::error!(
                    event = "message_failed",
                    topic = %failed.message.topic,
                    key = %String::from_utf8_lossy(failed.message.key.as_deref().unwrap_or_default()),
                    request_id = failed.context.request_id,
                    retriable = failed.error.is_retriable(),
                    error = %failed.error,
                ),
            })
            .await
            .map_err(kafka_kit::Error::from)?;
    }

    // A message that cannot be delivered is logged with its key too: 2 MB is above the broker's
    // message.max.bytes, and the failure hands back key, payload and context.
    let oversized = vec![0u8; 2_000_000];
    let context = RequestContext {
        request_id: 99,
        started: Instant::now(),
    };
    if let Err(failed) = producer
        .send(
            Record::to("my_topic")
                .key("mallory")
                .payload(&oversized)
                .context(context),
        )
        .await
    {
        tracing::error!(
            event = "message_failed",
            topic = %failed.message.topic,
            key = %String::from_utf8_lossy(failed.message.key.as_deref().unwrap_or_default()),
            payload_bytes = failed.message.payload.as_ref().map_or(0, Vec::len),
            request_id = failed.context.request_id,
            error = %failed.error,
        );
    }

    producer.flush(Duration::from_secs(10)).await?;
    let stats = producer.stats();
    tracing::info!(
        event = "done",
        delivered = stats.delivered,
        failed = stats.failed
    );
    Ok(())
}
