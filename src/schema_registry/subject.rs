//! Which subject a topic's schema is registered under.

use super::SchemaRegistryError;

/// How a serializer names the subject it registers (and looks up) its schema under; the same
/// names as Confluent's clients.
///
/// ```
/// use kafka_kit::schema_registry::SubjectNameStrategy;
///
/// let record = Some("com.example.UserEvent");
/// assert_eq!(SubjectNameStrategy::TopicName.subject("user-events", false, record)?, "user-events-value");
/// assert_eq!(SubjectNameStrategy::TopicName.subject("user-events", true, record)?, "user-events-key");
/// assert_eq!(SubjectNameStrategy::RecordName.subject("user-events", false, record)?, "com.example.UserEvent");
/// assert_eq!(
///     SubjectNameStrategy::TopicRecordName.subject("user-events", false, record)?,
///     "user-events-com.example.UserEvent",
/// );
/// # Ok::<(), kafka_kit::schema_registry::SchemaRegistryError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubjectNameStrategy {
    /// `<topic>-value` (or `<topic>-key`): one schema, and its versions, per topic. The default.
    #[default]
    TopicName,
    /// The record's full name (Avro: namespace and name; JSON Schema: `title`): one type, with its
    /// versions, on any number of topics.
    RecordName,
    /// `<topic>-<record name>`: several types on one topic, each with its own versions.
    TopicRecordName,
    /// Always this subject.
    Fixed(String),
}

impl SubjectNameStrategy {
    /// The subject for a value (`is_key` false) or key of `topic`, whose schema's record name is
    /// `record_name`. The record strategies need a name: a schema without one is an error.
    pub fn subject(
        &self,
        topic: &str,
        is_key: bool,
        record_name: Option<&str>,
    ) -> Result<String, SchemaRegistryError> {
        let name = || {
            record_name.ok_or_else(|| SchemaRegistryError::Serialize {
                subject: topic.to_owned(),
                reason: format!(
                    "{self:?} needs a schema with a record name (Avro name, JSON Schema title)"
                ),
            })
        };
        Ok(match self {
            SubjectNameStrategy::TopicName => {
                format!("{topic}-{}", if is_key { "key" } else { "value" })
            }
            SubjectNameStrategy::RecordName => name()?.to_owned(),
            SubjectNameStrategy::TopicRecordName => format!("{topic}-{}", name()?),
            SubjectNameStrategy::Fixed(subject) => subject.clone(),
        })
    }
}
