//! Schema Registry: the client against the in-process registry (calls, errors, retries, caches),
//! Avro and JSON Schema serdes with schema evolution, and a poison value dead-lettered by
//! `AtLeastOnce` on the embedded broker. Needs `--features schema-registry`.
#![cfg(feature = "schema-registry")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use kafka_kit::consumer::processing::{dead_letter_headers, AtLeastOnce, RetryPolicy};
use kafka_kit::consumer::{Consumer, ConsumerRecord, OffsetReset};
use kafka_kit::producer::{Producer, Record};
use kafka_kit::rdkafka::Message;
use kafka_kit::schema_registry::{
    AvroDeserializer, AvroSerializer, JsonSchemaDeserializer, JsonSchemaSerializer,
    MockSchemaRegistry, RegistryCall, Schema, SchemaRegistry, SchemaRegistryError, SchemaType,
    SubjectNameStrategy,
};
use kafka_kit::testing::TestCluster;
use serde::{Deserialize, Serialize};

const USER_EVENT_V1: &str = r#"{
  "type": "record", "name": "UserEvent", "namespace": "com.example",
  "fields": [
    {"name": "user_id", "type": "long"},
    {"name": "event_type", "type": "string"},
    {"name": "amount", "type": ["null", "double"], "default": null},
    {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []}
  ]
}"#;

/// v1 plus a field with a default: BACKWARD compatible.
const USER_EVENT_V2: &str = r#"{
  "type": "record", "name": "UserEvent", "namespace": "com.example",
  "fields": [
    {"name": "user_id", "type": "long"},
    {"name": "event_type", "type": "string"},
    {"name": "amount", "type": ["null", "double"], "default": null},
    {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
    {"name": "source", "type": "string", "default": "unknown"}
  ]
}"#;

/// v1 with a new field and no default: a v2 reader could not read v1 values.
const USER_EVENT_INCOMPATIBLE: &str = r#"{
  "type": "record", "name": "UserEvent", "namespace": "com.example",
  "fields": [
    {"name": "user_id", "type": "long"},
    {"name": "event_type", "type": "string"},
    {"name": "region", "type": "string"}
  ]
}"#;

