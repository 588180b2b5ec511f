//! Shared test helpers and the producer scenarios that run on every tier (embedded broker, and a
//! real broker from testcontainers or `KAFKA_BOOTSTRAP_SERVERS`).
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context as _};
use kafka_kit::config::{KafkaConfig, Preset};
use kafka_kit::headers::{HeaderReader, Headers, TraceParent};
use kafka_kit::partitioner::{Md5Partitioner, Partitioning};
use kafka_kit::producer::{Producer, Record};
use kafka_kit::rdkafka::error::RDKafkaErrorCode;
use kafka_kit::rdkafka::Message;
use kafka_kit::testing::{unless_fatal, TestCluster};

pub mod eos;
pub mod real_broker;

#[allow(unused_imports)] // the scenarios run from tests/real_broker.rs
pub use eos::{
    exactly_once_survives_a_crash, fenced_producer_is_unusable, transactional_producer_flow,
};

pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A topic name no earlier run has used (real brokers keep topics between runs).
pub fn unique_topic(prefix: &str) -> String {
    kafka_kit::testing::unique_name(prefix)
}

/// Creates `topic` with one partition per count, and writes `counts[p]` records to partition `p`,
/// whose payloads are their index ("0", "1", …).
pub async fn fill_partitions(
    cluster: &TestCluster,
    topic: &str,
    counts: &[i64],
) -> anyhow::Result<()> {
    cluster.create_topic(topic, counts.len() as i32).await?;
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    for (partition, &count) in counts.iter().enumerate() {
        for i in 0..count {
            let payload = i.to_string();
            producer
                .send(
                    Record::to(topic)
                        .partition(partition as i32)
                        .payload(&payload),
                )
                .await?;
        }
    }
    producer.close().await?;
    Ok(())
}

fn config(cluster: &TestCluster) -> anyhow::Result<KafkaConfig> {
    Ok(cluster
        .config()
        .preset(Preset::Reliable)
        .linger(Duration::from_millis(5))
        .build()?)
}

/// Every send mode delivers; reports carry key and context; the broker holds each keyed message
/// on its MD5 partition, in send order per key.
pub async fn every_send_mode_delivers(cluster: &TestCluster) -> anyhow::Result<()> {
    let topic = unique_topic("send-modes");
    cluster.create_topic(&topic, 6).await?;
    let producer: Producer<usize> = Producer::builder(&config(cluster)?).build()?;
    let key = |i: usize| format!("user-{}", i % 10);

    // await, one at a time
    let mut offsets = BTreeMap::new();
    for i in 0..20 {
        let k = key(i);
        let payload = format!("await-{i}");
        let report = producer
            .send(Record::to(&topic).key(&k).payload(&payload).context(i))
            .await?;
        ensure!(
            report.context == i,
            "context {} for message {i}",
            report.context
        );
        ensure!(
            report.key.as_deref() == Some(k.as_bytes()),
            "key {:?} for {k}",
            report.key_lossy()
        );
        ensure!(report.topic == topic);
        ensure!(report.partition == Md5Partitioner::partition_for(k.as_bytes(), 6));
        offsets.insert(payload, (report.partition, report.offset));
    }

    // pipelined await
    let mut futures = Vec::new();
    for i in 20..40 {
        let (k, payload) = (key(i), format!("pipelined-{i}"));
        futures.push((
            i,
            k.clone(),
            payload.clone(),
            producer
                .enqueue(Record::to(&topic).key(&k).payload(&payload).context(i))
                .await?,
        ));
    }
    for (i, k, payload, future) in futures {
        let report = future.await?;
        ensure!(report.context == i && report.key.as_deref() == Some(k.as_bytes()));
        offsets.insert(payload, (report.partition, report.offset));
    }

    // callback
    let reports = Arc::new(Mutex::new(Vec::new()));
    for i in 40..60 {
        let (k, payload) = (key(i), format!("callback-{i}"));
        let (reports, sent) = (reports.clone(), payload.clone());
        producer
            .send_with_callback(
                Record::to(&topic).key(&k).payload(&payload).context(i),
                move |result| {
                    reports.lock().unwrap().push((sent, result));
                },
            )
            .await?;
    }
    producer.flush(Duration::from_secs(30)).await?;
    let reports = std::mem::take(&mut *reports.lock().unwrap());
    ensure!(reports.len() == 20, "{} callbacks ran", reports.len());
    for (payload, result) in reports {
        let report = result?;
        let i: usize = payload.trim_start_matches("callback-").parse()?;
        ensure!(report.context == i && report.key.as_deref() == Some(key(i).as_bytes()));
        offsets.insert(payload, (report.partition, report.offset));
    }

    // fire-and-forget
    for i in 60..80 {
        let (k, payload) = (key(i), format!("forget-{i}"));
        producer
            .send_and_forget(Record::to(&topic).key(&k).payload(&payload))
            .await?;
    }
    producer.flush(Duration::from_secs(30)).await?;
    let stats = producer.stats();
    ensure!(
        stats.enqueued == 80 && stats.delivered == 80 && stats.failed == 0,
        "{stats:?}"
    );

    // What the broker holds: all 80, each on its key's MD5 partition, at the reported offset,
    // and per key in send order.
    let messages = cluster.read_topic(&topic, 80, READ_TIMEOUT).await?;
    ensure!(
        messages.len() == 80,
        "the broker holds {} messages",
        messages.len()
    );
    let mut last_seq_per_key = BTreeMap::new();
    for m in &messages {
        let k = m.key().context("no key")?;
        let payload = std::str::from_utf8(m.payload().context("no payload")?)?;
        ensure!(
            m.partition() == Md5Partitioner::partition_for(k, 6),
            "{payload} on partition {}",
            m.partition()
        );
        if let Some(&(partition, offset)) = offsets.get(payload) {
            ensure!(
                (partition, offset) == (m.partition(), m.offset()),
                "{payload}: report said {partition}@{offset}"
            );
        }
        let seq: usize = payload.rsplit('-').next().unwrap().parse()?;
        if let Some(previous) = last_seq_per_key.insert(k.to_vec(), seq) {
            ensure!(previous < seq, "key order broken: {previous} before {seq}");
        }
    }
    producer.close().await?;
    Ok(())
}

