//! Replay the last few minutes of `user-events` (seed 001): start each partition at its first
//! record at or after a time, and stop at another.
//!
//! The tutorial subscribes, sleeps two seconds, hopes the assignment has arrived, then calls
//! `offsets_for_times` and `seek`. kafka-kit resolves the start offsets when the partitions are
//! assigned, in the rebalance itself, and starts a partition with no record after the time at its
//! end. `StopAt` ends the stream when every partition is past the window.
//!
//! The embedded broker cannot look offsets up by time: it answers "no record after it" for every
//! partition, so there the replay starts at the end and finds nothing, as it says. Point
//! `KAFKA_BOOTSTRAP_SERVERS` at a real Kafka to see the replay itself.
//!
//! ```text
//! cargo run --example replay              # the last 5 minutes
//! cargo run --example replay -- 30        # the last 30 minutes
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use kafka_kit::consumer::{Consumer, StartAt, StopAt};
use kafka_kit::producer::{Producer, Record};
use kafka_kit::rdkafka::Timestamp;
use kafka_kit::testing::{unless_fatal, TestCluster};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let minutes: u64 = std::env::args()
        .nth(1)
        .map(|m| m.parse())
        .transpose()?
        .unwrap_or(5);
    let cluster = TestCluster::from_env_or_embedded()?;
    println!("cluster: {}", cluster.describe());
    let run = kafka_kit::testing::run_id();
    let topic = format!("user-events-{run}");
    cluster.create_topic(&topic, 3).await?;

    // An hour of history: one event a minute, the last one a minute ago.
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    let now = SystemTime::now();
    for minute in (1..=60u64).rev() {
        let at = now - Duration::from_secs(minute * 60);
        let millis = at.duration_since(SystemTime::UNIX_EPOCH)?.as_millis() as i64;
        let (user, event) = (
            format!("{}", 1001 + minute % 5),
            format!(r#"{{"event_type":"purchase","minutes_ago":{minute}}}"#),
        );
        producer
            .send(
                Record::to(&topic)
                    .key(&user)
                    .payload(&event)
                    .timestamp(millis),
            )
            .await?;
    }
    producer.close().await?;
    println!("`{topic}` holds an hour of events, one a minute\n");

    let from = now - Duration::from_secs(minutes * 60);
    println!("replaying from {minutes} minutes ago up to now:");
    let consumer = Consumer::builder(&cluster.consumer_config().build()?)
        .group_id(format!("replay-{run}"))
        .topics([topic.as_str()])
        .start_at(StartAt::time(from))
        .stop_at(StopAt::time(now))
        .build()?;
    let records =
        tokio::time::timeout(Duration::from_secs(60), consumer.collect::<Vec<_>>()).await?;
    let mut per_partition: BTreeMap<i32, usize> = BTreeMap::new();
    for record in records {
        // Errors the consumer recovered from are logged and skipped; only a fatal one stops us.
        let Some(record) = unless_fatal(record)? else {
            continue;
        };
        let age = match record.timestamp() {
            Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => {
                let t = SystemTime::UNIX_EPOCH + Duration::from_millis(t as u64);
                format!(
                    "{} min ago",
                    now.duration_since(t).unwrap_or_default().as_secs() / 60
                )
            }
            Timestamp::NotAvailable => "no timestamp".into(),
        };
        println!(
            "  {}-{}@{}  {age}  user {:?}: {}",
            record.topic(),
            record.partition(),
            record.offset(),
            record.key_str(),
            String::from_utf8_lossy(record.payload().unwrap_or_default())
        );
        *per_partition.entry(record.partition()).or_default() += 1;
    }
    let total: usize = per_partition.values().sum();
    println!("\nreplayed {total} events ({per_partition:?} per partition); expected {minutes} (one a minute)");
    if cluster.is_embedded() && total == 0 {
        println!("(the embedded broker cannot look offsets up by time: every partition started at its end;");
        println!(" run against a real Kafka with KAFKA_BOOTSTRAP_SERVERS to see the replay)");
    }
    Ok(())
}
