//! Schema Registry: typed values in the Confluent wire format, readable by every other client.
//!
//! *Needs the `schema-registry` feature.*
//!
//! A JSON value on a topic is a promise nobody checks: a producer renames a field, and every
//! consumer breaks at once. A schema registry turns the promise into a contract. Each value is
//! written with a schema the registry knows, the registry refuses a new version that old readers
//! could not read, and each value carries the id of its schema (the [wire format](wire)), so a
//! reader always knows how it was written, whichever version it expects itself.
//!
//! kafka-kit speaks the Confluent protocol, so its values are read by confluent-kafka-python, the
//! Java serializers and the rest, and it reads theirs (the tests check bytes made by
//! confluent-kafka-python).
//!
//! # The pieces
//!
//! - [`SchemaRegistry`]: the REST client (register, look up by id, latest version,
//!   compatibility), with caches, basic auth, TLS, timeouts and retries.
//! - [`AvroSerializer`] / [`AvroDeserializer`]: serde types as Avro, with schema evolution (the
//!   writer's schema from the registry, the reader's from you).
//! - [`JsonSchemaSerializer`] / [`JsonSchemaDeserializer`]: serde types as JSON, validated against
//!   the schema when written and when read.
//! - [`wire`]: the five-byte framing on its own.
//! - [`MockSchemaRegistry`]: a registry in-process, for tests and examples.
//!
//! # Producing
//!
//! A serializer turns a value into framed bytes; the subject is `<topic>-value` by default
//! ([`SubjectNameStrategy`]). The schema is registered on first use (or looked up, with
//! [`AvroSerializer::use_latest_version`]); later values cost no registry call.
//!
//! ```no_run
//! use kafka_kit::producer::{Producer, Record};
//! use kafka_kit::schema_registry::{AvroSerializer, SchemaRegistry};
//!
//! #[derive(serde::Serialize)]
//! struct UserEvent { user_id: i64, event_type: String }
//!
//! const USER_EVENT_V1: &str = r#"{"type": "record", "name": "UserEvent", "fields": [
//!     {"name": "user_id", "type": "long"}, {"name": "event_type", "type": "string"}]}"#;
//!
//! # async fn run(producer: Producer) -> anyhow::Result<()> {
//! let registry = SchemaRegistry::builder("http://localhost:8081").build()?;
//! let serializer = AvroSerializer::new(&registry, USER_EVENT_V1)?;
//!
//! let event = UserEvent { user_id: 1001, event_type: "login".into() };
//! let bytes = serializer.serialize("user-events", &event).await?; // subject user-events-value
//! producer.send(Record::to("user-events").key("1001").payload(&bytes)).await?;
//! # Ok(()) }
//! ```
//!
//! # Consuming
//!
//! A record's value decodes with the schema it was written with, resolved to the reader's own
//! schema when one is given: a v1 reader reads v2 values (dropping the new fields), a v2 reader
//! reads v1 values (filling in the new fields' defaults).
//!
//! ```no_run
//! use kafka_kit::consumer::ConsumerRecord;
//! use kafka_kit::schema_registry::{AvroDeserializer, SchemaRegistry};
//!
//! #[derive(Debug, serde::Deserialize)]
//! struct UserEvent { user_id: i64, event_type: String }
//! # const USER_EVENT_V1: &str = "";
//!
//! # async fn run(registry: SchemaRegistry, record: ConsumerRecord) -> anyhow::Result<()> {
//! // With the writer's schema as it is:
//! let event: UserEvent = record.avro(&registry).await?;
//! // Or resolved to the schema this reader was written against:
//! let v1 = AvroDeserializer::new(&registry).reader_schema(USER_EVENT_V1)?;
//! let event: UserEvent = v1.deserialize_record(&record).await?;
//! # Ok(()) }
//! ```
//!
//! A value with an unknown schema id, another framing, or a payload that does not decode is a
//! [`SchemaRegistryError`] (inside [`Error::SchemaRegistry`](crate::Error::SchemaRegistry)).
//! In [`AtLeastOnce`](crate::consumer::processing::AtLeastOnce), decode inside the handler and
//! return that error: the record is retried as the [`RetryPolicy`] says (which rides out a
//! registry that is briefly unreachable), then dead-lettered with the error in its `dlt.error`
//! header, and processing goes on.
//!
//! [`RetryPolicy`]: crate::consumer::processing::RetryPolicy

mod avro;
mod client;
mod json;
mod mock;
mod subject;
pub mod wire;

pub use avro::{AvroDeserializer, AvroSerializer};
pub use client::{
    RegisteredSchema, RegistryCall, Schema, SchemaRegistry, SchemaRegistryBuilder, SchemaType,
};
pub use json::{JsonSchemaDeserializer, JsonSchemaSerializer};
pub use mock::MockSchemaRegistry;
pub use subject::SubjectNameStrategy;

