//! Consumer basics (seed 004, kafka-python): JSON values through a serde struct, a consumer group,
//! `auto_offset_reset` earliest versus latest, manual commits, and checking that the client
//! reached the cluster (`bootstrap_connected()`).
//!
//! 1. Five `{"test": i}` records are produced as JSON.
//! 2. A consumer with `OffsetReset::Earliest`, in a fresh group, reads all five, decodes them with
//!    `record.json::<T>()` and commits each: the committed offset is the record's offset + 1, the
//!    next one to read.
//! 3. A consumer with `OffsetReset::Latest`, in another fresh group, reads none of them: only a
//!    user event produced after it was assigned its partitions.
//!
//! Runs on an embedded broker, or on the cluster in `KAFKA_BOOTSTRAP_SERVERS`:
//!
//! ```text
//! cargo run --example consumer_basic
//! ```

use std::time::Duration;

use anyhow::Context as _;
use kafka_kit::consumer::{
    Assigned, CommitOffsets, Consumer, ConsumerRecord, OffsetReset, RebalanceListener,
};
use kafka_kit::producer::{Producer, Record};
use kafka_kit::testing::{next_unless_fatal, TestCluster};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// The tutorial's test message.
#[derive(Debug, Serialize, Deserialize)]
struct TestMessage {
    test: u32,
}

/// A user event, produced once the `latest` consumer is listening.
#[derive(Debug, Serialize, Deserialize)]
struct UserEvent {
    user_id: String,
    event_type: String,
}

/// Tells the application what its consumer was assigned. Hooks run on the consumer's polling
/// thread: an unbounded channel can be sent to from there, and received on the runtime.
struct OnAssigned(mpsc::UnboundedSender<Assigned>);

impl RebalanceListener for OnAssigned {
    fn on_assigned(&self, assigned: &Assigned) {
        if !assigned.starts.is_empty() {
            let _ = self.0.send(assigned.clone());
        }
    }
}

