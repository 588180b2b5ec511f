//! Avro values for serde types, framed for the registry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::client::{Schema, SchemaRegistry, SchemaType};
use super::wire::{self, Framed};
use super::{SchemaRegistryError, SubjectNameStrategy};
use crate::consumer::ConsumerRecord;
use crate::lock;

fn invalid_schema(e: &apache_avro::Error) -> SchemaRegistryError {
    SchemaRegistryError::InvalidSchema {
        schema_type: SchemaType::Avro,
        reason: e.to_string(),
    }
}

/// Writes serde values as Avro in the Confluent wire format.
///
/// Built from the writer's schema (Avro JSON). The first value for a subject registers the schema
/// there (the registry checks it is compatible with the subject's earlier versions) and keeps
/// the id: later values cost no registry call. See the [module docs](super) for an example.
pub struct AvroSerializer {
    registry: SchemaRegistry,
    schema: Schema,
    parsed: Arc<apache_avro::Schema>,
    strategy: SubjectNameStrategy,
    is_key: bool,
    use_latest: bool,
    /// Subject -> the id and schema values are written with.
    subjects: Mutex<HashMap<String, (u32, Arc<apache_avro::Schema>)>>,
}

impl std::fmt::Debug for AvroSerializer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroSerializer")
            .field("strategy", &self.strategy)
            .field("is_key", &self.is_key)
            .field("use_latest", &self.use_latest)
            .finish_non_exhaustive()
    }
}

impl AvroSerializer {
    /// A serializer writing with `schema` (Avro JSON), registered on first use under
    /// `<topic>-value`. A schema that does not parse is an error now, not at the first value.
    pub fn new(registry: &SchemaRegistry, schema: &str) -> Result<Self, SchemaRegistryError> {
        let parsed = apache_avro::Schema::parse_str(schema).map_err(|e| invalid_schema(&e))?;
        Ok(AvroSerializer {
            registry: registry.clone(),
            schema: Schema::avro(schema),
            parsed: Arc::new(parsed),
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

    /// Registers nothing: writes with the subject's latest version as the registry has it,
    /// fetched on first use (for producers without the right to register; the schema given to
    /// [`new`](Self::new) then only names the record for the record-name strategies).
    pub fn use_latest_version(mut self) -> Self {
        self.use_latest = true;
        self
    }

    /// The subject values for `topic` go under.
    pub fn subject(&self, topic: &str) -> Result<String, SchemaRegistryError> {
        let name = self.parsed.name().map(|n| n.fullname(None));
        self.strategy.subject(topic, self.is_key, name.as_deref())
    }

    /// `value` as framed Avro bytes for `topic`: pass them to
    /// [`Record::payload`](crate::producer::Record::payload) (or `key`).
    pub async fn serialize<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        value: &T,
    ) -> Result<Vec<u8>, SchemaRegistryError> {
        let subject = self.subject(topic)?;
        let (id, schema) = self.writer(&subject).await?;
        let failed = |e: apache_avro::Error| SchemaRegistryError::Serialize {
            subject: subject.clone(),
            reason: e.to_string(),
        };
        let value = apache_avro::to_value(value)
            .and_then(|v| v.resolve(&schema))
            .map_err(failed)?;
        let payload = GenericDatumWriter::builder(&schema)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .map_err(failed)?;
        Ok(wire::encode(id, &payload))
    }

    async fn writer(
        &self,
        subject: &str,
    ) -> Result<(u32, Arc<apache_avro::Schema>), SchemaRegistryError> {
        if let Some(known) = lock(&self.subjects).get(subject) {
            return Ok(known.clone());
        }
        let known = if self.use_latest {
            let latest = self.registry.latest_version(subject).await?;
            (latest.id, self.registry.avro_schema(latest.id).await?)
        } else {
            let id = self.registry.register(subject, &self.schema).await?;
            (id, self.parsed.clone())
        };
        lock(&self.subjects).insert(subject.to_owned(), known.clone());
        Ok(known)
    }
}

/// Reads framed Avro values into serde types.
///
/// The writer's schema comes from the registry, by the id in the value (fetched and parsed once
/// per id). Given a reader schema, values are resolved to it (Avro schema evolution: fields the
/// reader does not know are dropped, fields the writer did not know take their defaults);
/// without one, they are read as written.
#[derive(Clone)]
pub struct AvroDeserializer {
    registry: SchemaRegistry,
    reader: Option<Arc<apache_avro::Schema>>,
}

impl std::fmt::Debug for AvroDeserializer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroDeserializer")
            .field("reader_schema", &self.reader.as_ref().map(|s| s.name()))
            .finish_non_exhaustive()
    }
}

impl AvroDeserializer {
    /// Reads values as they were written.
    pub fn new(registry: &SchemaRegistry) -> Self {
        AvroDeserializer {
            registry: registry.clone(),
            reader: None,
        }
    }

    /// Resolves values to this reader schema (Avro JSON).
    pub fn reader_schema(mut self, schema: &str) -> Result<Self, SchemaRegistryError> {
        self.reader = Some(Arc::new(
            apache_avro::Schema::parse_str(schema).map_err(|e| invalid_schema(&e))?,
        ));
        Ok(self)
    }

    /// Decodes framed bytes as a generic Avro value.
    pub async fn deserialize_value(
        &self,
        bytes: &[u8],
    ) -> Result<apache_avro::types::Value, SchemaRegistryError> {
        let framed = Framed::decode(bytes)?;
        let writer = self.registry.avro_schema(framed.schema_id).await?;
        let mut payload = framed.payload;
        GenericDatumReader::builder(&writer)
            .maybe_reader_schema(self.reader.as_deref())
            .build()
            .and_then(|r| r.read_value(&mut payload))
            .map_err(|e| SchemaRegistryError::Deserialize {
                schema_id: framed.schema_id,
                reason: e.to_string(),
            })
    }

    /// Decodes framed bytes into `T`.
    pub async fn deserialize<T: DeserializeOwned>(
        &self,
        bytes: &[u8],
    ) -> Result<T, SchemaRegistryError> {
        let value = self.deserialize_value(bytes).await?;
        apache_avro::from_value(&value).map_err(|e| SchemaRegistryError::Deserialize {
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
    /// Decodes the value, framed Avro, into `T` with the schema it was written with (from
    /// `registry`, cached by id). To resolve it to a reader schema of your own, use
    /// [`AvroDeserializer::reader_schema`].
    #[cfg_attr(docsrs, doc(cfg(feature = "schema-registry")))]
    pub async fn avro<T: DeserializeOwned>(
        &self,
        registry: &SchemaRegistry,
    ) -> Result<T, SchemaRegistryError> {
        AvroDeserializer::new(registry)
            .deserialize_record(self)
            .await
    }
}

impl SchemaRegistry {
    /// The Avro schema with id `id`, parsed (cached by id).
    pub async fn avro_schema(
        &self,
        id: u32,
    ) -> Result<Arc<apache_avro::Schema>, SchemaRegistryError> {
        self.parsed_schema(&self.inner.avro, id, SchemaType::Avro, |schema| {
            apache_avro::Schema::parse_str(schema).map_err(|e| invalid_schema(&e))
        })
        .await
    }
}
