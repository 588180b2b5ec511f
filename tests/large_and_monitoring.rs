//! Large messages by reference, client statistics and topic health, on the embedded broker (or
//! on `KAFKA_BOOTSTRAP_SERVERS` when it is set).

mod common;

use std::time::Duration;

use anyhow::{ensure, Context as _};
use futures::StreamExt;
use kafka_kit::claim_check::{BlobRef, ClaimCheck, ClaimCheckError, FsBlobStore};
use kafka_kit::consumer::{Consumer, ConsumerRecord, StartAt};
use kafka_kit::headers::Headers;
use kafka_kit::monitoring::topic_health;
use kafka_kit::producer::{Producer, Record};
use kafka_kit::testing::{next_unless_fatal, TestCluster};

fn cluster() -> anyhow::Result<TestCluster> {
    common::init_tracing();
    Ok(TestCluster::from_env_or_embedded()?)
}

fn blob_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(kafka_kit::testing::unique_name("kafka-kit-test-blobs"))
}

async fn read(
    cluster: &TestCluster,
    topic: &str,
    count: usize,
) -> anyhow::Result<Vec<ConsumerRecord>> {
    let mut consumer = Consumer::builder(&cluster.consumer_config().build()?)
        .assign(topic, [0])
        .start_at(StartAt::Beginning)
        .build()?;
    let mut records = Vec::new();
    while records.len() < count {
        let record =
            tokio::time::timeout(Duration::from_secs(30), next_unless_fatal(&mut consumer))
                .await?
                .context("stream ended")??;
        records.push(record);
    }
    consumer.close().await?;
    Ok(records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_check_round_trip_small_inline_large_by_reference() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("reports");
    cluster.create_topic(&topic, 1).await?;
    let dir = blob_dir();
    let claims = ClaimCheck::new(FsBlobStore::new(&dir)?).threshold(64 * 1024);
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;

    let small = b"{\"report\":\"tiny\"}".to_vec();
    let large: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect(); // above the 1 MB message limit
    for (key, payload) in [("small", &small), ("large", &large)] {
        let out = claims
            .prepare(&topic, payload, "application/octet-stream")
            .await?;
        ensure!(
            out.reference().is_some() == (key == "large"),
            "{key}: wrong way to travel"
        );
        let headers = out.mark(Headers::new().event_type("report_ready"));
        producer
            .send(
                Record::to(&topic)
                    .key(key)
                    .payload(out.payload())
                    .headers(headers),
            )
            .await?;
    }
    let records = read(&cluster, &topic, 2).await?;
    // What Kafka holds: the small payload itself, and a reference of a few hundred bytes.
    ensure!(records[0].payload() == Some(&small[..]));
    let reference: BlobRef = records[1].json()?;
    ensure!(
        records[1].payload().map_or(0, <[u8]>::len) < 1000,
        "the reference is not small"
    );
    ensure!(
        reference.size == large.len() as u64
            && reference.content_type == "application/octet-stream"
    );
    ensure!(
        records[1].headers().event_type()? == Some("report_ready"),
        "the caller's headers were lost"
    );
    // What the consumer gets: the payloads, whole.
    ensure!(claims.resolve(&records[0]).await?.as_ref() == &small[..]);
    ensure!(
        claims.resolve(&records[1]).await?.as_ref() == &large[..],
        "the large payload came back different"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_missing_blobs_are_errors_never_garbage() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("blobs");
    cluster.create_topic(&topic, 1).await?;
    let dir = blob_dir();
    let claims = ClaimCheck::new(FsBlobStore::new(&dir)?).threshold(0);
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    let mut paths = Vec::new();
    for key in ["corrupt", "missing"] {
        let out = claims
            .prepare(&topic, b"the real report", "text/plain")
            .await?;
        let location = out.reference().context("not stored")?.location.clone();
        paths.push(std::path::PathBuf::from(
            location.trim_start_matches("file://"),
        ));
        producer
            .send(
                Record::to(&topic)
                    .key(key)
                    .payload(out.payload())
                    .headers(out.mark(Headers::new())),
            )
            .await?;
    }
    std::fs::write(&paths[0], b"the fake report")?; // same size, other bytes
    std::fs::remove_file(&paths[1])?;

    let records = read(&cluster, &topic, 2).await?;
    let corrupt = claims
        .resolve(&records[0])
        .await
        .err()
        .context("a corrupt blob was handed on")?;
    ensure!(
        matches!(corrupt, ClaimCheckError::ChecksumMismatch { .. }),
        "{corrupt}"
    );
    let missing = claims
        .resolve(&records[1])
        .await
        .err()
        .context("a missing blob resolved")?;
    ensure!(
        matches!(missing, ClaimCheckError::Missing { .. }),
        "{missing}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_snapshots_arrive_with_rates_and_lag() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("stats");
    cluster.create_topic(&topic, 1).await?;
    let config = cluster
        .config()
        .statistics_interval(Duration::from_millis(100))
        .build()?;
    let producer: Producer = Producer::builder(&config).build()?;
    let mut stats = producer.client_stats();
    for i in 0..50 {
        producer
            .send_and_forget(Record::to(&topic).payload(&format!("m{i}")))
            .await?;
    }
    producer.flush(Duration::from_secs(10)).await?;
    // Rates, batch sizes and round trips are per window: look for them in whichever reports
    // cover the sends.
    let (mut rate, mut batches, mut rtt, mut sent) = (false, false, false, 0);
    tokio::time::timeout(Duration::from_secs(10), async {
        while !(rate && batches && rtt && sent >= 50) {
            let s = stats.next().await.context("the statistics stream ended")?;
            ensure!(s.send_errors == 0, "{s:?}");
            rate |= s.messages_sent_per_sec > 0.0;
            batches |= s.avg_batch_messages > 0.0 && s.avg_batch_bytes > 0.0;
            rtt |= s
                .brokers
                .iter()
                .any(|b| b.rtt_avg_us.is_some_and(|us| us > 0));
            sent = s.messages_sent;
        }
        Ok(())
    })
    .await
    .with_context(|| format!("rate {rate}, batches {batches}, rtt {rtt}, sent {sent}"))??;

    // The consumer's reports carry its lag per partition: 50 to read, then 0 once it has.
    let consumer_config = cluster
        .consumer_config()
        .statistics_interval(Duration::from_millis(100))
        .build()?;
    let mut consumer = Consumer::builder(&consumer_config)
        .assign(&topic, [0])
        .start_at(StartAt::Beginning)
        .build()?;
    let mut consumer_stats = consumer.client_stats();
    let mut last = None;
    for _ in 0..50 {
        last = Some(
            tokio::time::timeout(Duration::from_secs(30), next_unless_fatal(&mut consumer))
                .await?
                .context("stream ended")??,
        );
    }
    // librdkafka measures lag from the committed offset.
    consumer.commit(&last.context("nothing read")?).await?;
    let caught_up = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let s = consumer_stats.next().await?;
            if s.partition_lag
                .iter()
                .any(|(tp, lag)| tp.topic == topic && tp.partition == 0 && *lag == 0)
            {
                return Some(s);
            }
        }
    })
    .await
    .context("the consumer's statistics never showed lag 0")?;
    ensure!(
        caught_up.is_some()
            && caught_up
                .as_ref()
                .is_some_and(|s| s.messages_received >= 50)
    );
    consumer.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_health_matches_the_topic_created() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("health");
    common::fill_partitions(&cluster, &topic, &[2, 3, 4]).await?;
    let config = cluster.config().build()?;
    let health = topic_health(&config, &topic).await?;
    ensure!(health.partitions.len() == 3, "{health:?}");
    let watermarks: Vec<(i64, i64)> = health
        .partitions
        .iter()
        .map(|p| (p.low_watermark, p.high_watermark))
        .collect();
    ensure!(watermarks == [(0, 2), (0, 3), (0, 4)], "{watermarks:?}");
    for p in &health.partitions {
        ensure!(p.leader >= 0 && p.replicas.contains(&p.leader), "{p:?}");
        ensure!(
            !p.in_sync.is_empty() && p.in_sync.iter().all(|r| p.replicas.contains(r)),
            "{p:?}"
        );
    }
    if cluster.is_embedded() {
        // create_topic replicates on up to three of the three embedded brokers.
        ensure!(
            health.partitions.iter().all(|p| p.replicas.len() == 3),
            "{health:?}"
        );
    }
    ensure!(health.is_healthy(), "{health:?}");

    let missing = topic_health(&config, &common::unique_topic("no-such-topic")).await;
    ensure!(missing.is_err(), "an unknown topic reported as {missing:?}");
    Ok(())
}
