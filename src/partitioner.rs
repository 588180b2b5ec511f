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
use std::hash::BuildHasher;
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
        if key.len() > MAX_REMEMBERED_KEY {
            return modulo(digest(key), count);
        }
        RECENT
            .try_with(|recent| {
                let mut recent = recent.try_borrow_mut().ok()?;
                Some(recent.partition(key, count))
            })
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

/// Keys up to this long are remembered.
const MAX_REMEMBERED_KEY: usize = 32;

/// Sets of the table of remembered keys, two keys each (4,096 keys, 256 KiB per thread that sends).
const SETS: usize = 1 << SET_BITS;
const SET_BITS: u32 = 11;

thread_local! {
    static RECENT: RefCell<Recent> = RefCell::new(Recent::new());
}

/// The partitions of the short keys a thread routed last: a two-way set-associative table, filled
/// on first use, where a new key takes the place of the older of its set's two.
struct Recent {
    /// Picks a key's set: seeded per thread, so that no fixed set of keys collides everywhere.
    seed: u64,
    sets: Vec<[Seen; 2]>,
}

/// A remembered key: its digest, and its partition for the last partition count asked.
#[derive(Clone, Copy)]
struct Seen {
    len: u8,
    key: [u8; MAX_REMEMBERED_KEY],
    /// 0 for an empty entry (no count is 0).
    count: u32,
    partition: i32,
    digest: u128,
}

impl Recent {
    fn new() -> Self {
        Recent {
            seed: std::collections::hash_map::RandomState::new().hash_one(0u8),
            sets: Vec::new(),
        }
    }

    /// The partition of `key` (at most [`MAX_REMEMBERED_KEY`] bytes) among `count`.
    fn partition(&mut self, key: &[u8], count: u32) -> i32 {
        if self.sets.is_empty() {
            let empty = Seen {
                len: 0,
                key: [0; MAX_REMEMBERED_KEY],
                count: 0,
                partition: 0,
                digest: 0,
            };
            self.sets = vec![[empty; 2]; SETS];
        }
        // The hash's top bits: its low ones depend only on the low bytes of each word.
        let set = &mut self.sets[(fx_hash(self.seed, key) >> (u64::BITS - SET_BITS)) as usize];
        let same = |seen: &Seen| seen.count != 0 && &seen.key[..usize::from(seen.len)] == key;
        let way = match (same(&set[0]), same(&set[1])) {
            (true, _) => 0,
            (_, true) => {
                // Most recently used first.
                set.swap(0, 1);
                0
            }
            _ => {
                set[1] = set[0];
                let mut bytes = [0; MAX_REMEMBERED_KEY];
                bytes[..key.len()].copy_from_slice(key);
                set[0] = Seen {
                    len: key.len() as u8,
                    key: bytes,
                    count: 0,
                    partition: 0,
                    digest: digest(key),
                };
                0
            }
        };
        let seen = &mut set[way];
        if seen.count != count {
            seen.partition = modulo(seen.digest, count);
            seen.count = count;
        }
        seen.partition
    }
}

/// FxHash's multiply-rotate over 8-byte words, from `seed`.
fn fx_hash(seed: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut hash = seed;
    for chunk in bytes.chunks(8) {
        let mut word = [0; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        hash = (hash.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
    }
    (hash.rotate_left(5) ^ bytes.len() as u64).wrapping_mul(K)
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
            for i in 0..(SETS as u32 * 4 + 7) {
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
        assert_eq!(
            Md5Partitioner::partition_for(&long[..32], 12),
            modulo(digest(&long[..32]), 12)
        );
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
