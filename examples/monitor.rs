//! A Kafka monitor (seed 001's `KafkaMonitor`): while a producer and a consumer run, print the
//! producer's send rate, error rate, batch size, queue depth and broker round trips, the group's
//! lag per partition, and the topic's health.
//!
//! ```text
//! cargo run --example monitor              # about 10 seconds
//! cargo run --example monitor -- 30        # 30 seconds
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kafka_kit::config::Preset;
use kafka_kit::consumer::processing::AtLeastOnce;
use kafka_kit::consumer::{group_lag, Consumer, OffsetReset};
use kafka_kit::monitoring::{topic_health, TopicHealth};
use kafka_kit::producer::{Producer, Record};
use kafka_kit::testing::{run_id, unless_fatal, TestCluster};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10);
    let cluster = TestCluster::from_env_or_embedded()?;
    println!("cluster: {}", cluster.describe());
    let run = run_id();
    let (topic, group) = (format!("user-events-{run}"), format!("monitor-{run}"));
    cluster.create_topic(&topic, 3).await?;
    let config = cluster.config().build()?;
    print_health(&topic_health(&config, &topic).await?);

    // A producer sending steadily, with statistics every second.
    let producer_config = cluster
        .config()
        .preset(Preset::Throughput)
        .statistics_interval(Duration::from_secs(1))
        .build()?;
    let producer: Producer = Producer::builder(&producer_config).build()?;
    let mut stats = producer.client_stats();
    let running = Arc::new(AtomicBool::new(true));
    let sending = {
        let (producer, running, topic) = (producer.clone(), running.clone(), topic.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while running.load(Ordering::Relaxed) {
                let (key, value) = (
                    format!("{}", 1001 + i % 50),
                    format!(r#"{{"event_type":"view","n":{i}}}"#),
                );
                producer
                    .send_and_forget(Record::to(&topic).key(&key).payload(&value))
                    .await?;
                i += 1;
                if i.is_multiple_of(250) {
                    tokio::time::sleep(Duration::from_millis(100)).await; // about 2,500 a second
                }
            }
            anyhow::Ok(i)
        })
    };
    // A consumer group member that joins a second late: the lag builds up, then drains.
    let (stop_consumer, consumer_stops) = tokio::sync::oneshot::channel::<()>();
    let consumer_builder = Consumer::builder(&cluster.consumer_config().build()?)
        .group_id(&group)
        .topics([topic.as_str()])
        .offset_reset(OffsetReset::Earliest);
    let consuming = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        AtLeastOnce::new(consumer_builder.build()?)
            .run(
                |_record| async { Ok::<_, std::convert::Infallible>(()) },
                consumer_stops,
            )
            .await
    });

    println!(
        "\n{:>4}  {:>9} {:>8} {:>9} {:>8} {:>9}  {:<28} lag per partition",
        "sec", "msg/s", "errors/s", "batch", "queue", "rtt µs", "brokers up"
    );
    for second in 1..=seconds {
        let Ok(Some(s)) = tokio::time::timeout(Duration::from_secs(3), stats.next()).await else {
            break;
        };
        let rtt: Vec<i64> = s.brokers.iter().filter_map(|b| b.rtt_avg_us).collect();
        let up = s.brokers.iter().filter(|b| b.state == "UP").count();
        // The group may not exist yet (its member joins a second late), and some brokers say so
        // with an error that is not fatal: that second shows no lag, and the monitor goes on.
        let lag = unless_fatal(group_lag(&config, &group, [&topic]).await)?.unwrap_or_default();
        let lags: Vec<String> = lag
            .iter()
            .map(|p| format!("p{}={}", p.partition, p.lag))
            .collect();
        println!(
            "{second:>4}  {:>9.0} {:>8.1} {:>9.1} {:>8} {:>9}  {:<28} {}",
            s.messages_sent_per_sec,
            s.send_errors_per_sec,
            s.avg_batch_messages,
            s.queue_depth,
            rtt.iter()
                .sum::<i64>()
                .checked_div(rtt.len() as i64)
                .map_or("-".into(), |us| us.to_string()),
            format!("{up} of {}", s.brokers.len()),
            lags.join(" ")
        );
    }
    running.store(false, Ordering::Relaxed);
    let sent = sending.await??;
    producer.close().await?;
    // Let the consumer catch up, then stop it.
    for _ in 0..100 {
        let lag = unless_fatal(group_lag(&config, &group, [&topic]).await)?;
        if lag.is_some_and(|lag| lag.iter().all(|p| p.lag == 0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_consumer.send(());
    let processed = consuming.await??;
    println!(
        "\nsent {sent}, consumed {} ({} batch commits)",
        processed.processed, processed.commits
    );
    print_health(&topic_health(&config, &topic).await?);
    Ok(())
}

fn print_health(health: &TopicHealth) {
    println!(
        "\ntopic `{}`: {} partitions, healthy: {}",
        health.topic,
        health.partitions.len(),
        health.is_healthy()
    );
    for p in &health.partitions {
        println!(
            "  partition {}: leader {}, replicas {:?}, in sync {:?}, offsets {}..{}",
            p.partition, p.leader, p.replicas, p.in_sync, p.low_watermark, p.high_watermark
        );
    }
}
