//! Consumer lag monitoring (seed 001, `KafkaMonitor.check_topic_health`): a topic's partition
//! count and a group's lag per partition, once and then periodically.
//!
//! Thirty records are produced over three partitions; a first member of the group processes and
//! commits ten of them and leaves. The group's lag is then read from outside the group
//! ([`group_lag`]): committed offset, high watermark and lag per partition. Finally a second
//! member processes the other twenty while [`lag_reports`] prints the total lag every 500 ms,
//! down to 0.
//!
//! Unlike the tutorial's `lag = end_offset - committed if committed else 0`, a partition the group
//! has committed nothing on counts all its records as lag, not none.
//!
//! Runs on an embedded broker, or on the cluster in `KAFKA_BOOTSTRAP_SERVERS`:
//!
//! ```text
//! cargo run --example lag_monitor
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kafka_kit::consumer::{
    group_lag, lag_reports, Consumer, ConsumerRecord, OffsetReset, PartitionLag,
};
use kafka_kit::producer::{Producer, Record};
use kafka_kit::testing::{next_unless_fatal, TestCluster};

const RECORDS: usize = 30;
const FIRST_MEMBER: usize = 10;

/// The next record, or an error if none comes within 30 s. Errors the consumer recovers from are
/// logged and skipped; a fatal one is returned.
async fn next(consumer: &mut Consumer) -> anyhow::Result<ConsumerRecord> {
    let record = tokio::time::timeout(Duration::from_secs(30), next_unless_fatal(consumer))
        .await
        .context("no record within 30 s")?
        .context("the consumer stopped")??;
    Ok(record)
}

fn total_lag(lag: &[PartitionLag]) -> i64 {
    lag.iter().map(|p| p.lag).sum()
}

fn print_lag_table(lag: &[PartitionLag]) {
    println!(
        "  {:>9} {:>9} {:>14} {:>5}",
        "partition", "committed", "high watermark", "lag"
    );
    for p in lag {
        let committed = p.committed.map_or("-".into(), |c| c.to_string());
        println!(
            "  {:>9} {committed:>9} {:>14} {:>5}",
            p.partition, p.high_watermark, p.lag
        );
    }
    let committed: i64 = lag.iter().filter_map(|p| p.committed).sum();
    let high: i64 = lag.iter().map(|p| p.high_watermark).sum();
    println!(
        "  {:>9} {committed:>9} {high:>14} {:>5}",
        "total",
        total_lag(lag)
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let cluster = TestCluster::from_env_or_embedded()?;
    println!("cluster: {}", cluster.describe());
    // A topic and a group of their own per run, so that re-runs show just this run's figures.
    let run = &kafka_kit::testing::run_id();
    let topic = format!("lag-monitor-{run}");
    let group = format!("lag-monitor-{run}");
    let topic = topic.as_str();
    cluster.create_topic(topic, 3).await?;

    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    for i in 0..RECORDS {
        let key = format!("device-{}", i % 10);
        let value = serde_json::json!({ "device": key, "reading": i });
        producer
            .send_json(Record::to(topic).key(&key), &value)
            .await?;
    }
    producer.close().await?;
    println!("\nproduced {RECORDS} records to `{topic}`");

    let config = cluster.consumer_config().build()?;
    let before = group_lag(&config, &group, &[topic]).await?;
    println!(
        "group `{group}` before committing anything: total lag {}",
        total_lag(&before)
    );

    // A first member processes part of the records, committing each, and leaves.
    let mut first = Consumer::builder(&config)
        .group_id(&group)
        .topics([topic])
        .offset_reset(OffsetReset::Earliest)
        .build()?;
    let mut per_partition: BTreeMap<i32, usize> = BTreeMap::new();
    for _ in 0..FIRST_MEMBER {
        let record = next(&mut first).await?;
        first.commit(&record).await?;
        *per_partition.entry(record.partition()).or_default() += 1;
    }
    first.close().await?;
    let spread: Vec<String> = per_partition
        .iter()
        .map(|(partition, n)| format!("{n} of partition {partition}"))
        .collect();
    println!(
        "a first member processed and committed {FIRST_MEMBER} records ({}), then left",
        spread.join(", ")
    );

    // check_topic_health: the partition count, and the lag of each partition.
    println!(
        "\ntopic `{topic}` has {} partitions; lag of group `{group}`:",
        cluster.partition_count(topic).await?
    );
    let lag = group_lag(&config, &group, &[topic]).await?;
    print_lag_table(&lag);
    anyhow::ensure!(
        total_lag(&lag) == (RECORDS - FIRST_MEMBER) as i64,
        "unexpected lag {lag:?}"
    );

    // A second member processes the rest, slowly enough for the reports to see it happen. It says
    // when it has joined the group (its first record), so that the reports start then.
    let rest = RECORDS - FIRST_MEMBER;
    let (joined, has_joined) = tokio::sync::oneshot::channel();
    let mut second = Consumer::builder(&config)
        .group_id(&group)
        .topics([topic])
        .offset_reset(OffsetReset::Earliest)
        .build()?;
    let worker = tokio::spawn(async move {
        let mut joined = Some(joined);
        for _ in 0..rest {
            let record = next(&mut second).await?;
            if let Some(joined) = joined.take() {
                let _ = joined.send(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // the work
            second.commit(&record).await?;
        }
        second.close().await?;
        anyhow::Ok(())
    });
    match tokio::time::timeout(Duration::from_secs(30), has_joined).await {
        Ok(Ok(())) => {}
        // It stopped before its first record: its error says why.
        Ok(Err(_)) => {
            worker.await??;
            anyhow::bail!("the second member stopped");
        }
        Err(_) => anyhow::bail!("the second member read nothing within 30 s"),
    }

    println!("\na second member processes the other {rest}; lag every 500 ms:");
    let started = Instant::now();
    let mut reports = std::pin::pin!(lag_reports(
        config.clone(),
        group.clone(),
        vec![topic.to_owned()],
        Duration::from_millis(500),
    ));
    let watch = async {
        // Once the member has finished, one more report (taken after its last commit) decides.
        let mut last_report = false;
        // A report that failed for a passing reason (a broker restarting, a group the broker
        // doesn't know yet) is logged and skipped; only a fatal error stops watching.
        while let Some(report) = next_unless_fatal(&mut reports).await {
            let report = report?;
            let per_partition: Vec<String> = report
                .iter()
                .map(|p| format!("p{} {}", p.partition, p.lag))
                .collect();
            println!(
                "  {:>5.1} s: total lag {:>2} ({})",
                started.elapsed().as_secs_f64(),
                total_lag(&report),
                per_partition.join(", ")
            );
            if total_lag(&report) == 0 {
                return anyhow::Ok(true);
            }
            if last_report {
                break;
            }
            last_report = worker.is_finished();
        }
        Ok(false)
    };
    let caught_up = tokio::time::timeout(Duration::from_secs(30), watch)
        .await
        .unwrap_or(Ok(false))?;
    worker.await??;
    anyhow::ensure!(caught_up, "the group's lag did not reach 0");
    println!("\ndone: the group has caught up");
    Ok(())
}