/// Every standard header, and a custom one, arrives as sent and reads back typed.
pub async fn headers_round_trip(cluster: &TestCluster) -> anyhow::Result<()> {
    let topic = unique_topic("headers");
    cluster.create_topic(&topic, 3).await?;
    let producer: Producer = Producer::builder(&config(cluster)?).build()?;
    let traceparent = TraceParent::random(true);
    let headers = Headers::new()
        .trace_id("6f1c2b8e-0d4a-4c1e-9d0b-1f2e3d4c5b6a")
        .span_id("span-7")
        .schema_version("v1.0")
        .event_type("checkout")
        .source("order-service")
        .timestamp_millis(1_736_937_000_123)
        .traceparent(&traceparent)
        .insert("tenant", b"\x00\x01binary");
    producer
        .send(
            Record::to(&topic)
                .key("1001")
                .payload("{}")
                .headers(headers),
        )
        .await?;

    let messages = cluster.read_topic(&topic, 1, READ_TIMEOUT).await?;
    let message = messages.first().context("nothing arrived")?;
    let read = HeaderReader::new(message.headers());
    ensure!(read.trace_id()? == Some("6f1c2b8e-0d4a-4c1e-9d0b-1f2e3d4c5b6a"));
    ensure!(read.span_id()? == Some("span-7"));
    ensure!(read.schema_version()? == Some("v1.0"));
    ensure!(read.event_type()? == Some("checkout"));
    ensure!(read.source()? == Some("order-service"));
    ensure!(read.timestamp_millis()? == Some(1_736_937_000_123));
    ensure!(read.traceparent()? == Some(traceparent));
    ensure!(read.get("tenant") == Some(&b"\x00\x01binary"[..]));
    ensure!(read.get("absent").is_none());
    Ok(())
}

/// An oversized message is refused at once and handed back with key, payload and context.
pub async fn oversized_message_comes_back(cluster: &TestCluster) -> anyhow::Result<()> {
    let topic = unique_topic("oversized");
    cluster.create_topic(&topic, 1).await?;
    let producer: Producer<&'static str> = Producer::builder(&config(cluster)?).build()?;
    let payload = vec![7u8; 2_000_000]; // above message.max.bytes (1 MB by default)
    let err = producer
        .send(
            Record::to(&topic)
                .key("big-1")
                .payload(&payload)
                .context("ctx-big"),
        )
        .await
        .err()
        .context("a 2 MB message was accepted")?;
    ensure!(
        err.error.code() == Some(RDKafkaErrorCode::MessageSizeTooLarge),
        "{err}"
    );
    ensure!(err.context == "ctx-big");
    ensure!(err.message.key.as_deref() == Some(&b"big-1"[..]));
    ensure!(
        err.message.payload.as_deref() == Some(&payload[..]),
        "payload not handed back whole"
    );
    ensure!(err.message.topic == topic);
    Ok(())
}

