//! The same batch sent three ways, timed (seed 003): synchronously (await each delivery),
//! fire-and-forget, and asynchronously with a callback (a closure per message, or one handler for
//! the whole producer); then strict ordering with the `Ordered` preset.
//!
//! ```text
//! cargo run --example send_modes            # 2,000 messages
//! cargo run --example send_modes -- 20000
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_kit::config::Preset;
use kafka_kit::producer::{Producer, Record};
use kafka_kit::rdkafka::Message;
use kafka_kit::testing::TestCluster;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let count: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(2_000);

    let cluster = TestCluster::from_env_or_embedded()?;
    println!("cluster: {}", cluster.describe());
    let topic = "send-modes";
    cluster.create_topic(topic, 3).await?;
    // The tutorial's batch: {"test": i} as JSON.
    let batch: Vec<Vec<u8>> = (0..count)
        .map(|i| serde_json::to_vec(&serde_json::json!({ "test": i })))
        .collect::<Result<_, _>>()?;
    println!("sending {count} JSON messages to `{topic}` in each mode\n");
    println!(
        "{:<40} {:>10} {:>12}  what you learn per message",
        "mode", "time", "msgs/s"
    );

    // Every producer is warmed up (connected, and for idempotent ones given a producer id) before
    // it is timed: that one-off cost is not the send mode's.

    // 1. Synchronous: wait for each delivery report before sending the next. Slowest, but every
    //    message's fate is known, and order is trivially kept. Lingering to fill a batch only
    //    adds latency when a batch never holds more than one message: linger.ms=0.
    let reliable = cluster.config().preset(Preset::Reliable).build()?;
    let sync_config = cluster
        .config()
        .preset(Preset::Reliable)
        .linger(Duration::ZERO)
        .build()?;
    let producer: Producer = Producer::builder(&sync_config).build()?;
    warm_up(&producer, topic).await?;
    let started = Instant::now();
    let mut last = None;
    for payload in &batch {
        last = Some(producer.send(Record::to(topic).payload(payload)).await?);
    }
    report(
        "sync (await each, acks=all, linger 0)",
        count,
        started.elapsed(),
        "partition + offset, in order",
    );
    if let Some(last) = last {
        println!(
            "{:>40} last: partition {} offset {}",
            "", last.partition, last.offset
        );
    }
    producer.close().await?;

    // 2. Fire-and-forget with acks=0: the fastest; the producer never hears back from the broker,
    //    so a lost message goes unnoticed. kafka-kit still counts local failures.
    let fire = cluster.config().preset(Preset::FireAndForget).build()?;
    let producer: Producer = Producer::builder(&fire).build()?;
    warm_up(&producer, topic).await?;
    let started = Instant::now();
    for payload in &batch {
        producer
            .send_and_forget(Record::to(topic).payload(payload))
            .await?;
    }
    producer.flush(Duration::from_secs(30)).await?;
    report(
        "fire-and-forget (acks=0)",
        count,
        started.elapsed(),
        "nothing (failures only counted)",
    );
    println!("{:>40} {:?}", "", producer.stats());
    producer.close().await?;

    // 3. Asynchronous with a callback: nearly as fast, and every result is handled.
    let producer: Producer<usize> = Producer::builder(&reliable).build()?;
    producer
        .send(Record::to(topic).payload("warm-up").context(usize::MAX))
        .await?;
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    for (i, payload) in batch.iter().enumerate() {
        let (ok, failed) = (ok.clone(), failed.clone());
        producer
            .send_with_callback(
                Record::to(topic).payload(payload).context(i),
                move |result| match result {
                    Ok(_) => drop(ok.fetch_add(1, Ordering::Relaxed)),
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("message {} failed: {}", e.context, e.error);
                    }
                },
            )
            .await?;
    }
    producer.flush(Duration::from_secs(30)).await?;
    report(
        "async + callback (acks=all)",
        count,
        started.elapsed(),
        "the full report, in a callback",
    );
    println!(
        "{:>40} callbacks: {} ok, {} failed",
        "",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    producer.close().await?;

    // 3b. The same with one handler for the whole producer: each report is borrowed, not copied,
    //     and the context comes with it.
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let producer: Producer<usize> = Producer::builder(&reliable)
        .on_delivery({
            let (ok, failed) = (ok.clone(), failed.clone());
            move |result| match result {
                Ok(_) => drop(ok.fetch_add(1, Ordering::Relaxed)),
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("message {} failed: {}", e.context, e.error);
                }
            }
        })
        .build()?;
    producer
        .send_to_handler(Record::to(topic).payload("warm-up").context(usize::MAX))
        .await?;
    producer.flush(Duration::from_secs(30)).await?;
    ok.store(0, Ordering::Relaxed);
    let started = Instant::now();
    for (i, payload) in batch.iter().enumerate() {
        producer
            .send_to_handler(Record::to(topic).payload(payload).context(i))
            .await?;
    }
    producer.flush(Duration::from_secs(30)).await?;
    report(
        "async + handler (acks=all)",
        count,
        started.elapsed(),
        "a borrowed report, in one handler",
    );
    println!(
        "{:>40} handled: {} ok, {} failed",
        "",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    producer.close().await?;

    // 4. Strict order: the Ordered preset (one request in flight, retries) keeps a partition's
    //    messages in send order even when a request is retried. (Reliable's idempotence keeps it
    //    too, with up to five requests in flight.)
    // A topic of its own per run, so that reading it back shows just this run's messages.
    let ordered_topic = kafka_kit::testing::unique_name("send-modes-ordered");
    let ordered_topic = ordered_topic.as_str();
    cluster.create_topic(ordered_topic, 1).await?;
    let ordered = cluster.config().preset(Preset::Ordered).build()?;
    let producer: Producer = Producer::builder(&ordered).build()?;
    warm_up(&producer, topic).await?;
    let started = Instant::now();
    let mut futures = Vec::new();
    for i in 0..count {
        let payload = i.to_string();
        futures.push(
            producer
                .enqueue(Record::to(ordered_topic).key("one-key").payload(&payload))
                .await?,
        );
    }
    let mut offsets = Vec::with_capacity(count);
    for future in futures {
        offsets.push(future.await?.offset);
    }
    report(
        "ordered preset (max.in.flight=1)",
        count,
        started.elapsed(),
        "reports; offsets in send order",
    );
    producer.close().await?;
    let in_order = offsets.windows(2).all(|w| w[0] < w[1]);
    let stored = cluster
        .read_topic(ordered_topic, count, Duration::from_secs(30))
        .await?;
    let stored_in_order = stored.len() == count
        && stored
            .iter()
            .enumerate()
            .all(|(i, m)| m.payload() == Some(i.to_string().as_bytes()));
    println!("{:>40} reported offsets increasing: {in_order}; broker holds them in send order: {stored_in_order}", "");
    anyhow::ensure!(in_order && stored_in_order, "ordered sends were reordered");
    Ok(())
}

async fn warm_up(producer: &Producer, topic: &str) -> anyhow::Result<()> {
    producer.send(Record::to(topic).payload("warm-up")).await?;
    Ok(())
}

fn report(mode: &str, count: usize, took: Duration, learn: &str) {
    let rate = count as f64 / took.as_secs_f64();
    println!(
        "{mode:<40} {:>8.0}ms {rate:>12.0}  {learn}",
        took.as_secs_f64() * 1e3
    );
}
