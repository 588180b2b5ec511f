//! User events routed by a stable MD5 partitioner, with the tutorial's headers (seed 001, case 1).
//!
//! Every event of a user carries the user id as its key, so MD5 routing puts all of them on one
//! partition, in order, in every process and language: the partition is
//! `int(hashlib.md5(key).hexdigest(), 16) % n` in Python too. The example sends the shopping
//! journey of user 1001, events of 1002 and 1003, and a thousand events of 200 more users to
//! `user-events`, then checks the placement against the topic's partition count on the cluster it
//! is pointed at.
//!
//! ```text
//! cargo run --example user_routing
//! KAFKA_BOOTSTRAP_SERVERS=localhost:9092 cargo run --example user_routing
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kafka_kit::config::{Compression, Preset};
use kafka_kit::headers::Headers;
use kafka_kit::partitioner::Md5Partitioner;
use kafka_kit::producer::{DeliveryFuture, Producer, Record};
use kafka_kit::rdkafka::types::RDKafkaErrorCode;
use kafka_kit::testing::TestCluster;
use serde::Serialize;

const TOPIC: &str = "user-events";

#[derive(Serialize)]
struct UserEvent<'a> {
    user_id: u32,
    event_type: &'a str,
    timestamp_ms: u128,
    data: serde_json::Value,
}

/// The context of each message: who and what, for the report.
struct Sent {
    user_id: u32,
    event_type: &'static str,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let cluster = TestCluster::from_env_or_embedded()?;
    println!("cluster: {}", cluster.describe());
    // Uses the topic as it is if it exists, whatever its partition count (the placement is checked
    // against the count it has); creates it with 6 partitions otherwise.
    let partitions = match cluster.partition_count(TOPIC).await {
        Ok(partitions) => partitions,
        Err(e) if e.code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition) => {
            cluster.create_topic(TOPIC, 6).await?;
            cluster.partition_count(TOPIC).await?
        }
        Err(e) => return Err(e.into()),
    };
    println!("topic `{TOPIC}` has {partitions} partitions on this cluster\n");

    // The tutorial's producer: acks=all (plus idempotence), lz4, linger 10 ms, 32 KiB batches.
    let config = cluster
        .config()
        .client_id("order-service")
        .preset(Preset::Reliable)
        .compression(Compression::Lz4)
        .linger(Duration::from_millis(10))
        .batch_size(32 * 1024)
        .build()?;
    let producer: Producer<Sent> = Producer::builder(&config).build()?; // MD5 partitioning is the default

    println!("user 1001's shopping journey:");
    let journey: [(&'static str, serde_json::Value); 7] = [
        (
            "view_product",
            serde_json::json!({ "product_id": "P001", "price": 99.9 }),
        ),
        (
            "add_to_cart",
            serde_json::json!({ "product_id": "P001", "quantity": 2 }),
        ),
        (
            "checkout",
            serde_json::json!({ "cart_total": 199.8, "payment_method": "credit_card" }),
        ),
        (
            "payment_success",
            serde_json::json!({ "transaction_id": "TXN123", "amount": 199.8 }),
        ),
        (
            "order_created",
            serde_json::json!({ "order_id": "ORD456", "status": "confirmed" }),
        ),
        (
            "order_shipped",
            serde_json::json!({ "tracking_number": "TRK789", "carrier": "FedEx" }),
        ),
        (
            "order_delivered",
            serde_json::json!({ "delivery_time": "2024-01-15T10:30:00Z" }),
        ),
    ];
    for (event_type, data) in journey {
        // Synchronous, like the tutorial: each event is confirmed before the next one.
        let report = send_user_event(&producer, 1001, event_type, data)
            .await?
            .await?;
        println!(
            "  sent {}-{}@{}  user {}, event {}",
            report.topic,
            report.partition,
            report.offset,
            report.context.user_id,
            report.context.event_type
        );
    }
    for (user_id, event_type, data) in [
        (
            1002,
            "view_product",
            serde_json::json!({ "product_id": "P002", "price": 149.9 }),
        ),
        (
            1003,
            "add_to_cart",
            serde_json::json!({ "product_id": "P003", "quantity": 1 }),
        ),
    ] {
        let report = send_user_event(&producer, user_id, event_type, data)
            .await?
            .await?;
        println!(
            "  sent {}-{}@{}  user {}, event {}",
            report.topic,
            report.partition,
            report.offset,
            report.context.user_id,
            report.context.event_type
        );
    }

    // Many more users, concurrently: 5 events each for users 2000..2200.
    let kinds = ["login", "view_product", "add_to_cart", "checkout", "logout"];
    let mut in_flight = Vec::new();
    for round in kinds {
        for user_id in 2000..2200 {
            in_flight
                .push(send_user_event(&producer, user_id, round, serde_json::json!({})).await?);
        }
    }
    let mut placement: BTreeMap<u32, BTreeSet<i32>> = BTreeMap::new();
    let mut per_partition = vec![0usize; partitions as usize];
    for delivery in in_flight {
        let report = delivery.await?;
        placement
            .entry(report.context.user_id)
            .or_default()
            .insert(report.partition);
        per_partition[report.partition as usize] += 1;
    }
    producer.close().await?;

    let split: Vec<_> = placement.iter().filter(|(_, p)| p.len() != 1).collect();
    let misrouted: Vec<_> = placement
        .iter()
        .filter(|(user, p)| {
            !p.contains(&Md5Partitioner::partition_for(
                user.to_string().as_bytes(),
                partitions,
            ))
        })
        .collect();
    println!(
        "\n{} users x {} events: messages per partition {per_partition:?}",
        placement.len(),
        kinds.len()
    );
    println!("users split over several partitions: {}", split.len());
    println!(
        "users not on md5(user_id) % {partitions}: {}",
        misrouted.len()
    );
    for user in [1001u32, 1002, 1003, 2000, 2001] {
        println!(
            "  user {user} -> partition {} (Python: int(hashlib.md5(b\"{user}\").hexdigest(), 16) % {partitions})",
            Md5Partitioner::partition_for(user.to_string().as_bytes(), partitions)
        );
    }
    anyhow::ensure!(
        split.is_empty() && misrouted.is_empty(),
        "routing is not stable"
    );
    println!("\nall messages sent; every user on exactly one partition, the one Python would pick");
    Ok(())
}

/// Sends one event with the tutorial's headers; returns its delivery future.
async fn send_user_event(
    producer: &Producer<Sent>,
    user_id: u32,
    event_type: &'static str,
    data: serde_json::Value,
) -> anyhow::Result<DeliveryFuture<Sent>> {
    let headers = Headers::new()
        .new_trace_id() // trace_id: a fresh UUID
        .schema_version("v1.0") // schema_ver
        .event_type(event_type) // event_type
        .timestamp_now() // timestamp: milliseconds since the epoch
        .source("order-service"); // source
    let timestamp_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let event = UserEvent {
        user_id,
        event_type,
        timestamp_ms,
        data,
    };
    let payload = serde_json::to_vec(&event)?;
    let key = user_id.to_string(); // the partition key, as the tutorial's key_serializer writes it
    let record = Record::to(TOPIC)
        .key(&key)
        .payload(&payload)
        .headers(headers)
        .context(Sent {
            user_id,
            event_type,
        });
    Ok(producer.enqueue(record).await?)
}