/// A message to a topic that doesn't exist, with auto-creation off, fails with its key and
/// context, in the await and the callback modes.
pub async fn missing_topic_fails_with_key_and_context(cluster: &TestCluster) -> anyhow::Result<()> {
    let topic = unique_topic("missing");
    let config = cluster
        .config()
        .set("allow.auto.create.topics", "false")
        .set("topic.metadata.propagation.max.ms", "500")
        .delivery_timeout(Duration::from_secs(5))
        .build()?;
    let producer: Producer<u32> = Producer::builder(&config).build()?;
    let err = producer
        .send(Record::to(&topic).key("k-await").payload("p").context(41))
        .await
        .err()
        .context("a message to a missing topic was delivered")?;
    ensure!(
        err.context == 41 && err.message.key.as_deref() == Some(&b"k-await"[..]),
        "{err:?}"
    );
    ensure!(err.message.payload.as_deref() == Some(&b"p"[..]));
    ensure!(
        matches!(
            err.error.code(),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
        ),
        "unexpected error {err}"
    );

    // Once librdkafka knows the topic is missing it refuses at enqueue time: the error comes back
    // from the call instead of through the callback, with the same key and context.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sent = producer
        .send_with_callback(
            Record::to(&topic)
                .key("k-callback")
                .payload("p")
                .context(42),
            move |r| {
                let _ = tx.send(r);
            },
        )
        .await;
    let err = match sent {
        Err(refused) => refused,
        Ok(()) => rx.await?.err().context("callback reported success")?,
    };
    ensure!(
        err.context == 42 && err.message.key.as_deref() == Some(&b"k-callback"[..]),
        "{err:?}"
    );
    Ok(())
}

/// Keyed messages follow the Java client's murmur2 with `Partitioning::Murmur2Random`.
pub async fn murmur2_matches_java(cluster: &TestCluster) -> anyhow::Result<()> {
    let topic = unique_topic("murmur2");
    cluster.create_topic(&topic, 7).await?;
    let producer: Producer = Producer::builder(&config(cluster)?)
        .partitioning(Partitioning::Murmur2Random)
        .build()?;
    // murmur2 values from Apache Kafka's UtilsTest; the Java partition is (h & 0x7fffffff) % n.
    let vectors: [(&str, i32); 5] = [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58897971,
        ),
    ];
    for (key, hash) in vectors {
        let report = producer
            .send(Record::to(&topic).key(key).payload("x"))
            .await?;
        let java = (hash & 0x7fff_ffff) % 7;
        ensure!(
            report.partition == java,
            "{key}: partition {} but Java picks {java}",
            report.partition
        );
    }
    Ok(())
}

/// Keyless messages spread round robin over the partitions, never pinned to one.
pub async fn keyless_messages_spread(cluster: &TestCluster) -> anyhow::Result<()> {
    let topic = unique_topic("keyless");
    cluster.create_topic(&topic, 4).await?;
    let producer: Producer = Producer::builder(&config(cluster)?).build()?;
    let mut per_partition = BTreeMap::new();
    for i in 0..40 {
        let report = producer
            .send(Record::to(&topic).payload(&format!("m{i}")))
            .await?;
        *per_partition.entry(report.partition).or_insert(0) += 1;
    }
    // Round robin over the partitions with a leader: near-even, though librdkafka may call the
    // partitioner more than once for a message (before the leaders are known, say).
    ensure!(
        per_partition.len() == 4 && per_partition.values().all(|&n| (5..=15).contains(&n)),
        "{per_partition:?}"
    );
    Ok(())
}

/// Typed JSON values go out as JSON.
pub async fn json_values(cluster: &TestCluster) -> anyhow::Result<()> {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Event {
        user_id: u32,
        event_type: String,
    }
    let topic = unique_topic("json");
    cluster.create_topic(&topic, 1).await?;
    let producer: Producer = Producer::builder(&config(cluster)?).build()?;
    let event = Event {
        user_id: 1001,
        event_type: "login".into(),
    };
    producer
        .send_json(Record::to(&topic).key("1001"), &event)
        .await?;
    let messages = cluster.read_topic(&topic, 1, READ_TIMEOUT).await?;
    let back: Event = serde_json::from_slice(
        messages
            .first()
            .context("nothing arrived")?
            .payload()
            .unwrap_or_default(),
    )?;
    ensure!(back == event);
    Ok(())
}

