//! What a consumer hands out, and the offsets it commits.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Message, OwnedHeaders, OwnedMessage};
use rdkafka::{Offset, Timestamp, TopicPartitionList};
use serde::de::DeserializeOwned;

use crate::headers::HeaderReader;

/// A record read from Kafka: key, value, headers, topic, partition, offset and timestamp.
///
/// The records fetched together are copied out of librdkafka's buffers into one buffer of their
/// own, shared: one allocation for up to 64 KiB of records, rather than three per record. A record
/// kept after its neighbours are gone keeps that buffer alive.
pub struct ConsumerRecord {
    /// The buffer of the record's batch: its topic, key and value are at `start`, in that order.
    data: Arc<[u8]>,
    start: usize,
    topic_len: usize,
    /// Lengths; `None` for an absent key or value (as opposed to an empty one).
    key_len: Option<usize>,
    payload_len: Option<usize>,
    partition: i32,
    offset: i64,
    timestamp: Timestamp,
    headers: Option<OwnedHeaders>,
    /// The consumer's assignment generation when the record was fetched: a record from an older
    /// generation may belong to a partition this consumer no longer owns.
    pub(crate) generation: u64,
}

/// Records fetched together share a buffer up to this size (a single larger record has its own).
pub(crate) const SHARED_BUFFER: usize = 64 * 1024;

/// The bytes of a record's key and value (what a batch's size is counted in; the topic adds
/// little, and costs a C string's length and UTF-8 check to read).
pub(crate) fn key_and_value_len(message: &impl Message) -> usize {
    message.key().map_or(0, <[u8]>::len) + message.payload().map_or(0, <[u8]>::len)
}

impl ConsumerRecord {
    /// The records of `messages` (each with the assignment generation it was fetched in), copied
    /// into one buffer, with the headers `headers` gives.
    fn copy_all<M: Message>(
        messages: &[(M, u64)],
        headers: impl Fn(&M) -> Option<OwnedHeaders>,
    ) -> Vec<Self> {
        let parts: Vec<_> = messages
            .iter()
            .map(|(m, _)| (m.topic(), m.key(), m.payload()))
            .collect();
        let len = |bytes: Option<&[u8]>| bytes.map_or(0, <[u8]>::len);
        let mut data = Vec::with_capacity(
            parts
                .iter()
                .map(|(t, k, p)| t.len() + len(*k) + len(*p))
                .sum(),
        );
        let mut records = Vec::with_capacity(messages.len());
        for (topic, key, payload) in parts {
            let start = data.len();
            data.extend_from_slice(topic.as_bytes());
            data.extend_from_slice(key.unwrap_or_default());
            data.extend_from_slice(payload.unwrap_or_default());
            records.push((
                start,
                topic.len(),
                key.map(<[u8]>::len),
                payload.map(<[u8]>::len),
            ));
        }
        let data: Arc<[u8]> = data.into();
        records
            .into_iter()
            .zip(messages)
            .map(
                |((start, topic_len, key_len, payload_len), (message, generation))| {
                    ConsumerRecord {
                        data: data.clone(),
                        start,
                        topic_len,
                        key_len,
                        payload_len,
                        partition: message.partition(),
                        offset: message.offset(),
                        timestamp: message.timestamp(),
                        headers: headers(message),
                        generation: *generation,
                    }
                },
            )
            .collect()
    }

