//! kafka-kit: Apache Kafka from Rust, safe and pleasant, on top of rdkafka.
//!
//! kafka-kit wraps [`rdkafka`] (librdkafka) in thin modules, one per concept, and adds what every
//! serious Kafka user ends up writing by hand:
//!
//! - [`producer`]: three send modes (await, callback, fire-and-forget) whose results always carry
//!   the message key and a per-message context of your type; JSON values; backpressure instead of
//!   lost messages; flush on close.
//! - [`partitioner`]: MD5 routing byte-for-byte compatible with Python's
//!   `int(hashlib.md5(key).hexdigest(), 16) % n`, in every send mode; murmur2 and librdkafka's
//!   built-ins as alternatives.
//! - [`consumer`]: manual commits that cannot be off by one, an at-least-once processing loop with
//!   a dead-letter topic, rebalance hooks that run on time even while the application is busy,
//!   replay from a timestamp, and consumer lag.
//! - [`headers`]: standard typed headers (trace id, schema version, event type, source, timestamp,
//!   W3C `traceparent`), written and read.
//! - [`config`]: a typed configuration whose `build()` reports every problem by property name, and
//!   whose `Debug` never shows a secret.
//! - [`error`]: one error type with `is_retriable`, `is_fatal` and `txn_requires_abort`.
//! - [`transaction`]: a transactional producer whose errors say retry, abort or stop, and an
//!   exactly-once consume-transform-produce pipeline that stays exact under rebalances, aborts,
//!   crashes and fencing.
//! - [`claim_check`]: large messages by reference, stored in a blob store and verified on the way
//!   back.
//! - [`monitoring`]: typed client statistics (rates, queue depth, batch sizes, broker round trips,
//!   consumer lag) and topic health.
//! - `schema_registry` (feature `schema-registry`): Avro and JSON Schema values in the Confluent
//!   wire format, through a Schema Registry client with caches; readable by other languages'
//!   clients.
//! - [`testing`]: an embedded broker (librdkafka's mock cluster), or the cluster in
//!   `KAFKA_BOOTSTRAP_SERVERS`.
//!
//! # Quick start
//!
//! ```no_run
//! use kafka_kit::config::Preset;
//! use kafka_kit::headers::Headers;
//! use kafka_kit::producer::{Producer, Record};
//! use kafka_kit::testing::TestCluster;
//!
//! # async fn run() -> anyhow::Result<()> {
//! let cluster = TestCluster::from_env_or_embedded()?; // KAFKA_BOOTSTRAP_SERVERS, or in-process
//! let config = cluster.config().preset(Preset::Reliable).build()?;
//! let producer: Producer = Producer::builder(&config).build()?; // MD5 partitioning by default
//!
//! let headers = Headers::new().new_trace_id().event_type("login").source("auth-service");
//! let report = producer
//!     .send(Record::to("user-events").key("1001").payload(r#"{"event":"login"}"#).headers(headers))
//!     .await?;
//! println!("{:?} -> partition {} @ {}", report.key_lossy(), report.partition, report.offset);
//! producer.close().await?;
//! # Ok(()) }
//! ```
//!
//! Run `cargo run --example quickstart` to see it, on the embedded broker, end to end.
// docs.rs builds with `--cfg docsrs` (see Cargo.toml): items of optional features say so.
#![cfg_attr(docsrs, feature(doc_cfg))]
// The crate's lints are in Cargo.toml's `[lints]`. Library code never unwraps (tests, examples may):
// an invariant says why with `expect`, anything else is an error. Not in `[lints]`, which would
// cover the examples and integration tests too.
#![deny(clippy::unwrap_used)]

pub mod claim_check;
pub mod config;
pub mod consumer;
pub mod error;
pub mod headers;
pub mod monitoring;
pub mod partitioner;
pub mod producer;
#[cfg(feature = "schema-registry")]
#[cfg_attr(docsrs, doc(cfg(feature = "schema-registry")))]
pub mod schema_registry;
pub mod testing;
pub mod transaction;

pub use error::{Error, Result};

/// Runs a blocking librdkafka call off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(Error::Background)?
}
pub use rdkafka;

/// Locks a mutex, going on after a panic elsewhere poisoned it: every critical section in
/// kafka-kit leaves its data consistent at each step.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes `bytes` as lowercase hex digits, two per byte (SHA-256 sums, W3C trace context).
pub(crate) fn write_hex(out: &mut impl std::fmt::Write, bytes: &[u8]) -> std::fmt::Result {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().try_for_each(|&b| {
        out.write_char(char::from(DIGITS[usize::from(b >> 4)]))?;
        out.write_char(char::from(DIGITS[usize::from(b & 0xf)]))
    })
}

/// Milliseconds since the Unix epoch, rounded down (towards the past: 1.5 ms before the epoch is
/// -2); times beyond `i64`'s range saturate.
pub(crate) fn unix_millis(time: std::time::SystemTime) -> i64 {
    match time.duration_since(std::time::UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(err) => {
            let before = err.duration();
            let partial = u128::from(before.subsec_nanos() % 1_000_000 != 0);
            i64::try_from(before.as_millis() + partial).map_or(i64::MIN, |ms| -ms)
        }
    }
}

/// The instant `after` from now, saturating: a timeout of `Duration::MAX` means "no deadline"
/// (about a century away) instead of an overflow panic.
pub(crate) fn deadline(after: std::time::Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

/// What [`deadline`] saturates to.
const FAR_FUTURE: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// The README's Rust code blocks, compiled (and run: each defines an `async fn run()` that is not
/// called) as doctests by `cargo test --doc`, so that the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn hex_is_lowercase_two_digits_per_byte() {
        let mut hex = String::new();
        super::write_hex(&mut hex, &[0x00, 0x0f, 0xa5, 0xff]).unwrap();
        assert_eq!(hex, "000fa5ff");
    }

    #[test]
    fn unix_millis_rounds_down() {
        assert_eq!(
            super::unix_millis(UNIX_EPOCH + Duration::from_micros(1500)),
            1
        );
        assert_eq!(
            super::unix_millis(UNIX_EPOCH - Duration::from_micros(1500)),
            -2
        );
        assert_eq!(
            super::unix_millis(UNIX_EPOCH - Duration::from_millis(5)),
            -5
        );
    }
}