/// A full local queue makes senders wait, not lose messages; dropping the producer flushes.
pub async fn backpressure_and_flush_on_drop(cluster: &TestCluster) -> anyhow::Result<()> {
    let topic = unique_topic("backpressure");
    cluster.create_topic(&topic, 2).await?;
    let config = cluster
        .config()
        .set("queue.buffering.max.messages", "5")
        .build()?;
    let producer: Producer = Producer::builder(&config).build()?;
    for i in 0..300 {
        let payload = format!("m{i}");
        producer
            .send_and_forget(Record::to(&topic).key(&payload).payload(&payload))
            .await?;
    }
    // Dropping the last handle flushes (it blocks, so not on the runtime's thread).
    tokio::task::spawn_blocking(move || drop(producer)).await?;
    let messages = cluster.read_topic(&topic, 300, READ_TIMEOUT).await?;
    ensure!(
        messages.len() == 300,
        "only {} of 300 messages arrived",
        messages.len()
    );
    Ok(())
}

/// Replay from a timestamp, on a broker that looks offsets up by time (not the embedded one):
/// each partition starts at its first record at or after the time, a partition with none starts
/// at the end, and a stop time ends the replay by itself.
pub async fn replay_from_a_timestamp(cluster: &TestCluster) -> anyhow::Result<()> {
    use kafka_kit::consumer::{Consumer, StartAt, StopAt};
    let topic = unique_topic("replay");
    cluster.create_topic(&topic, 3).await?;
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let base = now - 3_600_000; // an hour ago
    for i in 0..10 {
        // Partition 0: one record a second from `base`; partition 1: all before the replay time;
        // partition 2: all after it.
        producer
            .send(
                Record::to(&topic)
                    .partition(0)
                    .timestamp(base + i * 1000)
                    .payload(&format!("p0-{i}")),
            )
            .await?;
        producer
            .send(
                Record::to(&topic)
                    .partition(1)
                    .timestamp(base - 600_000 + i)
                    .payload(&format!("p1-{i}")),
            )
            .await?;
        producer
            .send(
                Record::to(&topic)
                    .partition(2)
                    .timestamp(base + 60_000 + i)
                    .payload(&format!("p2-{i}")),
            )
            .await?;
    }
    producer.close().await?;

    let read = |start: StartAt, stop: StopAt| -> anyhow::Result<Consumer> {
        Ok(Consumer::builder(&cluster.consumer_config().build()?)
            .group_id(unique_topic("replay-group"))
            .topics([topic.as_str()])
            .start_at(start)
            .stop_at(stop)
            .build()?)
    };
    let collect = |consumer: Consumer| async move {
        use futures::StreamExt;
        let records = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            consumer.collect::<Vec<_>>(),
        )
        .await
        .context("the replay did not end")?;
        // Errors the consumer recovered from are skipped; a fatal one fails the test.
        let mut payloads = std::collections::BTreeSet::new();
        for record in records {
            if let Some(record) = unless_fatal(record)? {
                let payload = String::from_utf8_lossy(record.payload().unwrap_or_default());
                payloads.insert(payload.into_owned());
            }
        }
        anyhow::Ok(payloads)
    };

    // From base + 5 s to base + 70 s: p0-5..p0-9 and every p2 record; nothing of p1.
    let got = collect(read(
        StartAt::Time(base + 5_000),
        StopAt::Time(base + 70_000),
    )?)
    .await?;
    let expected: std::collections::BTreeSet<String> = (5..10)
        .map(|i| format!("p0-{i}"))
        .chain((0..10).map(|i| format!("p2-{i}")))
        .collect();
    ensure!(got == expected, "replayed {got:?}, expected {expected:?}");

    // From base + 5 s to base + 7.5 s: p0-5, p0-6, p0-7 only.
    let got = collect(read(
        StartAt::Time(base + 5_000),
        StopAt::Time(base + 7_500),
    )?)
    .await?;
    let expected: std::collections::BTreeSet<String> = (5..8).map(|i| format!("p0-{i}")).collect();
    ensure!(got == expected, "replayed {got:?}, expected {expected:?}");
    Ok(())
}
