//! Against a real Schema Registry (Confluent's, or a compatible one such as Karapace or
//! Redpanda's): the client's calls and errors, Avro evolution and JSON Schema, on subjects of
//! their own (`kafka-kit-test-<run id>-...`). The registry is `SCHEMA_REGISTRY_URL`, with basic
//! auth from `SCHEMA_REGISTRY_USER` / `SCHEMA_REGISTRY_PASSWORD` when set. Without it, each test
//! prints `SKIPPED …: <reason>` and passes: no registry server can be installed here.
//! `SCHEMA_REGISTRY_URL=mock` runs the same tests on the in-process registry, to check the tier
//! itself. Needs `--features schema-registry`.
#![cfg(feature = "schema-registry")]

use anyhow::ensure;
use kafka_kit::schema_registry::{
    AvroDeserializer, AvroSerializer, JsonSchemaDeserializer, JsonSchemaSerializer,
    MockSchemaRegistry, RegistryCall, Schema, SchemaRegistry, SchemaRegistryError,
};
use serde::{Deserialize, Serialize};

/// The registry under test (and the in-process one, kept alive, for `mock`), or a skip.
macro_rules! registry_or_skip {
    ($test:expr) => {
        match real_registry() {
            Ok(registry) => registry,
            Err(reason) => {
                // Straight to stderr: the harness captures the output of passing tests.
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "SKIPPED {}: {reason}", $test);
                return Ok(());
            }
        }
    };
}

fn real_registry() -> Result<(SchemaRegistry, Option<MockSchemaRegistry>), String> {
    let url = std::env::var("SCHEMA_REGISTRY_URL").map_err(|_| {
        "SCHEMA_REGISTRY_URL is not set (no registry server can be installed here)".to_owned()
    })?;
    let (url, mock) = if url == "mock" {
        let mock = MockSchemaRegistry::start().map_err(|e| e.to_string())?;
        (mock.url().to_owned(), Some(mock))
    } else {
        (url, None)
    };
    let mut builder = SchemaRegistry::builder(url);
    if let (Ok(user), Ok(password)) = (
        std::env::var("SCHEMA_REGISTRY_USER"),
        std::env::var("SCHEMA_REGISTRY_PASSWORD"),
    ) {
        builder = builder.basic_auth(user, password);
    }
    Ok((builder.build().map_err(|e| e.to_string())?, mock))
}

fn unique_subject(name: &str) -> String {
    kafka_kit::testing::unique_name(&format!("kafka-kit-test-{name}"))
}

const V1: &str = r#"{"type": "record", "name": "UserEvent", "namespace": "com.example.kafkakit",
  "fields": [{"name": "user_id", "type": "long"}, {"name": "event_type", "type": "string"}]}"#;
const V2: &str = r#"{"type": "record", "name": "UserEvent", "namespace": "com.example.kafkakit",
  "fields": [{"name": "user_id", "type": "long"}, {"name": "event_type", "type": "string"},
             {"name": "source", "type": "string", "default": "unknown"}]}"#;
const INCOMPATIBLE: &str = r#"{"type": "record", "name": "UserEvent", "namespace": "com.example.kafkakit",
  "fields": [{"name": "user_id", "type": "string"}]}"#;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct EventV1 {
    user_id: i64,
    event_type: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct EventV2 {
    user_id: i64,
    event_type: String,
    source: String,
}

#[tokio::test]
async fn real_registry_calls_and_errors() -> anyhow::Result<()> {
    let (registry, _mock) = registry_or_skip!("real_registry_calls_and_errors");
    let subject = unique_subject("calls-value");
    let id = registry.register(&subject, &Schema::avro(V1)).await?;
    ensure!(registry.register(&subject, &Schema::avro(V1)).await? == id);
    ensure!(
        registry.schema_by_id(id).await?.schema_type
            == kafka_kit::schema_registry::SchemaType::Avro
    );
    ensure!(registry.is_compatible(&subject, &Schema::avro(V2)).await?);
    ensure!(
        !registry
            .is_compatible(&subject, &Schema::avro(INCOMPATIBLE))
            .await?
    );
    let err = registry
        .register(&subject, &Schema::avro(INCOMPATIBLE))
        .await
        .unwrap_err();
    ensure!(
        matches!(
            err,
            SchemaRegistryError::Incompatible {
                call: RegistryCall::Register,
                ..
            }
        ),
        "{err:?}"
    );
    let v2 = registry.register(&subject, &Schema::avro(V2)).await?;
    let latest = registry.latest_version(&subject).await?;
    ensure!(latest.id == v2 && latest.version == 2, "{latest:?}");

    let err = registry
        .latest_version(&unique_subject("nobody-value"))
        .await
        .unwrap_err();
    ensure!(
        matches!(err, SchemaRegistryError::SubjectNotFound { .. }),
        "{err:?}"
    );
    let err = registry.schema_by_id(u32::MAX - 7).await.unwrap_err();
    ensure!(
        matches!(err, SchemaRegistryError::SchemaNotFound { .. }),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn real_registry_avro_evolution_and_json_schema() -> anyhow::Result<()> {
    let (registry, _mock) = registry_or_skip!("real_registry_avro_evolution_and_json_schema");
    let topic = unique_subject("serdes");
    let old = AvroSerializer::new(&registry, V1)?;
    let new = AvroSerializer::new(&registry, V2)?;
    let a = old
        .serialize(
            &topic,
            &EventV1 {
                user_id: 1,
                event_type: "login".into(),
            },
        )
        .await?;
    let b = new
        .serialize(
            &topic,
            &EventV2 {
                user_id: 2,
                event_type: "checkout".into(),
                source: "web".into(),
            },
        )
        .await?;
    let v1 = AvroDeserializer::new(&registry).reader_schema(V1)?;
    let v2 = AvroDeserializer::new(&registry).reader_schema(V2)?;
    ensure!(v1.deserialize::<EventV1>(&b).await?.user_id == 2);
    ensure!(v2.deserialize::<EventV2>(&a).await?.source == "unknown");

    let json = JsonSchemaSerializer::new(
        &registry,
        r#"{"type": "object", "properties": {"user_id": {"type": "integer"}}, "required": ["user_id"]}"#,
    )?;
    let topic = unique_subject("json");
    let bytes = json
        .serialize(&topic, &serde_json::json!({"user_id": 7}))
        .await?;
    let back: serde_json::Value = JsonSchemaDeserializer::new(&registry)
        .deserialize(&bytes)
        .await?;
    ensure!(back["user_id"] == 7);
    ensure!(json
        .serialize(&topic, &serde_json::json!({}))
        .await
        .is_err());
    Ok(())
}
