//! JSON values checked against a JSON Schema, framed for the registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::client::{Schema, SchemaRegistry, SchemaType};
use super::wire::{self, Framed};
use super::{SchemaRegistryError, SubjectNameStrategy};
use crate::consumer::ConsumerRecord;
use crate::lock;

fn invalid_schema(reason: String) -> SchemaRegistryError {
    SchemaRegistryError::InvalidSchema {
        schema_type: SchemaType::Json,
        reason,
    }
}

fn compile(schema: &str) -> Result<(Value, jsonschema::Validator), SchemaRegistryError> {
    let json: Value = serde_json::from_str(schema).map_err(|e| invalid_schema(e.to_string()))?;
    let validator = jsonschema::validator_for(&json).map_err(|e| invalid_schema(e.to_string()))?;
    Ok((json, validator))
}

fn check(
    validator: &jsonschema::Validator,
    value: &Value,
    schema_id: Option<u32>,
) -> Result<(), SchemaRegistryError> {
    validator
        .validate(value)
        .map_err(|e| SchemaRegistryError::Validation {
            schema_id,
            reason: format!("{e} (at `{}`)", e.instance_path()),
        })
}

/// Writes serde values as JSON in the Confluent wire format, after checking them against the
/// JSON Schema (a value that does not satisfy it is a [`Validation`] error, and nothing is
/// written).
///
/// Subjects, registration and caching work as for [`AvroSerializer`](super::AvroSerializer);
/// the record-name strategies use the schema's `title`.
///
/// [`Validation`]: SchemaRegistryError::Validation
///
/// ```no_run
/// use kafka_kit::schema_registry::{JsonSchemaSerializer, SchemaRegistry};
///
/// # async fn run(registry: SchemaRegistry) -> anyhow::Result<()> {
/// let serializer = JsonSchemaSerializer::new(&registry, r#"{"type": "object",
///     "properties": {"user_id": {"type": "integer"}}, "required": ["user_id"]}"#)?;
/// let bytes = serializer.serialize("user-events", &serde_json::json!({"user_id": 1001})).await?;
/// assert!(serializer.serialize("user-events", &serde_json::json!({})).await.is_err());
/// # Ok(()) }
/// ```
pub struct JsonSchemaSerializer {
    registry: SchemaRegistry,
    schema: Schema,
    title: Option<String>,
    validator: jsonschema::Validator,
    strategy: SubjectNameStrategy,
    is_key: bool,
    use_latest: bool,
    subjects: Mutex<HashMap<String, Writer>>,
}

/// The id values of a subject are tagged with, and the schema they are checked against when it
/// is not the serializer's own (`use_latest_version`).
type Writer = (u32, Option<Arc<jsonschema::Validator>>);

impl std::fmt::Debug for JsonSchemaSerializer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSchemaSerializer")
            .field("title", &self.title)
            .field("strategy", &self.strategy)
            .field("is_key", &self.is_key)
            .field("use_latest", &self.use_latest)
            .finish_non_exhaustive()
    }
}

impl JsonSchemaSerializer {
    /// A serializer checking values against `schema` (JSON Schema), registered on first use under
    /// `<topic>-value`. A schema that does not compile is an error now.
    pub fn new(registry: &SchemaRegistry, schema: &str) -> Result<Self, SchemaRegistryError> {
        let (json, validator) = compile(schema)?;
        Ok(JsonSchemaSerializer {
            registry: registry.clone(),
            schema: Schema::json(schema),
            title: json.get("title").and_then(Value::as_str).map(str::to_owned),
            validator,
            strategy: SubjectNameStrategy::default(),
            is_key: false,
            use_latest: false,
            subjects: Mutex::default(),
        })
    }