const USER_EVENT_JSON_SCHEMA: &str = r#"{
  "$schema": "http://json-schema.org/draft-07/schema#",
  "title": "UserEvent",
  "type": "object",
  "properties": {
    "user_id": {"type": "integer", "minimum": 1},
    "event_type": {"type": "string", "enum": ["login", "view_product", "checkout"]},
    "amount": {"type": ["number", "null"]}
  },
  "required": ["user_id", "event_type"],
  "additionalProperties": false
}"#;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct UserEventV1 {
    user_id: i64,
    event_type: String,
    amount: Option<f64>,
    tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct UserEventV2 {
    user_id: i64,
    event_type: String,
    amount: Option<f64>,
    tags: Vec<String>,
    source: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct JsonEvent {
    user_id: i64,
    event_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    amount: Option<f64>,
}

fn v1(user_id: i64) -> UserEventV1 {
    UserEventV1 {
        user_id,
        event_type: "checkout".into(),
        amount: Some(199.8),
        tags: vec!["web".into(), "eu".into()],
    }
}

fn registry(mock: &MockSchemaRegistry) -> anyhow::Result<SchemaRegistry> {
    Ok(SchemaRegistry::builder(mock.url())
        .retries(2, Duration::from_millis(10))
        .build()?)
}

#[tokio::test]
async fn register_look_up_and_check() -> anyhow::Result<()> {
    let mock = MockSchemaRegistry::start()?;
    let registry = registry(&mock)?;
    let id = registry
        .register("user-events-value", &Schema::avro(USER_EVENT_V1))
        .await?;
    // The same schema again, and its lookup by id: both from the cache.
    ensure!(
        registry
            .register("user-events-value", &Schema::avro(USER_EVENT_V1))
            .await?
            == id
    );
    ensure!(registry.schema_by_id(id).await?.schema == USER_EVENT_V1);
    ensure!(mock.requests() == 1, "{:?}", mock.request_log());

    // Another client has empty caches: it asks.
    let other = self::registry(&mock)?;
    let schema = other.schema_by_id(id).await?;
    ensure!(schema.schema_type == SchemaType::Avro && schema.schema == USER_EVENT_V1);
    other.schema_by_id(id).await?;
    ensure!(mock.requests() == 2, "{:?}", mock.request_log());

    ensure!(
        registry
            .is_compatible("user-events-value", &Schema::avro(USER_EVENT_V2))
            .await?
    );
    ensure!(
        !registry
            .is_compatible("user-events-value", &Schema::avro(USER_EVENT_INCOMPATIBLE))
            .await?
    );
    let v2 = registry
        .register("user-events-value", &Schema::avro(USER_EVENT_V2))
        .await?;
    ensure!(v2 != id);
    let latest = registry.latest_version("user-events-value").await?;
    ensure!(latest.id == v2 && latest.version == 2 && latest.schema.schema == USER_EVENT_V2);
    ensure!(mock.versions("user-events-value") == [id, v2]);

    // A subject name that needs escaping in the URL.
    let odd = registry
        .register("odd/subject name", &Schema::json(USER_EVENT_JSON_SCHEMA))
        .await?;
    let latest = registry.latest_version("odd/subject name").await?;
    ensure!(latest.id == odd && latest.schema.schema_type == SchemaType::Json);
    Ok(())
}

#[tokio::test]
async fn errors_say_which_call_failed_and_why() -> anyhow::Result<()> {
    let mock = MockSchemaRegistry::start()?;
    let registry = registry(&mock)?;

    let err = registry.latest_version("nobody-value").await.unwrap_err();
    ensure!(
        matches!(&err, SchemaRegistryError::SubjectNotFound { call: RegistryCall::LatestVersion, subject } if subject == "nobody-value"),
        "{err:?}"
    );
    ensure!(
        err.to_string().contains("latest version") && err.to_string().contains("nobody-value"),
        "{err}"
    );
    let err = registry
        .is_compatible("nobody-value", &Schema::avro(USER_EVENT_V1))
        .await
        .unwrap_err();
    ensure!(
        matches!(
            err,
            SchemaRegistryError::SubjectNotFound {
                call: RegistryCall::CheckCompatibility,
                ..
            }
        ),
        "{err:?}"
    );

    let err = registry.schema_by_id(999).await.unwrap_err();
    ensure!(
        matches!(
            err,
            SchemaRegistryError::SchemaNotFound {
                call: RegistryCall::SchemaById,
                id: 999
            }
        ),
        "{err:?}"
    );

    registry
        .register("user-events-value", &Schema::avro(USER_EVENT_V1))
        .await?;
    let err = registry
        .register("user-events-value", &Schema::avro(USER_EVENT_INCOMPATIBLE))
        .await
        .unwrap_err();
    ensure!(
        matches!(&err, SchemaRegistryError::Incompatible { call: RegistryCall::Register, subject, .. } if subject == "user-events-value"),
        "{err:?}"
    );

    let err = registry
        .register("bad-value", &Schema::avro(r#"{"type": "no such type"}"#))
        .await
        .unwrap_err();
    ensure!(
        matches!(
            err,
            SchemaRegistryError::Http {
                status: 422,
                code: Some(42201),
                ..
            }
        ),
        "{err:?}"
    );
    ensure!(!err.is_retriable());

    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let nowhere = SchemaRegistry::builder(format!("http://127.0.0.1:{port}"))
        .retries(1, Duration::from_millis(10))
        .build()?;
    let err = nowhere.schema_by_id(1).await.unwrap_err();
    ensure!(
        matches!(
            &err,
            SchemaRegistryError::Unreachable {
                call: RegistryCall::SchemaById,
                ..
            }
        ),
        "{err:?}"
    );
    ensure!(err.is_retriable() && nowhere.requests() == 2, "{err}");
    let err: kafka_kit::Error = err.into();
    ensure!(err.is_retriable(), "{err}");

    // A slow registry: the timeout.
    mock.delay(Some(Duration::from_millis(500)));
    let impatient = SchemaRegistry::builder(mock.url())
        .timeout(Duration::from_millis(100))
        .retries(0, Duration::ZERO)
        .build()?;
    let err = impatient.schema_by_id(1).await.unwrap_err();
    ensure!(
        matches!(&err, SchemaRegistryError::Unreachable { reason, .. } if reason.contains("timed out")),
        "{err:?}"
    );

    for url in ["not a url", "ftp://registry:21"] {
        ensure!(
            matches!(
                SchemaRegistry::builder(url).build(),
                Err(SchemaRegistryError::Client(_))
            ),
            "{url}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn server_errors_are_retried_and_client_errors_are_not() -> anyhow::Result<()> {
    let mock = MockSchemaRegistry::start()?;
    let registry = registry(&mock)?; // two retries
    mock.fail_next(2, 503);
    let id = registry
        .register("user-events-value", &Schema::avro(USER_EVENT_V1))
        .await?;
    ensure!(id == 1 && mock.requests() == 3, "{:?}", mock.request_log());

    mock.fail_next(3, 500);
    let err = registry
        .latest_version("user-events-value")
        .await
        .unwrap_err();
    ensure!(
        matches!(
            err,
            SchemaRegistryError::Http {
                call: RegistryCall::LatestVersion,
                status: 500,
                code: Some(50001),
                ..
            }
        ),
        "{err:?}"
    );
    ensure!(mock.requests() == 6);

    mock.fail_next(1, 403);
    let err = registry
        .latest_version("user-events-value")
        .await
        .unwrap_err();
    ensure!(
        matches!(err, SchemaRegistryError::Http { status: 403, .. }),
        "{err:?}"
    );
    ensure!(mock.requests() == 7, "a 4xx is not retried");
    Ok(())
}

#[tokio::test]
async fn basic_auth_is_sent_and_never_shown() -> anyhow::Result<()> {
    let mock = MockSchemaRegistry::start()?;
    mock.require_basic_auth("svc-user", "s3cr3t-pa55");
    let anonymous = registry(&mock)?;
    let err = anonymous
        .register("user-events-value", &Schema::avro(USER_EVENT_V1))
        .await
        .unwrap_err();
    ensure!(
        matches!(err, SchemaRegistryError::Http { status: 401, .. }),
        "{err:?}"
    );

    let builder = SchemaRegistry::builder(mock.url()).basic_auth("svc-user", "s3cr3t-pa55");
    let debug = format!("{builder:?}");
    ensure!(
        !debug.contains("s3cr3t") && debug.contains("[redacted]") && debug.contains("svc-user"),
        "{debug}"
    );
    let registry = builder.build()?;
    let debug = format!("{registry:?}");
    ensure!(
        !debug.contains("s3cr3t") && debug.contains("[redacted]"),
        "{debug}"
    );
    registry
        .register("user-events-value", &Schema::avro(USER_EVENT_V1))
        .await?;
    Ok(())
}

#[tokio::test]
async fn one_registry_call_for_many_records() -> anyhow::Result<()> {
    let mock = MockSchemaRegistry::start()?;
    let producer_side = registry(&mock)?;
    let serializer = AvroSerializer::new(&producer_side, USER_EVENT_V1)?;
    let mut encoded = Vec::new();
    for i in 0..500 {
        encoded.push(serializer.serialize("user-events", &v1(i)).await?);
    }
    ensure!(
        mock.request_log() == ["POST /subjects/user-events-value/versions"],
        "{:?}",
        mock.request_log()
    );

    let consumer_side = registry(&mock)?;
    let reader = AvroDeserializer::new(&consumer_side);
    for (i, bytes) in encoded.iter().enumerate() {
        let event: UserEventV1 = reader.deserialize(bytes).await?;
        ensure!(event == v1(i as i64));
    }
    ensure!(
        mock.requests() == 2 && consumer_side.requests() == 1,
        "{:?}",
        mock.request_log()
    );
    Ok(())
}

#[tokio::test]
async fn avro_schema_evolution_both_ways() -> anyhow::Result<()> {
    let mock = MockSchemaRegistry::start()?;
    let registry = registry(&mock)?;
    let old = AvroSerializer::new(&registry, USER_EVENT_V1)?;
    let new = AvroSerializer::new(&registry, USER_EVENT_V2)?;
    let from_v1 = old.serialize("user-events", &v1(1001)).await?;
    let written_v2 = UserEventV2 {
        user_id: 1002,
        event_type: "login".into(),
        amount: None,
        tags: vec![],
        source: "auth-service".into(),
    };
    let from_v2 = new.serialize("user-events", &written_v2).await?;
    ensure!(from_v1[..5] == [0, 0, 0, 0, 1] && from_v2[..5] == [0, 0, 0, 0, 2]);

    let v1_reader = AvroDeserializer::new(&registry).reader_schema(USER_EVENT_V1)?;
    let v2_reader = AvroDeserializer::new(&registry).reader_schema(USER_EVENT_V2)?;
    ensure!(v1_reader.deserialize::<UserEventV1>(&from_v1).await? == v1(1001));
    // A v1 reader drops the field it does not know.
    let old_view: UserEventV1 = v1_reader.deserialize(&from_v2).await?;
    ensure!(
        old_view.user_id == 1002 && old_view.amount.is_none(),
        "{old_view:?}"
    );
    // A v2 reader fills in the default.
    let new_view: UserEventV2 = v2_reader.deserialize(&from_v1).await?;
    ensure!(
        new_view.source == "unknown" && new_view.tags == ["web", "eu"],
        "{new_view:?}"
    );
    ensure!(v2_reader.deserialize::<UserEventV2>(&from_v2).await? == written_v2);

    // Registering an incompatible v3 fails at the first value, naming the subject.
    let bad = AvroSerializer::new(&registry, USER_EVENT_INCOMPATIBLE)?;
    let err = bad.serialize("user-events", &v1(1)).await.unwrap_err();
    ensure!(
        matches!(err, SchemaRegistryError::Incompatible { .. }),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn decoding_failures_are_typed() -> anyhow::Result<()> {
    let mock = MockSchemaRegistry::start()?;
    let registry = registry(&mock)?;
    let reader = AvroDeserializer::new(&registry);
    let err = reader
        .deserialize::<UserEventV1>(br#"{"user_id": 1}"#)
        .await
        .unwrap_err();
    ensure!(
        matches!(err, SchemaRegistryError::UnknownMagicByte { byte: b'{' }),
        "{err:?}"
    );
    let err = reader
        .deserialize::<UserEventV1>(&[0, 0])
        .await
        .unwrap_err();
    ensure!(
        matches!(err, SchemaRegistryError::TooShort { len: 2 }),
        "{err:?}"
    );
    let err = reader
        .deserialize::<UserEventV1>(&[0, 0, 0, 0, 42, 2])
        .await
        .unwrap_err();
    ensure!(
        matches!(err, SchemaRegistryError::SchemaNotFound { id: 42, .. }),
        "{err:?}"
    );

    let serializer = AvroSerializer::new(&registry, USER_EVENT_V1)?;
    let mut bytes = serializer.serialize("t", &v1(7)).await?;
    bytes.truncate(8); // a cut payload
    let err = reader.deserialize::<UserEventV1>(&bytes).await.unwrap_err();
    ensure!(
        matches!(err, SchemaRegistryError::Deserialize { schema_id: 1, .. }),
        "{err:?}"
    );
    // The right bytes into the wrong type.
    let bytes = serializer.serialize("t", &v1(7)).await?;
    let err = reader.deserialize::<Vec<u8>>(&bytes).await.unwrap_err();
    ensure!(
        matches!(err, SchemaRegistryError::Deserialize { .. }),
        "{err:?}"
    );

    // An Avro id read as JSON Schema, and a value that does not fit the writer's schema.
    let err = JsonSchemaDeserializer::new(&registry)
        .deserialize::<JsonEvent>(&bytes)
        .await
        .unwrap_err();
    ensure!(
        matches!(
            err,
            SchemaRegistryError::Deserialize { .. } | SchemaRegistryError::WrongSchemaType { .. }
        ),
        "{err:?}"
    );
    let err = serializer
        .serialize("t", &serde_json::json!({"user_id": "not a number"}))
        .await
        .unwrap_err();
    ensure!(
        matches!(err, SchemaRegistryError::Serialize { .. }),
        "{err:?}"
    );
    let err: kafka_kit::Error = err.into();
    ensure!(matches!(err, kafka_kit::Error::SchemaRegistry(_)) && !err.is_retriable());
    Ok(())
}

#[tokio::test]
async fn json_schema_validates_on_both_sides() -> anyhow::Result<()> {
    let mock = MockSchemaRegistry::start()?;
    let registry = registry(&mock)?;
    let serializer = JsonSchemaSerializer::new(&registry, USER_EVENT_JSON_SCHEMA)?;
    let event = JsonEvent {
        user_id: 1001,
        event_type: "login".into(),
        amount: Some(9.5),
    };
    let bytes = serializer.serialize("user-events", &event).await?;
    ensure!(bytes[0] == 0 && bytes[5..].starts_with(b"{"));
    let reader = JsonSchemaDeserializer::new(&registry);
    ensure!(reader.deserialize::<JsonEvent>(&bytes).await? == event);
    ensure!(mock.request_log() == ["POST /subjects/user-events-value/versions"]);

    let bad = JsonEvent {
        user_id: 0,
        ..event.clone()
    };
    let err = serializer.serialize("user-events", &bad).await.unwrap_err();
    ensure!(
        matches!(&err, SchemaRegistryError::Validation { schema_id: Some(1), reason } if reason.contains("user_id")),
        "{err:?}"
    );

    // A value that a careless producer wrote under the schema's id is refused when read.
    let mut forged =
        kafka_kit::schema_registry::wire::encode(1, br#"{"user_id": 5, "event_type": "logout"}"#);
    let err = reader.deserialize::<JsonEvent>(&forged).await.unwrap_err();
    ensure!(
        matches!(err, SchemaRegistryError::Validation { .. }),
        "{err:?}"
    );
    // ... unless asked not to check.
    let unchecked: serde_json::Value = JsonSchemaDeserializer::new(&registry)
        .validate(false)
        .deserialize(&forged)
        .await?;
    ensure!(unchecked["event_type"] == "logout");
    forged.truncate(10);
    let err = reader.deserialize::<JsonEvent>(&forged).await.unwrap_err();
    ensure!(
        matches!(err, SchemaRegistryError::Deserialize { .. }),
        "{err:?}"
    );

    let err = JsonSchemaSerializer::new(&registry, "{not json").unwrap_err();
    ensure!(matches!(
        err,
        SchemaRegistryError::InvalidSchema {
            schema_type: SchemaType::Json,
            ..
        }
    ));
    Ok(())
}

#[tokio::test]
async fn subject_name_strategies() -> anyhow::Result<()> {
    let mock = MockSchemaRegistry::start()?;
    let registry = registry(&mock)?;
    let record = AvroSerializer::new(&registry, USER_EVENT_V1)?
        .subject_name_strategy(SubjectNameStrategy::RecordName);
    let topic_record = AvroSerializer::new(&registry, USER_EVENT_V1)?
        .subject_name_strategy(SubjectNameStrategy::TopicRecordName);
    let keys = AvroSerializer::new(&registry, r#""long""#)?.for_keys();
    record.serialize("a", &v1(1)).await?;
    record.serialize("b", &v1(1)).await?;
    topic_record.serialize("a", &v1(1)).await?;
    keys.serialize("a", &1001_i64).await?;
    ensure!(
        mock.request_log()
            == [
                "POST /subjects/com.example.UserEvent/versions",
                "POST /subjects/a-com.example.UserEvent/versions",
                "POST /subjects/a-key/versions",
            ],
        "{:?}",
        mock.request_log()
    );
    let json = JsonSchemaSerializer::new(&registry, USER_EVENT_JSON_SCHEMA)?
        .subject_name_strategy(SubjectNameStrategy::TopicRecordName);
    ensure!(json.subject("a")? == "a-UserEvent");
    let untitled = JsonSchemaSerializer::new(&registry, r#"{"type": "object"}"#)?
        .subject_name_strategy(SubjectNameStrategy::RecordName);
    ensure!(untitled.subject("a").is_err());

    // A producer without the right to register: the latest version is used.
    let latest = AvroSerializer::new(&registry, USER_EVENT_V1)?
        .subject_name_strategy(SubjectNameStrategy::Fixed("com.example.UserEvent".into()))
        .use_latest_version();
    let bytes = latest.serialize("anything", &v1(3)).await?;
    ensure!(bytes[..5] == [0, 0, 0, 0, 1]);
    ensure!(
        mock.request_log().last().map(String::as_str)
            == Some("GET /subjects/com.example.UserEvent/versions/latest")
    );
    Ok(())
}

/// Consumer records with an Avro value; the one that is plain JSON, and the one written with a
/// schema id this registry does not know, are retried then dead-lettered by `AtLeastOnce`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_least_once_dead_letters_values_that_do_not_decode() -> anyhow::Result<()> {
    common::init_tracing();
    let cluster = TestCluster::from_env_or_embedded()?;
    let mock = MockSchemaRegistry::start()?;
    let registry = registry(&mock)?;
    let (topic, dlt) = (
        common::unique_topic("avro-events"),
        common::unique_topic("avro-events-dlt"),
    );
    cluster.create_topic(&topic, 1).await?;
    cluster.create_topic(&dlt, 1).await?;
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    let serializer = AvroSerializer::new(&registry, USER_EVENT_V1)?;
    let values = [
        serializer.serialize(&topic, &v1(1)).await?,
        br#"{"user_id": 2}"#.to_vec(), // not framed
        kafka_kit::schema_registry::wire::encode(77, b"\x02"), // unknown schema id
        serializer.serialize(&topic, &v1(3)).await?,
    ];
    for value in &values {
        producer
            .send(Record::to(&topic).key("k").payload(value))
            .await?;
    }

    let consumer = Consumer::builder(&cluster.consumer_config().build()?)
        .group_id(common::unique_topic("group"))
        .topics([topic.as_str()])
        .offset_reset(OffsetReset::Earliest)
        .build()?;
    let finished = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = {
        let finished = finished.clone();
        async move {
            while finished.load(Ordering::SeqCst) < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let stats = {
        let (finished, seen, registry) = (finished.clone(), seen.clone(), registry.clone());
        AtLeastOnce::new(consumer)
            .retry(RetryPolicy::attempts(2).backoff(Duration::from_millis(10)))
            .dead_letter(producer.clone(), dlt.clone())
            .commit_every(1, Duration::from_millis(100))
            .run(
                move |record: Arc<ConsumerRecord>| {
                    let (finished, seen, registry) =
                        (finished.clone(), seen.clone(), registry.clone());
                    async move {
                        // The typed error goes back to the loop: retried, then dead-lettered.
                        let event: UserEventV1 = record.avro(&registry).await?;
                        seen.lock().unwrap().push(event.user_id);
                        finished.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, kafka_kit::Error>(())
                    }
                },
                stop,
            )
            .await?
    };
    ensure!(
        *seen.lock().unwrap() == [1, 3],
        "{:?}",
        seen.lock().unwrap()
    );
    ensure!(stats.dead_lettered == 2 && stats.retries == 2, "{stats:?}");
    let dead = cluster.read_topic(&dlt, 2, common::READ_TIMEOUT).await?;
    ensure!(dead.len() == 2);
    for letter in &dead {
        let headers = kafka_kit::headers::HeaderReader::new(letter.headers());
        let offset: usize = headers
            .get_str(dead_letter_headers::ORIGINAL_OFFSET)?
            .context("no offset")?
            .parse()?;
        let error = headers
            .get_str(dead_letter_headers::ERROR)?
            .context("no error")?;
        ensure!(letter.payload() == Some(&values[offset][..]));
        ensure!(headers.get_str(dead_letter_headers::ATTEMPTS)? == Some("2"));
        match offset {
            1 => ensure!(error.contains("magic byte 0x7b"), "{error}"),
            2 => ensure!(error.contains("no schema with id 77"), "{error}"),
            _ => anyhow::bail!("record {offset} should not be dead-lettered"),
        }
    }
    Ok(())
}
