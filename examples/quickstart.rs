//! kafka-kit in one minute: produce user events routed by MD5 with standard headers, print each
//! delivery report with its key, then read the topic back and show that each user's events kept
//! their order on one partition.
//!
//! Runs on an embedded broker, or on the cluster in `KAFKA_BOOTSTRAP_SERVERS`:
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_kit::config::Preset;
use kafka_kit::headers::{HeaderReader, Headers};
use kafka_kit::partitioner::Md5Partitioner;
use kafka_kit::producer::{Producer, Record};
use kafka_kit::rdkafka::Message;
use kafka_kit::testing::TestCluster;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let cluster = TestCluster::from_env_or_embedded()?;
    println!("cluster: {}", cluster.describe());
    // A topic of its own per run, so that reading it back shows just this run's events.
    let topic = kafka_kit::testing::unique_name("quickstart-user-events");
    let topic = topic.as_str();
    cluster.create_topic(topic, 6).await?;
    let partitions = cluster.partition_count(topic).await?;

    // acks=all + idempotence: nothing lost, nothing duplicated, order kept per partition.
    let config = cluster
        .config()
        .client_id("quickstart")
        .preset(Preset::Reliable)
        .build()?;
    // The context type is the event's sequence number within its user's journey.
    let producer: Producer<usize> = Producer::builder(&config).build()?;

    let journey = [
        "view_product",
        "add_to_cart",
        "checkout",
        "payment_success",
        "order_created",
    ];
    let users = ["1001", "1004", "1005", "1006", "1007", "1010"];
    println!(
        "\nproducing {} events for users {users:?} to `{topic}` ({partitions} partitions)",
        journey.len() * users.len()
    );
    // Enqueue everything first (many in flight), then collect the reports in order.
    let mut in_flight = Vec::new();
    for (step, event_type) in journey.iter().enumerate() {
        for user in users {
            let value =
                serde_json::json!({ "user_id": user, "event_type": event_type, "step": step });
            let payload = serde_json::to_vec(&value)?;
            let headers = Headers::new()
                .new_trace_id()
                .schema_version("v1.0")
                .event_type(event_type)
                .source("quickstart")
                .timestamp_now();
            let record = Record::to(topic)
                .key(user)
                .payload(&payload)
                .headers(headers)
                .context(step);
            in_flight.push(producer.enqueue(record).await?);
        }
    }
    for delivery in in_flight {
        let report = delivery.await?;
        println!(
            "  delivered key={} step={} -> {}[{}]@{}",
            report.key_lossy().unwrap_or_default(),
            report.context,
            report.topic,
            report.partition,
            report.offset
        );
    }
    producer.close().await?;

    println!("\nreading `{topic}` back:");
    let messages = cluster
        .read_topic(topic, journey.len() * users.len(), Duration::from_secs(30))
        .await?;
    let mut per_user: BTreeMap<String, Vec<(i32, i64, String)>> = BTreeMap::new();
    for message in &messages {
        let user = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        let headers = HeaderReader::new(message.headers());
        let event = headers.event_type()?.unwrap_or("?").to_owned();
        per_user
            .entry(user)
            .or_default()
            .push((message.partition(), message.offset(), event));
    }
    for (user, events) in &per_user {
        let partition = events[0].0;
        let same_partition = events.iter().all(|e| e.0 == partition);
        let in_order = events
            .iter()
            .map(|e| e.2.as_str())
            .eq(journey.iter().copied());
        println!(
            "  user {user}: partition {partition} (md5 says {}), {} events, one partition: {same_partition}, in journey order: {in_order}",
            Md5Partitioner::partition_for(user.as_bytes(), partitions),
            events.len()
        );
        println!(
            "    {}",
            events
                .iter()
                .map(|e| format!("{}@{}", e.2, e.1))
                .collect::<Vec<_>>()
                .join(" -> ")
        );
        anyhow::ensure!(
            same_partition && in_order,
            "user {user}'s events were reordered or split"
        );
    }
    println!(
        "\ndone: {} messages, every user on its MD5 partition, in order",
        messages.len()
    );
    Ok(())
}