/// The next record, or an error if none comes within `timeout`. Errors the consumer recovers from
/// (a broker restarting, a group the broker doesn't know yet) are logged and skipped; a fatal one
/// is returned.
async fn next(consumer: &mut Consumer, timeout: Duration) -> anyhow::Result<ConsumerRecord> {
    let record = tokio::time::timeout(timeout, next_unless_fatal(consumer))
        .await
        .with_context(|| format!("no record within {timeout:?}"))?
        .context("the consumer stopped")??;
    Ok(record)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let cluster = TestCluster::from_env_or_embedded()?;
    println!("cluster: {}", cluster.describe());
    // A topic and groups of their own per run, so that re-runs show just this run's records.
    let run = &kafka_kit::testing::run_id();
    let topic = format!("consumer-basic-{run}");
    let topic = topic.as_str();
    cluster.create_topic(topic, 3).await?;

    // value_serializer=lambda m: json.dumps(m).encode('utf-8'), as `send_json`.
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    println!("\nproducing 5 JSON records to `{topic}`");
    for i in 0..5 {
        let key = format!("test-{i}");
        let report = producer
            .send_json(Record::to(topic).key(&key), &TestMessage { test: i })
            .await?;
        println!(
            "  sent key={key} {{\"test\": {i}}} -> partition {} offset {}",
            report.partition, report.offset
        );
    }

    // Consumers in a group: `consumer_config()` (on the embedded broker, a short session timeout
    // keeps rebalances quick).
    let config = cluster.consumer_config().build()?;

    // (a) auto_offset_reset="earliest": a group with no committed offset starts at the oldest.
    let group = format!("consumer-basic-earliest-{run}");
    let mut earliest = Consumer::builder(&config)
        .group_id(&group)
        .topics([topic])
        .offset_reset(OffsetReset::Earliest)
        .build()?;
    // bootstrap_connected(): ask the cluster for its metadata.
    let brokers = earliest.check_connection(Duration::from_secs(5)).await?;
    println!("\nconnected: the cluster reports {brokers} broker(s)");

    println!("\n(a) group `{group}`, offset reset earliest: reads what was already there");
    let mut expected = CommitOffsets::new();
    for _ in 0..5 {
        let record = next(&mut earliest, Duration::from_secs(30)).await?;
        let value: TestMessage = record.json()?;
        println!(
            "  {}:{}@{}: key={} value={value:?}",
            record.topic(),
            record.partition(),
            record.offset(),
            record.key_str().unwrap_or("None"),
        );
        // Commit after processing: Kafka stores the next offset to read.
        earliest.commit(&record).await?;
        println!(
            "    committed {} (offset {} + 1: the next one to read)",
            record.next_offset().get(),
            record.offset()
        );
        expected.insert_after(&record);
    }
    // What the group now holds, asked of the cluster.
    let committed = earliest.committed().await?;
    for (topic, partition, offset) in committed.iter() {
        println!(
            "  group's committed offset on {topic}[{partition}]: {}",
            offset.get()
        );
    }
    anyhow::ensure!(
        committed == expected,
        "committed {committed:?}, expected {expected:?}"
    );
    earliest.close().await?;

    // (b) auto_offset_reset="latest": a new group starts at the end, and sees only new records.
    let group = format!("consumer-basic-latest-{run}");
    let (on_assigned, mut assigned) = mpsc::unbounded_channel();
    let mut latest = Consumer::builder(&config)
        .group_id(&group)
        .topics([topic])
        .offset_reset(OffsetReset::Latest)
        .listener(OnAssigned(on_assigned))
        .build()?;
    println!("\n(b) group `{group}`, offset reset latest: only what comes after it joined");
    let assigned = tokio::time::timeout(Duration::from_secs(30), assigned.recv())
        .await
        .context("no partitions assigned within 30 s")?
        .context("the consumer stopped")?;
    let partitions: Vec<String> = assigned
        .starts
        .iter()
        .map(|start| format!("{}[{}]", start.topic, start.partition))
        .collect();
    // Each starts at the group's committed offset; a new group has none, so at the latest.
    println!(
        "  assigned {} (no committed offsets in a new group: start at the end)",
        partitions.join(", ")
    );
    // The end of each partition is looked up once fetching starts: give it a moment, which also
    // shows that none of the five old records arrives.
    // Errors that are not fatal (GROUP_ID_NOT_FOUND for this new group, from some brokers) are
    // logged and skipped: they are not records.
    match tokio::time::timeout(Duration::from_secs(1), next_unless_fatal(&mut latest)).await {
        Err(_) => println!("  nothing read in 1 s: the 5 old records are skipped"),
        Ok(Some(Err(e))) => return Err(e.into()),
        Ok(record) => anyhow::bail!("the latest consumer read an old record: {record:?}"),
    }
    let event = UserEvent {
        user_id: "1001".into(),
        event_type: "login".into(),
    };
    let report = producer
        .send_json(Record::to(topic).key(&event.user_id), &event)
        .await?;
    println!(
        "  produced a user event -> partition {} offset {}",
        report.partition, report.offset
    );
    let record = next(&mut latest, Duration::from_secs(30)).await?;
    let value: UserEvent = record.json()?;
    println!(
        "  {}:{}@{}: key={} value={value:?}",
        record.topic(),
        record.partition(),
        record.offset(),
        record.key_str().unwrap_or("None"),
    );
    anyhow::ensure!(
        (record.partition(), record.offset()) == (report.partition, report.offset),
        "read {record:?} instead of the new event"
    );
    latest.commit(&record).await?;
    println!(
        "    committed {} (offset {} + 1)",
        record.next_offset().get(),
        record.offset()
    );
    latest.close().await?;
    producer.close().await?;

    println!("\ndone: earliest read the 5 old records, latest only the new one");
    Ok(())
}
