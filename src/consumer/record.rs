//! What a consumer hands out, and the offsets it commits.

use std::collections::BTreeMap;
use std::fmt;

use rdkafka::message::{Message, OwnedHeaders, OwnedMessage};
use rdkafka::{Offset, Timestamp, TopicPartitionList};
use serde::de::DeserializeOwned;

use crate::headers::HeaderReader;

/// A record read from Kafka: key, value, headers, topic, partition, offset and timestamp.
pub struct ConsumerRecord {
    message: OwnedMessage,
    /// The consumer's assignment generation when the record was fetched: a record from an older
    /// generation may belong to a partition this consumer no longer owns.
    pub(crate) generation: u64,
}

impl ConsumerRecord {
    pub(crate) fn new(message: OwnedMessage, generation: u64) -> Self {
        ConsumerRecord {
            message,
            generation,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        self.message.topic()
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        self.message.partition()
    }

    /// The record's own offset. To commit, use [`next_offset`](Self::next_offset): Kafka stores the
    /// next offset to read.
    pub fn offset(&self) -> i64 {
        self.message.offset()
    }

    /// The offset to commit once this record is processed: its own offset plus one.
    pub fn next_offset(&self) -> NextOffset {
        NextOffset(self.message.offset() + 1)
    }

    /// The record timestamp.
    pub fn timestamp(&self) -> Timestamp {
        self.message.timestamp()
    }

    /// The key.
    pub fn key(&self) -> Option<&[u8]> {
        self.message.key()
    }

    /// The key as text, if it is UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value.
    pub fn payload(&self) -> Option<&[u8]> {
        self.message.payload()
    }

    /// The headers, read typed.
    pub fn headers(&self) -> HeaderReader<'_, OwnedHeaders> {
        HeaderReader::new(self.message.headers())
    }

    /// Decodes the value as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        let payload = self
            .payload()
            .ok_or_else(|| self.decode_error("the record has no value".into()))?;
        serde_json::from_slice(payload).map_err(|e| self.decode_error(e.to_string()))
    }

    /// The rdkafka message.
    pub fn message(&self) -> &OwnedMessage {
        &self.message
    }

    /// The rdkafka message, owned.
    pub fn into_message(self) -> OwnedMessage {
        self.message
    }

    fn decode_error(&self, reason: String) -> DecodeError {
        DecodeError {
            topic: self.topic().to_owned(),
            partition: self.partition(),
            offset: self.offset(),
            reason,
        }
    }
}

impl fmt::Debug for ConsumerRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerRecord")
            .field("topic", &self.topic())
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .field("key", &self.key().map(String::from_utf8_lossy))
            .field("payload_len", &self.payload().map(<[u8]>::len))
            .finish_non_exhaustive()
    }
}

pub use crate::error::DecodeError;

/// An offset to commit: the next one to read, as Kafka expects. Built from a record with
/// [`ConsumerRecord::next_offset`], so the classic off-by-one (committing the record's own offset,
/// which replays it after a restart) cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NextOffset(pub(crate) i64);

impl NextOffset {
    /// The offset after the record at `offset`: what to commit once that record is done.
    pub fn after(offset: i64) -> Self {
        NextOffset(offset.saturating_add(1))
    }

    /// Reading resumes at `offset`, which is read next, not skipped: for positions already in
    /// the next-to-read convention (a committed offset, a checkpoint, an admin tool's), or to
    /// rewind to a record.
    pub fn resume_at(offset: i64) -> Self {
        NextOffset(offset)
    }

    /// The raw offset.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// Offsets to commit, per partition: always next-to-read, and never moving backwards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommitOffsets {
    /// Topic, then partition: looked up by `&str`, so marking a record allocates nothing once
    /// its topic is known. No topic is kept without partitions.
    offsets: BTreeMap<String, BTreeMap<i32, i64>>,
}

impl CommitOffsets {
    /// No offsets.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `record` processed: its partition's offset becomes the one after it, unless a later
    /// record of that partition was already marked.
    pub fn insert_after(&mut self, record: &ConsumerRecord) -> &mut Self {
        self.insert(record.topic(), record.partition(), record.next_offset())
    }

