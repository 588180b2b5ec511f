//! Versioned user events through a Schema Registry: an old service writes them with schema v1,
//! a compatible v2 (one more field, with a default) is checked and rolled out, a new service
//! writes with it, and both an old (v1) and a new (v2) reader read every event on the topic.
//!
//! Runs on an embedded broker and an in-process registry, or on the cluster in
//! `KAFKA_BOOTSTRAP_SERVERS` and the registry in `SCHEMA_REGISTRY_URL`:
//!
//! ```text
//! cargo run --example schema_registry --features schema-registry
//! SCHEMA_REGISTRY_URL=http://localhost:8081 cargo run --example schema_registry --features schema-registry
//! ```

use std::time::Duration;

use kafka_kit::config::Preset;
use kafka_kit::producer::{Producer, Record};
use kafka_kit::rdkafka::Message;
use kafka_kit::schema_registry::{
    AvroDeserializer, AvroSerializer, MockSchemaRegistry, Schema, SchemaRegistry,
};
use kafka_kit::testing::TestCluster;
use serde::{Deserialize, Serialize};

const USER_EVENT_V1: &str = r#"{
  "type": "record", "name": "UserEvent", "namespace": "com.example.events",
  "fields": [
    {"name": "user_id", "type": "long"},
    {"name": "event_type", "type": "string"},
    {"name": "amount", "type": ["null", "double"], "default": null}
  ]
}"#;

/// v1 plus `source`, with a default: v2 readers can read v1 events (BACKWARD compatible), and v1
/// readers simply do not see the new field.
const USER_EVENT_V2: &str = r#"{
  "type": "record", "name": "UserEvent", "namespace": "com.example.events",
  "fields": [
    {"name": "user_id", "type": "long"},
    {"name": "event_type", "type": "string"},
    {"name": "amount", "type": ["null", "double"], "default": null},
    {"name": "source", "type": "string", "default": "unknown"}
  ]
}"#;

/// What the old service knows.
#[derive(Debug, Serialize, Deserialize)]
struct UserEventV1 {
    user_id: i64,
    event_type: String,
    amount: Option<f64>,
}

/// What the new service knows.
#[derive(Debug, Serialize, Deserialize)]
struct UserEventV2 {
    user_id: i64,
    event_type: String,
    amount: Option<f64>,
    source: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let cluster = TestCluster::from_env_or_embedded()?;
    println!("cluster: {}", cluster.describe());
    // The registry in SCHEMA_REGISTRY_URL, or one in this process.
    let (_mock, url) = match std::env::var("SCHEMA_REGISTRY_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let mock = MockSchemaRegistry::start()?;
            let url = mock.url().to_owned();
            (Some(mock), url)
        }
    };
    let registry = SchemaRegistry::builder(&url).build()?;
    println!("schema registry: {url}");

    let topic = kafka_kit::testing::unique_name("schema-registry-user-events");
    let topic = topic.as_str();
    cluster.create_topic(topic, 3).await?;
    let config = cluster.config().preset(Preset::Reliable).build()?;
    let producer: Producer = Producer::builder(&config).build()?;

    // The old service: schema v1, registered under `<topic>-value` by the first event.
    let v1_writer = AvroSerializer::new(&registry, USER_EVENT_V1)?;
    println!(
        "\nthe old service writes with v1 (subject `{}`):",
        v1_writer.subject(topic)?
    );
    for (user_id, event_type, amount) in [
        (1001, "view_product", Some(99.9)),
        (1002, "login", None),
        (1001, "checkout", Some(199.8)),
    ] {
        let event = UserEventV1 {
            user_id,
            event_type: event_type.into(),
            amount,
        };
        let bytes = v1_writer.serialize(topic, &event).await?;
        let report = producer
            .send(Record::to(topic).key(&user_id.to_string()).payload(&bytes))
            .await?;
        println!(
            "  {event:?}: {} bytes, schema id {} -> partition {} @ {}",
            bytes.len(),
            u32::from_be_bytes(bytes[1..5].try_into()?),
            report.partition,
            report.offset
        );
    }

    // Before rolling v2 out: would the registry take it?
    let subject = format!("{topic}-value");
    let compatible = registry
        .is_compatible(&subject, &Schema::avro(USER_EVENT_V2))
        .await?;
    println!("\nis v2 compatible with `{subject}`? {compatible}");
    anyhow::ensure!(compatible, "v2 should be a compatible evolution of v1");

    let v2_writer = AvroSerializer::new(&registry, USER_EVENT_V2)?;
    println!("the new service writes with v2:");
    for (user_id, event_type, amount, source) in [
        (1003, "add_to_cart", None, "mobile-app"),
        (1001, "payment_success", Some(199.8), "payment-service"),
    ] {
        let event = UserEventV2 {
            user_id,
            event_type: event_type.into(),
            amount,
            source: source.into(),
        };
        let bytes = v2_writer.serialize(topic, &event).await?;
        producer
            .send(Record::to(topic).key(&user_id.to_string()).payload(&bytes))
            .await?;
        println!(
            "  {event:?}: schema id {}",
            u32::from_be_bytes(bytes[1..5].try_into()?)
        );
    }
    producer.close().await?;
    let latest = registry.latest_version(&subject).await?;
    println!(
        "`{subject}` is now at version {} (schema id {})",
        latest.version, latest.id
    );

    // Both readers read everything: each value says which schema wrote it, and is resolved to
    // the schema the reader was written against.
    let messages = cluster
        .read_topic(topic, 5, Duration::from_secs(30))
        .await?;
    let v1_reader = AvroDeserializer::new(&registry).reader_schema(USER_EVENT_V1)?;
    let v2_reader = AvroDeserializer::new(&registry).reader_schema(USER_EVENT_V2)?;
    println!("\nthe old (v1) reader:");
    for message in &messages {
        let payload = message.payload().unwrap_or_default();
        let event: UserEventV1 = v1_reader.deserialize(payload).await?;
        println!("  {event:?}");
    }
    println!("the new (v2) reader (v1 events get the default source):");
    for message in &messages {
        let payload = message.payload().unwrap_or_default();
        let event: UserEventV2 = v2_reader.deserialize(payload).await?;
        println!("  {event:?}");
    }
    println!(
        "\ndone: {} events, two schema versions, read by both readers with {} registry requests in all",
        messages.len(),
        registry.requests()
    );
    Ok(())
}
