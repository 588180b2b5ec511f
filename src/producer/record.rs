//! The messages a producer sends: [`Record`], borrowed, and [`OwnedRecord`], handed back whole.

use std::fmt;

use rdkafka::message::{BorrowedMessage, Message, OwnedHeaders};
use serde::Serialize;

use super::ProduceError;
use crate::error::{Error, Result};

/// A message to send: topic, optional key, payload, partition, timestamp and headers, and the
/// caller's context `C`. Key and payload are borrowed; librdkafka copies them when the message is
/// enqueued.
#[must_use = "a record does nothing until it is sent"]
pub struct Record<'a, C = ()> {
    pub(super) topic: &'a str,
    pub(super) key: Option<&'a [u8]>,
    pub(super) payload: Option<&'a [u8]>,
    pub(super) partition: Option<i32>,
    pub(super) timestamp: Option<i64>,
    pub(super) headers: Option<OwnedHeaders>,
    pub(super) context: C,
}

impl<'a> Record<'a> {
    /// A record for `topic`, with no key, no payload and no context yet.
    pub fn to(topic: &'a str) -> Self {
        Record {
            topic,
            key: None,
            payload: None,
            partition: None,
            timestamp: None,
            headers: None,
            context: (),
        }
    }
}

impl<'a, C> Record<'a, C> {
    /// The message key: it picks the partition, and comes back in every result.
    pub fn key<K: AsRef<[u8]> + ?Sized>(mut self, key: &'a K) -> Self {
        self.key = Some(key.as_ref());
        self
    }

    /// The message value.
    pub fn payload<P: AsRef<[u8]> + ?Sized>(mut self, payload: &'a P) -> Self {
        self.payload = Some(payload.as_ref());
        self
    }

    /// Sends to this partition, bypassing the partitioner.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// The message timestamp, in milliseconds since the Unix epoch (default: now).
    pub fn timestamp(mut self, millis: i64) -> Self {
        self.timestamp = Some(millis);
        self
    }

    /// The message headers: a [`Headers`](crate::headers::Headers) builder or rdkafka's
    /// `OwnedHeaders`.
    pub fn headers(mut self, headers: impl Into<OwnedHeaders>) -> Self {
        self.headers = Some(headers.into());
        self
    }

    /// Attaches the caller's context, returned with the message's result.
    pub fn context<D>(self, context: D) -> Record<'a, D> {
        let Record {
            topic,
            key,
            payload,
            partition,
            timestamp,
            headers,
            ..
        } = self;
        Record {
            topic,
            key,
            payload,
            partition,
            timestamp,
            headers,
            context,
        }
    }

    /// The topic.
    pub fn topic_name(&self) -> &'a str {
        self.topic
    }

    /// The error for a record that was refused before it was enqueued: the message and the
    /// context are handed back.
    pub(crate) fn refused(self, error: Error) -> ProduceError<C> {
        let (message, context) = self.into_owned();
        ProduceError {
            error,
            message,
            context,
        }
    }

    /// Splits the record into the message (copied) and the context.
    pub(super) fn into_owned(self) -> (OwnedRecord, C) {
        let message = OwnedRecord {
            topic: self.topic.to_owned(),
            partition: self.partition,
            key: self.key.map(<[u8]>::to_vec),
            payload: self.payload.map(<[u8]>::to_vec),
            timestamp: self.timestamp,
            headers: self.headers,
        };
        (message, self.context)
    }
}

impl<C> fmt::Debug for Record<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic)
            .field("key", &self.key.map(String::from_utf8_lossy))
            .field("payload_len", &self.payload.map(<[u8]>::len))
            .field("partition", &self.partition)
            .finish_non_exhaustive()
    }
}

/// A message that was not delivered, handed back whole so that it can be retried or
/// dead-lettered. [`OwnedRecord::as_record`] turns it back into a [`Record`].
#[must_use = "a record does nothing until it is sent"]
#[derive(Clone, Default)]
pub struct OwnedRecord {
    /// The topic.
    pub topic: String,
    /// The partition: the one asked for, or the one the partitioner had chosen.
    pub partition: Option<i32>,
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The payload.
    pub payload: Option<Vec<u8>>,
    /// The timestamp asked for, if any.
    pub timestamp: Option<i64>,
    /// The headers.
    pub headers: Option<OwnedHeaders>,
}

impl OwnedRecord {
    /// A record for `topic`, with nothing else set yet: fill it with the setters, named as [`Record`]'s.
    pub fn to(topic: impl Into<String>) -> Self {
        OwnedRecord {
            topic: topic.into(),
            ..Self::default()
        }
    }

    /// With this key.
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// With this payload.
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// With `value` as JSON for its payload.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self> {
        self.payload = Some(serde_json::to_vec(value)?);
        Ok(self)
    }

    /// With these headers.
    pub fn headers(mut self, headers: impl Into<OwnedHeaders>) -> Self {
        self.headers = Some(headers.into());
        self
    }

    /// Sent to this partition, bypassing the partitioner.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// A [`Record`] borrowing this message, to send it again. The partition is not kept: the
    /// partitioner picks it again (the same one, for a keyed message).
    pub fn as_record(&self) -> Record<'_> {
        Record {
            topic: &self.topic,
            key: self.key.as_deref(),
            payload: self.payload.as_deref(),
            partition: None,
            timestamp: self.timestamp,
            headers: self.headers.clone(),
            context: (),
        }
    }

    pub(super) fn from_message(message: &BorrowedMessage<'_>) -> Self {
        OwnedRecord {
            topic: message.topic().to_owned(),
            partition: Some(message.partition()),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            timestamp: message.timestamp().to_millis(),
            headers: message
                .headers()
                .map(rdkafka::message::BorrowedHeaders::detach),
        }
    }
}

impl fmt::Debug for OwnedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedRecord")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("key", &self.key.as_deref().map(String::from_utf8_lossy))
            .field("payload_len", &self.payload.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}
