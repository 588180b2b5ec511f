//! Manual offset control with rebalance hooks (seed 001): restore a checkpoint on assign, commit
//! each partition after a batch, commit what was processed on revoke; two consumers in one group
//! so that the rebalance is visible.
//!
//! The tutorial's `ConsumerRebalanceListener` runs inside `poll()`: a busy consumer delays its own
//! rebalance. kafka-kit's hooks run on the consumer's polling thread, on time, while the
//! application works.
//!
//! On the embedded broker, the first revocation's commit is refused (the mock coordinator refuses
//! commits once a rebalance has begun; Kafka accepts them from the current generation), and the
//! output shows the few records read twice because of it: at least once, never lost.
//!
//! ```text
//! cargo run --example offset_control
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kafka_kit::consumer::{
    Assigned, CheckpointStore, CommitOffsets, Consumer, FileCheckpoints, OffsetReset,
    RebalanceListener, Revoked, TopicPartition,
};
use kafka_kit::producer::{Producer, Record};
use kafka_kit::rdkafka::consumer::CommitMode;
use kafka_kit::rdkafka::Offset;
use kafka_kit::testing::{next_unless_fatal, TestCluster};

const BATCH: usize = 10;
const TOTAL: usize = 240;

/// Prints every rebalance a consumer goes through.
struct Announce(&'static str);

impl RebalanceListener for Announce {
    fn on_assigned(&self, assigned: &Assigned) {
        for start in &assigned.starts {
            let at = match start.offset {
                Offset::Stored => "the committed offset".to_string(),
                other => format!("{other:?}"),
            };
            println!(
                "  [{}] assigned {}[{}], starting at {at} ({:?})",
                self.0, start.topic, start.partition, start.reason
            );
        }
    }
    fn on_revoked(&self, revoked: &Revoked) {
        match &revoked.committed {
            Ok(offsets) => println!("  [{}] revoked {}; committed first: {}", self.0, list(&revoked.partitions), show(offsets)),
            Err(why) => println!("  [{}] revoked {}; its processed offsets could NOT be committed ({why}): the new owner re-reads them", self.0, list(&revoked.partitions)),
        }
    }
    fn on_lost(&self, partitions: &[TopicPartition]) {
        println!(
            "  [{}] LOST {} (nothing committed)",
            self.0,
            list(partitions)
        );
    }
}

fn show(offsets: &CommitOffsets) -> String {
    let shown: Vec<String> = offsets
        .iter()
        .map(|(_, p, o)| format!("[{p}]->{}", o.get()))
        .collect();
    if shown.is_empty() {
        "nothing new".into()
    } else {
        shown.join(" ")
    }
}

fn list(partitions: &[TopicPartition]) -> String {
    partitions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cluster = TestCluster::from_env_or_embedded()?;
    println!("cluster: {}", cluster.describe());
    let run = kafka_kit::testing::run_id();
    let (topic, group) = (
        format!("user-events-{run}"),
        format!("offset-control-{run}"),
    );
    cluster.create_topic(&topic, 4).await?;

    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    for i in 0..TOTAL {
        let (user, event) = (
            format!("{}", 1001 + i % 12),
            format!(r#"{{"event_type":"view","n":{i}}}"#),
        );
        producer
            .send_and_forget(Record::to(&topic).key(&user).payload(&event))
            .await?;
    }
    producer.close().await?;
    println!("produced {TOTAL} events to `{topic}` (4 partitions)\n");

    // A checkpoint store outside Kafka, as in the tutorial: partition 0 resumes at offset 5.
    let path = std::env::temp_dir().join(format!("kafka-kit-offset-control-{run}.json"));
    let checkpoints = Arc::new(FileCheckpoints::open(&path)?);
    checkpoints.save(&[(&topic, 0, 5)])?;
    println!(
        "checkpoint file {} says partition 0 resumes at 5\n",
        path.display()
    );

    let processed = Arc::new(AtomicUsize::new(0));
    let config = cluster.consumer_config().build()?;
    let member = |name: &'static str| -> anyhow::Result<_> {
        let consumer = Consumer::builder(&config)
            .group_id(&group)
            .topics([topic.as_str()])
            .offset_reset(OffsetReset::Earliest)
            .checkpoints(checkpoints.clone())
            .listener(Announce(name))
            .build()?;
        Ok(tokio::spawn(consume(name, consumer, processed.clone())))
    };

    println!("consumer A joins the group:");
    let a = member("A")?;
    while processed.load(Ordering::SeqCst) < 60 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("\nconsumer B joins the group: the partitions are shared out again");
    let b = member("B")?;
    let (a, b) =
        tokio::time::timeout(Duration::from_secs(60), async { (a.await, b.await) }).await?;
    let (a, b) = (a??, b??);
    // Partition 0 started at its checkpoint, 5: the other records are read at least once.
    let expected = TOTAL - 5;
    println!("\nA read {a}, B read {b}: {} reads of {expected} records, {} of them again after a rebalance", a + b, (a + b).saturating_sub(expected));

    let lag = kafka_kit::consumer::group_lag(&config, &group, &[&topic]).await?;
    println!("\nfinal committed offsets (the next to read), and the checkpoint file's copy:");
    for p in &lag {
        println!(
            "  partition {}: committed {:?}, end {}, lag {}, checkpoint {:?}",
            p.partition,
            p.committed,
            p.high_watermark,
            p.lag,
            checkpoints.load(&topic, p.partition)?
        );
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// Reads until every partition it holds is drained; commits each partition after a batch.
async fn consume(
    name: &'static str,
    mut consumer: Consumer,
    processed: Arc<AtomicUsize>,
) -> anyhow::Result<usize> {
    let mut mine = 0;
    let mut batches: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    loop {
        // Errors the consumer recovers from (a broker restarting, a group the broker doesn't know
        // yet) are logged and skipped; only a fatal one ends the loop.
        let next = next_unless_fatal(&mut consumer);
        let record = match tokio::time::timeout(Duration::from_secs(4), next).await {
            Ok(Some(record)) => record?,
            Ok(None) => break,
            Err(_) => break, // nothing new for a while: everything is read
        };
        // "Business logic", then mark the record processed: a revoke commits it.
        consumer.mark_processed(&record);
        processed.fetch_add(1, Ordering::SeqCst);
        mine += 1;
        let batch = batches.entry(record.partition()).or_default();
        batch.push(record.offset());
        if batch.len() == BATCH {
            // The tutorial's consumer.commit({partition: offset + 1}), per partition.
            let mut offsets = CommitOffsets::new();
            offsets.insert_after(&record);
            consumer.commit_offsets(&offsets, CommitMode::Sync).await?;
            println!(
                "  [{name}] partition {} batch {}..={} done, committed {}",
                record.partition(),
                batch[0],
                record.offset(),
                record.next_offset().get()
            );
            batch.clear();
        }
    }
    consumer.close().await?; // commits the rest, leaves the group
    Ok(mine)
}