    /// The records the consumer fetched together, in order.
    pub(crate) fn fetched(messages: &[(BorrowedMessage<'_>, u64)]) -> Vec<Self> {
        Self::copy_all(messages, |m| m.headers().map(BorrowedHeaders::detach))
    }

    /// A record of `message`: for tests, which make their records up.
    #[cfg(test)]
    pub(crate) fn new(message: &OwnedMessage, generation: u64) -> Self {
        let mut records =
            Self::copy_all(&[(message.clone(), generation)], |m| m.headers().cloned());
        records.remove(0)
    }

    /// The record's topic, key and value, in that order.
    fn bytes(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        // Copied from a `&str`: always UTF-8.
        std::str::from_utf8(&self.bytes()[..self.topic_len]).unwrap_or_default()
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The record's own offset. To commit, use [`next_offset`](Self::next_offset): Kafka stores the
    /// next offset to read.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The offset to commit once this record is processed: its own offset plus one.
    pub fn next_offset(&self) -> NextOffset {
        NextOffset(self.offset + 1)
    }

    /// The record timestamp.
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// The key.
    pub fn key(&self) -> Option<&[u8]> {
        let len = self.key_len?;
        self.bytes().get(self.topic_len..self.topic_len + len)
    }

    /// The key as text, if it is UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value.
    pub fn payload(&self) -> Option<&[u8]> {
        let len = self.payload_len?;
        let start = self.topic_len + self.key_len.unwrap_or(0);
        self.bytes().get(start..start + len)
    }

    /// The headers, read typed.
    pub fn headers(&self) -> HeaderReader<'_, OwnedHeaders> {
        HeaderReader::new(self.headers.as_ref())
    }

    /// The headers as rdkafka holds them.
    pub(crate) fn owned_headers(&self) -> Option<&OwnedHeaders> {
        self.headers.as_ref()
    }

    /// Decodes the value as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        let payload = self
            .payload()
            .ok_or_else(|| self.decode_error("the record has no value".into()))?;
        serde_json::from_slice(payload).map_err(|e| self.decode_error(e.to_string()))
    }

    /// The record as an rdkafka message (a copy).
    pub fn to_message(&self) -> OwnedMessage {
        OwnedMessage::new(
            self.payload().map(<[u8]>::to_vec),
            self.key().map(<[u8]>::to_vec),
            self.topic().to_owned(),
            self.timestamp,
            self.partition,
            self.offset,
            self.headers.clone(),
        )
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
        ConsumerRecord::new(&message, 0)
    }

    #[test]
    fn the_parts_of_a_record_come_back_apart() {
        let whole = record("orders", 3, 9);
        assert_eq!(whole.topic(), "orders");
        assert_eq!(whole.key(), Some(&b"k"[..]));
        assert_eq!(whole.payload(), Some(&b"{\"n\":1}"[..]));
        let message = OwnedMessage::new(
            None,
            Some(Vec::new()),
            "t".into(),
            Timestamp::NotAvailable,
            0,
            1,
            None,
        );
        let bare = ConsumerRecord::new(&message, 0);
        assert_eq!(
            (bare.topic(), bare.key(), bare.payload()),
            ("t", Some(&b""[..]), None)
        );
        let copy = whole.to_message();
        assert_eq!(
            (copy.topic(), copy.key(), copy.offset()),
            ("orders", Some(&b"k"[..]), 9)
        );
    }

    #[test]
    fn records_copied_together_share_one_buffer_and_keep_their_parts() {
        let messages: Vec<OwnedMessage> = (0..3)
            .map(|i| {
                OwnedMessage::new(
                    (i != 1).then(|| format!("value-{i}").into_bytes()),
                    (i != 2).then(|| format!("k{i}").into_bytes()),
                    format!("topic-{i}"),
                    Timestamp::CreateTime(i),
                    i as i32,
                    10 + i,
                    None,
                )
            })
            .collect();
        let messages: Vec<_> = messages.into_iter().map(|m| (m, 4)).collect();
        let records = ConsumerRecord::copy_all(&messages, |_| None);
        assert!(records
            .iter()
            .all(|r| Arc::ptr_eq(&r.data, &records[0].data)));
        let parts: Vec<_> = records
            .iter()
            .map(|r| (r.topic(), r.key(), r.payload(), r.partition(), r.offset()))
            .collect();
        assert_eq!(
            parts,
            [
                ("topic-0", Some(&b"k0"[..]), Some(&b"value-0"[..]), 0, 10),
                ("topic-1", Some(&b"k1"[..]), None, 1, 11),
                ("topic-2", None, Some(&b"value-2"[..]), 2, 12),
            ]
        );
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