/// The Avro crate kafka-kit uses, for its `Schema` and `types::Value`.
pub use apache_avro;

/// Everything that can go wrong between a value and its framed bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaRegistryError {
    /// Fewer than the five bytes of magic byte and schema id.
    #[error("not a schema-registry value: {len} bytes, fewer than the 5 of the header")]
    TooShort {
        /// How many bytes there were.
        len: usize,
    },
    /// The first byte is not the wire format's magic byte 0 (often: a plain JSON or string value).
    #[error("not a schema-registry value: magic byte {byte:#04x}, expected 0x00")]
    UnknownMagicByte {
        /// The first byte found.
        byte: u8,
    },
    /// The registry does not know the subject (error code 40401).
    #[error("schema registry {call}: subject `{subject}` not found")]
    SubjectNotFound {
        /// The call that failed.
        call: RegistryCall,
        /// The subject asked for.
        subject: String,
    },
    /// The registry has no schema with that id (error code 40403): the value was written against
    /// another registry, or the schema was deleted.
    #[error("schema registry {call}: no schema with id {id}")]
    SchemaNotFound {
        /// The call that failed.
        call: RegistryCall,
        /// The id asked for.
        id: u32,
    },
    /// The registry refused a schema that is not compatible with the subject's earlier versions
    /// (HTTP 409).
    #[error(
        "schema registry {call}: the schema is incompatible with subject `{subject}`: {message}"
    )]
    Incompatible {
        /// The call that failed.
        call: RegistryCall,
        /// The subject.
        subject: String,
        /// The registry's explanation.
        message: String,
    },
    /// The registry could not be reached, or did not answer in time (after the retries).
    #[error("schema registry {call}: {url} unreachable: {reason}")]
    Unreachable {
        /// The call that failed.
        call: RegistryCall,
        /// The URL called.
        url: String,
        /// Why (connection refused, timeout, TLS...).
        reason: String,
    },
    /// The registry answered with another error status (401, 422, 500...).
    #[error("schema registry {call}: HTTP {status} (error code {code:?}): {message}")]
    Http {
        /// The call that failed.
        call: RegistryCall,
        /// The HTTP status.
        status: u16,
        /// The registry's `error_code`, if it sent one (e.g. 42201: invalid schema).
        code: Option<i64>,
        /// The registry's message, or the body.
        message: String,
    },
    /// The registry's answer was not what the API promises.
    #[error("schema registry {call}: unexpected answer: {reason}")]
    InvalidResponse {
        /// The call that failed.
        call: RegistryCall,
        /// What was wrong.
        reason: String,
    },
    /// The registry client could not be built (bad URL, unreadable certificate...).
    #[error("schema registry client: {0}")]
    Client(String),
    /// A schema could not be parsed.
    #[error("invalid {schema_type} schema: {reason}")]
    InvalidSchema {
        /// Avro or JSON.
        schema_type: SchemaType,
        /// The parser's message.
        reason: String,
    },
    /// The schema behind an id is of another type than the deserializer reads.
    #[error("schema {id} is a {found} schema, not {expected}")]
    WrongSchemaType {
        /// The schema id.
        id: u32,
        /// What the deserializer reads.
        expected: SchemaType,
        /// What the registry holds.
        found: SchemaType,
    },
    /// A value could not be encoded with the schema.
    #[error("could not encode the value for subject `{subject}`: {reason}")]
    Serialize {
        /// The subject it was written under.
        subject: String,
        /// Why.
        reason: String,
    },
    /// A payload could not be decoded with schema `schema_id` (resolved to the reader's schema if
    /// there is one), or not into the type asked for.
    #[error("could not decode a value written with schema {schema_id}: {reason}")]
    Deserialize {
        /// The writer's schema id.
        schema_id: u32,
        /// Why.
        reason: String,
    },
    /// A JSON value does not satisfy its JSON Schema.
    #[error("the value does not satisfy JSON schema {schema_id:?}: {reason}")]
    Validation {
        /// The schema's id (on the producing side: the id it is registered with, if known).
        schema_id: Option<u32>,
        /// The first violation, with its location.
        reason: String,
    },
    /// A record has no value to decode.
    #[error("the record has no value")]
    NoValue,
}

impl SchemaRegistryError {
    /// Whether the same call may succeed later: the registry was unreachable, or answered with a
    /// server error (5xx).
    pub fn is_retriable(&self) -> bool {
        match self {
            SchemaRegistryError::Unreachable { .. } => true,
            SchemaRegistryError::Http { status, .. } => *status >= 500,
            _ => false,
        }
    }
}