    /// How subjects are named (default: [`SubjectNameStrategy::TopicName`]).
    pub fn subject_name_strategy(mut self, strategy: SubjectNameStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Serializes keys: subjects `<topic>-key`.
    pub fn for_keys(mut self) -> Self {
        self.is_key = true;
        self
    }

    /// Registers nothing: values are checked against, and tagged with, the subject's latest
    /// version as the registry has it (fetched on first use).
    pub fn use_latest_version(mut self) -> Self {
        self.use_latest = true;
        self
    }

    /// The subject values for `topic` go under.
    pub fn subject(&self, topic: &str) -> Result<String, SchemaRegistryError> {
        self.strategy
            .subject(topic, self.is_key, self.title.as_deref())
    }

    /// `value` as framed JSON bytes for `topic`, once checked against the schema.
    pub async fn serialize<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<Vec<u8>, SchemaRegistryError> {
        let subject = self.subject(topic)?;
        let json = serde_json::to_value(value).map_err(|e| SchemaRegistryError::Serialize {
            subject: subject.clone(),
            reason: e.to_string(),
        })?;
        let (id, latest) = self.writer(&subject).await?;
        check(
            latest.as_deref().unwrap_or(&self.validator),
            &json,
            Some(id),
        )?;
        let mut bytes = Vec::with_capacity(64);
        wire::write_header(&mut bytes, id);
        serde_json::to_writer(&mut bytes, &json).map_err(|e| SchemaRegistryError::Serialize {
            subject,
            reason: e.to_string(),
        })?;
        Ok(bytes)
    }

    async fn writer(&self, subject: &str) -> Result<Writer, SchemaRegistryError> {
        if let Some(known) = lock(&self.subjects).get(subject) {
            return Ok(known.clone());
        }
        let known = if self.use_latest {
            let latest = self.registry.latest_version(subject).await?;
            (
                latest.id,
                Some(self.registry.json_validator(latest.id).await?),
            )
        } else {
            (self.registry.register(subject, &self.schema).await?, None)
        };
        lock(&self.subjects).insert(subject.to_owned(), known.clone());
        Ok(known)
    }
}

/// Reads framed JSON values into serde types, checking each against the schema it was written
/// with (from the registry, compiled once per id).
#[derive(Clone, Debug)]
pub struct JsonSchemaDeserializer {
    registry: SchemaRegistry,
    validate: bool,
}

impl JsonSchemaDeserializer {
    /// A deserializer that validates.
    pub fn new(registry: &SchemaRegistry) -> Self {
        JsonSchemaDeserializer {
            registry: registry.clone(),
            validate: true,
        }
    }

    /// Whether to check values against their schema (default: yes). Without the check, no
    /// registry call is made at all, but the framing is still checked.
    pub fn validate(mut self, validate: bool) -> Self {
        self.validate = validate;
        self
    }

    /// Decodes framed bytes as a JSON value.
    pub async fn deserialize_value(&self, bytes: &[u8]) -> Result<Value, SchemaRegistryError> {
        let framed = Framed::decode(bytes)?;
        let validator = match self.validate {
            true => Some(self.registry.json_validator(framed.schema_id).await?),
            false => None,
        };
        let value: Value = serde_json::from_slice(framed.payload).map_err(|e| {
            SchemaRegistryError::Deserialize {
                schema_id: framed.schema_id,
                reason: e.to_string(),
            }
        })?;
        if let Some(validator) = validator {
            check(&validator, &value, Some(framed.schema_id))?;
        }
        Ok(value)
    }

    /// Decodes framed bytes into `T`.
    pub async fn deserialize<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
    ) -> Result<T, SchemaRegistryError> {
        let value = self.deserialize_value(bytes).await?;
        serde_json::from_value(value).map_err(|e| SchemaRegistryError::Deserialize {
            schema_id: Framed::decode(bytes).map_or(0, |f| f.schema_id),
            reason: e.to_string(),
        })
    }

    /// Decodes a record's value into `T`.
    pub async fn deserialize_record<T: DeserializeOwned>(
        &self,
        record: &ConsumerRecord,
    ) -> Result<T, SchemaRegistryError> {
        self.deserialize(record.payload().ok_or(SchemaRegistryError::NoValue)?)
            .await
    }
}

impl ConsumerRecord {
    /// Decodes the value, framed JSON, into `T`, after checking it against the JSON Schema it was
    /// written with (from `registry`, cached by id).
    #[cfg_attr(docsrs, doc(cfg(feature = "schema-registry")))]
    pub async fn json_schema<T: DeserializeOwned>(
        &self,
        registry: &SchemaRegistry,
    ) -> Result<T, SchemaRegistryError> {
        JsonSchemaDeserializer::new(registry)
            .deserialize_record(self)
            .await
    }
}

impl SchemaRegistry {
    /// The JSON Schema with id `id`, compiled (cached by id).
    pub async fn json_validator(
        &self,
        id: u32,
    ) -> Result<Arc<jsonschema::Validator>, SchemaRegistryError> {
        self.parsed_schema(&self.inner.json, id, SchemaType::Json, |schema| {
            Ok(compile(schema)?.1)
        })
        .await
    }
}
