//! The consumer under faults: stalled applications, brokers going down, panicking callbacks,
//! unreachable clusters. Embedded broker only (the faults are injected into it).

mod common;

use std::time::{Duration, Instant};

use kafka_kit::config::KafkaConfig;
use kafka_kit::consumer::Consumer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_of_a_consumer_whose_cluster_is_unreachable_is_quick() -> anyhow::Result<()> {
    common::init_tracing();
    let config = KafkaConfig::builder()
        .bootstrap_servers("127.0.0.1:1")
        .build()?;
    let mut consumer = Consumer::builder(&config)
        .group_id("g")
        .topics(["t"])
        .build()?;
    let polled = async {
        while let Some(item) = consumer.recv().await {
            println!("{item:?}");
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(300), polled).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let start = Instant::now();
    drop(consumer);
    println!("dropped in {:?}", start.elapsed());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    Ok(())
}
