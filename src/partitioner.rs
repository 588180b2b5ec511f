//! Stable partitioning: MD5 routing byte-for-byte compatible with Python, or librdkafka's built-ins.
//!
//! Messages with the same key must land on the same partition, in every process, after every
//! restart, and in every language that writes to the topic. Python's `hash()` is salted per
//! process, so the Python services this crate talks to route with
//! `int(hashlib.md5(key).hexdigest(), 16) % n`. [`Md5Partitioner`] computes exactly that number.
//!
//! # Choosing a partitioner
//!
//! [`Partitioning`] is set on the [`ProducerBuilder`](crate::producer::ProducerBuilder):
//!
//! | choice | keyed messages | keyless messages |
//! |---|---|---|
//! | [`Partitioning::Md5`] (default) | `md5(key) % n`, as Python does | round robin over the available partitions |
//! | [`Partitioning::Murmur2Random`] | Java client's `murmur2(key) % n` | random |
//! | [`Partitioning::ConsistentRandom`] | librdkafka's CRC32 | random |
//!
//! MD5 routing works in every send mode of kafka-kit's producer (rdkafka's `FutureProducer`
//! would silently ignore it).
//!
//! # Ordering over availability
//!
//! A keyed message always goes to its own partition, even while that partition has no leader: it
//! waits there (up to `message.timeout.ms`) rather than being reordered onto another partition.
//! Keyless messages have no order to keep, so they go round robin over the partitions that have a
//! leader. (If you set `sticky.partitioning.linger.ms` above 0, librdkafka's sticky partitioner
//! handles keyless messages instead: still spread, in batches.)
//!
//! # Cost
//!
//! An MD5 digest costs about 100 ns per key, a quarter of what librdkafka spends on a whole
//! message. So each thread that sends keeps the partitions of the last few thousand short keys
//! (up to 32 bytes) it routed, and a key seen again costs a hash-table lookup, as cheap as
//! librdkafka's CRC32: the same numbers, computed once. Keys that are all different, or longer,
//! pay the digest every time.
//!
//! # Example
//!
//! ```
//! use kafka_kit::partitioner::Md5Partitioner;
//!
//! // Python: int(hashlib.md5(b"1001").hexdigest(), 16) % 6
//! assert_eq!(Md5Partitioner::partition_for(b"1001", 6), 2);
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};

use md5::{Digest, Md5};
use rdkafka::producer::Partitioner;

/// How the producer picks a partition for a message that doesn't name one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Partitioning {
    /// [`Md5Partitioner`]: Python-compatible MD5 routing for keyed messages, round robin over the
    /// available partitions for keyless ones.
    #[default]
    Md5,
    /// librdkafka's `murmur2_random`: the Java client's default partitioner for keyed messages,
    /// random partitions for keyless ones.
    Murmur2Random,
    /// librdkafka's `consistent_random` (its default): CRC32 of the key, random when keyless.
    ConsistentRandom,
    /// Any other librdkafka `partitioner` value (`random`, `consistent`, `murmur2`, `fnv1a`,
    /// `fnv1a_random`), checked when the producer is built.
    Librdkafka(String),
}

impl Partitioning {
    /// The librdkafka `partitioner` property for built-in choices; `None` for [`Partitioning::Md5`].
    pub fn librdkafka_name(&self) -> Option<&str> {
        match self {
            Partitioning::Md5 => None,
            Partitioning::Murmur2Random => Some("murmur2_random"),
            Partitioning::ConsistentRandom => Some("consistent_random"),
            Partitioning::Librdkafka(name) => Some(name),
        }
    }
}

/// Routes keyed messages by MD5, exactly as Python's `int(hashlib.md5(key).hexdigest(), 16) % n`.
#[derive(Debug, Default)]
pub struct Md5Partitioner {
    next_keyless: AtomicU32,
}

impl Md5Partitioner {
    /// A partitioner; its round robin for keyless messages starts at partition 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The partition of `key` among `partition_count` partitions: the MD5 digest of the key read as
    /// a big-endian 128-bit number, modulo the count. Returns -1 (librdkafka's "unassigned") when
    /// `partition_count` is below 1.
    pub fn partition_for(key: &[u8], partition_count: i32) -> i32 {
        if partition_count < 1 {
            return rdkafka::producer::PARTITION_UA;
        }
        let count = partition_count.unsigned_abs();
        let Some(short) = ShortKey::new(key) else {
            return modulo(digest(key), count);
        };
        let cached = RECENT.try_with(|recent| {
            let mut recent = recent.try_borrow_mut().ok()?;
            if recent.len() >= RECENT_KEYS && !recent.contains_key(&short) {
                recent.clear();
            }
            let seen = recent.entry(short).or_insert_with(|| Seen {
                digest: digest(key),
                count: 0,
                partition: 0,
            });
            if seen.count != count {
                seen.partition = modulo(seen.digest, count);
                seen.count = count;
            }
            Some(seen.partition)
        });
        cached
            .ok()
            .flatten()
            .unwrap_or_else(|| modulo(digest(key), count))
    }

    /// The next partition for a keyless message: round robin, skipping partitions without a leader
    /// (all of them are candidates again when none has one).
    fn next_keyless(&self, partition_count: i32, is_available: impl Fn(i32) -> bool) -> i32 {
        let count = partition_count as u32;
        let start = self.next_keyless.fetch_add(1, Ordering::Relaxed) % count;
        (0..count)
            .map(|i| ((start + i) % count) as i32)
            .find(|&p| is_available(p))
            .unwrap_or(start as i32)
    }
}

