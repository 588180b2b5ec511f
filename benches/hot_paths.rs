//! Per-message hot paths of kafka-kit that need no broker, to show what the wrapper adds over raw
//! rdkafka. Every input is built outside the measured closure; results go through `black_box`.
//!
//! Run with `cargo bench --bench hot_paths`.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kafka_kit::headers::{HeaderReader, Headers};
use kafka_kit::partitioner::Md5Partitioner;
use kafka_kit::producer::DeliveryReport;
use kafka_kit::rdkafka::message::{Message, OwnedMessage, Timestamp};
use kafka_kit::rdkafka::producer::future_producer::Delivery;
use kafka_kit::rdkafka::producer::Partitioner;
use serde::{Deserialize, Serialize};

const PARTITIONS: i32 = 6;

/// Choosing a partition per message: MD5 of the key (Python-compatible routing), directly and
/// through rdkafka's `Partitioner` trait, keyed and keyless (round robin). No baseline: librdkafka's
/// murmur2/CRC32 run in C and cannot be called from Rust, and `std::hash` (SipHash) is neither
/// what rdkafka does nor stable across Rust releases, so it would be a misleading reference.
fn partitioner(c: &mut Criterion) {
    let mut group = c.benchmark_group("partitioner");
    for size in [8usize, 64, 1024] {
        let key = vec![0xa5u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("partition_for", size), &key, |b, key| {
            b.iter(|| Md5Partitioner::partition_for(black_box(key), black_box(PARTITIONS)));
        });
    }

    let partitioner = Md5Partitioner::new();
    let key = [0xa5u8; 8];
    group.throughput(Throughput::Elements(1));
    group.bench_function("partition_keyed_8", |b| {
        b.iter(|| partitioner.partition("orders", Some(black_box(&key[..])), PARTITIONS, |_| true));
    });
    // 1,000 keys in turn (the perf tool's workload): each seen before, so remembered.
    let keys: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let mut i = 0;
    group.bench_function("partition_1000_keys_in_turn", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            partitioner.partition("orders", Some(keys[i].as_bytes()), PARTITIONS, |_| true)
        });
    });
    // A key never seen before every time: the digest, and the bookkeeping of remembering it.
    let mut n = 0u64;
    group.bench_function("partition_new_key_each_time", |b| {
        b.iter(|| {
            n += 1;
            partitioner.partition("orders", Some(&n.to_le_bytes()[..]), PARTITIONS, |_| true)
        });
    });
    group.bench_function("partition_keyless", |b| {
        b.iter(|| partitioner.partition("orders", black_box(None), PARTITIONS, |_| true));
    });
    group.finish();
}

/// Writing and reading the tutorial's five standard headers (trace_id, schema_ver, event_type,
/// timestamp, source) per message. `build_fixed` sets the same five from fixed values, so the
/// difference to `build_tutorial` is the UUID v4 generation and the clock read.
fn headers(c: &mut Criterion) {
    let mut group = c.benchmark_group("headers");
    group.throughput(Throughput::Elements(1));
    group.bench_function("build_tutorial", |b| {
        b.iter(|| {
            Headers::new()
                .new_trace_id()
                .schema_version(black_box("v1.0"))
                .event_type(black_box("checkout"))
                .timestamp_now()
                .source(black_box("order-service"))
                .into_inner()
        });
    });
    group.bench_function("build_fixed", |b| {
        b.iter(|| {
            Headers::new()
                .trace_id(black_box("0b6e7f3c-5a4d-4e1f-9c2b-8d7a6f5e4c3b"))
                .schema_version(black_box("v1.0"))
                .event_type(black_box("checkout"))
                .timestamp_millis(black_box(1_736_937_000_123))
                .source(black_box("order-service"))
                .into_inner()
        });
    });

    let owned = Headers::new()
        .new_trace_id()
        .schema_version("v1.0")
        .event_type("checkout")
        .timestamp_now()
        .source("order-service")
        .into_inner();
    group.bench_function("read_typed", |b| {
        b.iter(|| {
            let reader = HeaderReader::new(Some(black_box(&owned)));
            black_box(reader.trace_id().unwrap());
            black_box(reader.schema_version().unwrap());
            black_box(reader.event_type().unwrap());
            black_box(reader.timestamp_millis().unwrap());
            black_box(reader.source().unwrap());
        });
    });
    group.finish();
}

/// The report assembled per delivered message (16-byte key, 100-byte payload). kafka-kit copies
/// topic and key into a `DeliveryReport` with the caller's context. References: rdkafka 0.39's
/// `FutureProducer` builds a key-less `Delivery` (partition, offset, timestamp) on success, and
/// detaches the whole message (like this `OwnedMessage` clone) only when delivery fails.
fn delivery_report(c: &mut Criterion) {
    let msg = OwnedMessage::new(
        Some(vec![b'p'; 100]),
        Some(vec![b'k'; 16]),
        "orders".to_owned(),
        Timestamp::CreateTime(1_736_937_000_123),
        3,
        42_000,
        None,
    );
    let mut group = c.benchmark_group("delivery_report");
    group.throughput(Throughput::Elements(1));
    group.bench_function("kafka_kit_from_message", |b| {
        b.iter(|| DeliveryReport::from_message(black_box(&msg)).with_context(42u64));
    });
    group.bench_function("rdkafka_future_delivery", |b| {
        b.iter(|| {
            let msg = black_box(&msg);
            Delivery {
                partition: msg.partition(),
                offset: msg.offset(),
                timestamp: msg.timestamp(),
            }
        });
    });
    group.bench_function("rdkafka_owned_message_clone", |b| {
        b.iter(|| black_box(&msg).clone());
    });
    group.finish();
}

/// A small user event, as sent with `Producer::send_json`.
#[derive(Serialize, Deserialize)]
struct UserEvent {
    user_id: u64,
    event_type: String,
    timestamp: i64,
    properties: BTreeMap<String, String>,
}

/// JSON encoding as `Producer::send_json` does it (`serde_json::to_vec`), and decoding it back.
fn json(c: &mut Criterion) {
    let event = UserEvent {
        user_id: 1001,
        event_type: "checkout".to_owned(),
        timestamp: 1_736_937_000_123,
        properties: BTreeMap::from([
            ("currency".to_owned(), "EUR".to_owned()),
            ("cart_id".to_owned(), "c-7f3a".to_owned()),
        ]),
    };
    let encoded = serde_json::to_vec(&event).unwrap();
    let mut group = c.benchmark_group("json");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("to_vec", |b| {
        b.iter(|| serde_json::to_vec(black_box(&event)).unwrap());
    });
    group.bench_function("from_slice", |b| {
        b.iter(|| serde_json::from_slice::<UserEvent>(black_box(&encoded)).unwrap());
    });
    group.finish();
}

criterion_group!(benches, partitioner, headers, delivery_report, json);
criterion_main!(benches);