    /// Sets a partition's offset, unless a later one is already set.
    pub fn insert(&mut self, topic: &str, partition: i32, offset: NextOffset) -> &mut Self {
        let partitions = match self.offsets.get_mut(topic) {
            Some(partitions) => partitions,
            None => self.offsets.entry(topic.to_owned()).or_default(),
        };
        let slot = partitions.entry(partition).or_insert(offset.0);
        *slot = (*slot).max(offset.0);
        self
    }

    /// The offset of a partition.
    pub fn get(&self, topic: &str, partition: i32) -> Option<NextOffset> {
        self.offsets
            .get(topic)?
            .get(&partition)
            .copied()
            .map(NextOffset)
    }

    /// Every partition and its offset, by topic then partition.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i32, NextOffset)> {
        self.offsets.iter().flat_map(|(t, partitions)| {
            partitions
                .iter()
                .map(move |(p, o)| (t.as_str(), *p, NextOffset(*o)))
        })
    }

    /// Whether no offset is set.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// The number of partitions.
    pub fn len(&self) -> usize {
        self.offsets.values().map(BTreeMap::len).sum()
    }

    /// Keeps only the partitions `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, i32) -> bool) {
        self.offsets.retain(|t, partitions| {
            partitions.retain(|p, _| keep(t, *p));
            !partitions.is_empty()
        });
    }

    pub(crate) fn to_list(&self) -> TopicPartitionList {
        let mut list = TopicPartitionList::with_capacity(self.len());
        for (topic, partition, offset) in self.iter() {
            // Cannot fail: the offset is a plain offset.
            let _ = list.add_partition_offset(topic, partition, Offset::Offset(offset.0));
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, partition: i32, offset: i64) -> ConsumerRecord {
        let message = OwnedMessage::new(
            Some(b"{\"n\":1}".to_vec()),
            Some(b"k".to_vec()),
            topic.to_owned(),
            Timestamp::CreateTime(5),
            partition,
            offset,
            None,
        );
        ConsumerRecord::new(message, 0)
    }

    #[test]
    fn next_offset_is_one_after_the_record() {
        assert_eq!(record("t", 0, 41).next_offset().get(), 42);
    }

    #[test]
    fn commit_offsets_never_move_backwards() {
        let mut offsets = CommitOffsets::new();
        offsets
            .insert_after(&record("t", 0, 9))
            .insert_after(&record("t", 0, 3))
            .insert_after(&record("t", 1, 0));
        assert_eq!(offsets.get("t", 0), Some(NextOffset(10)));
        assert_eq!(offsets.get("t", 1), Some(NextOffset(1)));
        let list = offsets.to_list();
        assert_eq!(
            list.find_partition("t", 0).map(|e| e.offset()),
            Some(Offset::Offset(10))
        );
    }

    #[test]
    fn commit_offsets_retain_len_and_order() {
        let mut offsets = CommitOffsets::new();
        for (t, p, o) in [("b", 1, 5), ("a", 2, 1), ("b", 0, 7), ("a", 0, 3)] {
            offsets.insert(t, p, NextOffset(o));
        }
        let all: Vec<(&str, i32, i64)> = offsets.iter().map(|(t, p, o)| (t, p, o.get())).collect();
        assert_eq!(all, [("a", 0, 3), ("a", 2, 1), ("b", 0, 7), ("b", 1, 5)]);
        assert_eq!(offsets.len(), 4);
        offsets.retain(|t, _| t == "b");
        assert_eq!(offsets.len(), 2);
        offsets.retain(|_, p| p == 9);
        assert!(offsets.is_empty());
        assert_eq!(offsets, CommitOffsets::new());
    }

    #[test]
    fn json_and_decode_errors_name_the_record() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct N {
            n: u32,
        }
        assert_eq!(record("t", 2, 7).json::<N>().unwrap(), N { n: 1 });
        let err = record("t", 2, 7).json::<Vec<String>>().unwrap_err();
        assert_eq!((err.topic.as_str(), err.partition, err.offset), ("t", 2, 7));
        assert!(
            err.to_string()
                .starts_with("could not decode the record at t[2]@7"),
            "{err}"
        );
    }
}