/// The key's MD5 digest as a big-endian 128-bit number, as Python's `int(..., 16)` reads it.
fn digest(key: &[u8]) -> u128 {
    u128::from_be_bytes(Md5::digest(key).into())
}

/// `digest % count`; the remainder is below `count`, itself at most `i32::MAX`.
fn modulo(digest: u128, count: u32) -> i32 {
    (digest % u128::from(count)) as i32
}

/// Short keys whose partitions a thread remembers; past this, it forgets them all and starts
/// again (a bound on memory: about 64 bytes a key).
const RECENT_KEYS: usize = 4096;

thread_local! {
    static RECENT: RefCell<HashMap<ShortKey, Seen, Seeded>> =
        RefCell::new(HashMap::with_hasher(Seeded::new()));
}

/// A key of up to 32 bytes, stored inline.
#[derive(PartialEq, Eq)]
struct ShortKey {
    len: u8,
    bytes: [u8; 32],
}

impl ShortKey {
    fn new(key: &[u8]) -> Option<Self> {
        let mut bytes = [0; 32];
        bytes.get_mut(..key.len())?.copy_from_slice(key);
        Some(ShortKey {
            len: key.len() as u8,
            bytes,
        })
    }
}

impl Hash for ShortKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.bytes[..usize::from(self.len)]);
    }
}

/// A key's digest, and its partition for the last partition count asked.
struct Seen {
    digest: u128,
    count: u32,
    partition: i32,
}

/// A fast multiply-rotate hash (FxHash's) with a per-thread random seed, so that no fixed set of
/// keys collides everywhere; the table's bound caps the cost of collisions anyway.
#[derive(Clone, Copy)]
struct Seeded(u64);

impl Seeded {
    fn new() -> Self {
        Seeded(std::collections::hash_map::RandomState::new().hash_one(0u8))
    }
}

impl BuildHasher for Seeded {
    type Hasher = Seeded;

    fn build_hasher(&self) -> Seeded {
        *self
    }
}

impl Hasher for Seeded {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
        self.0 = (self.0.rotate_left(5) ^ bytes.len() as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl Partitioner for Md5Partitioner {
    fn partition(
        &self,
        _topic: &str,
        key: Option<&[u8]>,
        partition_count: i32,
        is_available: impl Fn(i32) -> bool,
    ) -> i32 {
        match key {
            _ if partition_count < 1 => rdkafka::producer::PARTITION_UA,
            Some(key) => Self::partition_for(key, partition_count),
            None => self.next_keyless(partition_count, is_available),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors computed by `scripts/md5_golden.py` with Python's hashlib.
    const GOLDEN: &str = include_str!("../tests/data/md5_golden.txt");

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn matches_python_hashlib_golden_vectors() {
        let mut checked = 0;
        for line in GOLDEN
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let mut fields = line.split(' ');
            let (key, count, expected) = (
                fields.next().unwrap(),
                fields.next().unwrap(),
                fields.next().unwrap(),
            );
            let key = if key == "-" { Vec::new() } else { hex(key) };
            let count: i32 = count.parse().unwrap();
            let expected: i32 = expected.parse().unwrap();
            assert_eq!(
                Md5Partitioner::partition_for(&key, count),
                expected,
                "key of {} bytes, count {count}",
                key.len()
            );
            checked += 1;
        }
        assert!(checked > 500, "only {checked} vectors");
    }

    #[test]
    fn remembered_partitions_are_the_digests_through_count_changes_and_forgetting() {
        // More keys than a thread remembers, each asked under several counts, twice: the second
        // pass hits the remembered keys (and those forgotten since), both must be the digest's.
        for _pass in 0..2 {
            for i in 0..(RECENT_KEYS as u32 * 2 + 7) {
                let key = format!("user-{i}");
                for count in [1, 6, 7, 6, 1000, i32::MAX] {
                    assert_eq!(
                        Md5Partitioner::partition_for(key.as_bytes(), count),
                        modulo(digest(key.as_bytes()), count.unsigned_abs()),
                        "{key} among {count}"
                    );
                }
            }
        }
        let long = [7u8; 33];
        assert_eq!(
            Md5Partitioner::partition_for(&long, 12),
            modulo(digest(&long), 12)
        );
        assert!(ShortKey::new(&long).is_none() && ShortKey::new(&long[..32]).is_some());
    }

    #[test]
    fn keyed_messages_ignore_availability() {
        let p = Md5Partitioner::new();
        let expected = Md5Partitioner::partition_for(b"1001", 6);
        assert_eq!(p.partition("t", Some(b"1001"), 6, |_| false), expected);
    }

    #[test]
    fn keyless_messages_round_robin_over_available_partitions() {
        let p = Md5Partitioner::new();
        let picks: Vec<i32> = (0..6)
            .map(|_| p.partition("t", None, 4, |q| q != 2))
            .collect();
        assert_eq!(picks, [0, 1, 3, 3, 0, 1]);
        // With no partition available the message still gets a partition, and they still spread.
        let picks: Vec<i32> = (0..4)
            .map(|_| p.partition("t", None, 4, |_| false))
            .collect();
        let mut sorted = picks.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2, 3]);
    }

    #[test]
    fn bad_partition_counts_are_unassigned() {
        assert_eq!(Md5Partitioner::partition_for(b"k", 0), -1);
        assert_eq!(Md5Partitioner::partition_for(b"k", -3), -1);
        assert_eq!(Md5Partitioner::new().partition("t", None, 0, |_| true), -1);
    }
}
