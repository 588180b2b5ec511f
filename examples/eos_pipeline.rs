//! Exactly-once across a crash: a pipeline killed mid-transaction and restarted, then a
//! `read_committed` count showing one output per input.
//!
//! 1. `N` inputs are produced to `inputs`.
//! 2. Instance A runs an [`ExactlyOnce`] pipeline `inputs` -> `processed` with transactional id
//!    X: a slow transform (50 ms per input) and a transaction per ten inputs. It commits two
//!    transactions, sends the outputs of five more inputs in a third, and crashes: its task is
//!    aborted, with no graceful shutdown, and the transaction stays open.
//! 3. Instance B starts with the same group and the same transactional id X. Its
//!    `init_transactions` fences A (were A still alive, its next call would fail) and aborts
//!    the transaction A left open. B resumes from the offsets A's committed transactions
//!    committed, and processes the rest.
//! 4. `processed` is read with `read_uncommitted` (A's aborted outputs are there) and with
//!    `read_committed` (they are not): exactly one output per input, none missing.
//!
//! ```text
//! cargo run --example eos_pipeline
//! KAFKA_BOOTSTRAP_SERVERS=localhost:9092 cargo run --example eos_pipeline
//! ```
//!
//! Only a real broker shows exactly-once. The embedded broker (librdkafka's mock cluster) runs
//! the same calls, but keeps aborted records visible, ignores `read_committed`, does not fence
//! an older producer with the same transactional id, and drops the offsets sent in
//! transactions: B then starts over from the group's committed offsets (none) and processes
//! every input again. The example runs the same flow there and prints what the mock shows,
//! labelled as such.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use kafka_kit::config::KafkaConfig;
use kafka_kit::consumer::{group_lag, Consumer, ConsumerRecord, Isolation, OffsetReset};
use kafka_kit::producer::{OwnedRecord, Producer, Record};
use kafka_kit::testing::TestCluster;
use kafka_kit::transaction::{ExactlyOnce, ExactlyOnceStats};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// Inputs produced.
const N: usize = 60;
const PARTITIONS: i32 = 3;
/// A commits a transaction every this many inputs.
const BATCH: usize = 10;
/// A crashes once it has transformed this many inputs: two transactions committed, and the
/// outputs of five more sent in an open one.
const CRASH_AFTER: usize = 25;

#[derive(Debug, Serialize, Deserialize)]
struct Input {
    n: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Output {
    n: usize,
    square: usize,
    /// The instance that wrote it: A or B.
    by: String,
}

const MOCK_CAVEAT: &str = "the embedded mock cluster cannot show exactly-once: it keeps aborted \
records visible, ignores read_committed, does not fence an older producer with the same \
transactional id, and drops the offsets sent in transactions, so the restarted instance starts \
over from the group's committed offsets (none here)";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let cluster = TestCluster::from_env_or_embedded()?;
    println!("cluster: {}", cluster.describe());
    if cluster.is_embedded() {
        println!(
            "\nNOTE: {MOCK_CAVEAT}. The counts below are what the mock shows, not a proof: run \
             against a real broker (KAFKA_BOOTSTRAP_SERVERS) for that."
        );
    }
    // On a real cluster, which keeps topics, groups and transactional ids, names of this run's
    // own; the embedded cluster is new at every run.
    let suffix = if cluster.is_embedded() {
        String::new()
    } else {
        format!("-{}", kafka_kit::testing::run_id())
    };
    let (input, output) = (format!("inputs{suffix}"), format!("processed{suffix}"));
    let (group, transactional_id) = (
        format!("eos-pipeline{suffix}"),
        format!("eos-pipeline-0{suffix}"),
    );
    cluster.create_topic(&input, PARTITIONS).await?;
    cluster.create_topic(&output, PARTITIONS).await?;

    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    for n in 0..N {
        let key = format!("key-{}", n % 12);
        producer
            .send_json(Record::to(&input).key(&key), &Input { n })
            .await?;
    }
    producer.close().await?;
    println!("\nproduced {N} inputs to `{input}` ({PARTITIONS} partitions)");

    // The consumer's settings (on the embedded broker, a short session timeout, or every
    // rebalance takes 44 s) serve the pipeline's producer too: it ignores them, with a warning.
    let config = cluster.consumer_config().build()?;
    let pipeline = |commit_interval: Duration, max_records: usize| {
        ExactlyOnce::builder(&config)
            .group_id(&group)
            .topics([&input])
            .transactional_id(&transactional_id)
            .offset_reset(OffsetReset::Earliest)
            .commit_every(commit_interval, max_records)
            .build()
    };

    // Instance A: slow, a transaction per ten inputs (the interval is never reached).
    println!(
        "\ninstance A (transactional id `{transactional_id}`, group `{group}`): 50 ms per \
         input, a transaction per {BATCH} inputs"
    );
    let a = pipeline(Duration::from_millis(1500), BATCH)?;
    let a_progress = a.progress();
    let transformed = Arc::new(AtomicUsize::new(0));
    let crashing = Arc::new(Notify::new());
    let a_task = tokio::spawn({
        let (transformed, crashing, output) =
            (transformed.clone(), crashing.clone(), output.clone());
        a.run(
            move |record: Arc<ConsumerRecord>| {
                let (transformed, crashing, output) =
                    (transformed.clone(), crashing.clone(), output.clone());
                async move {
                    if transformed.fetch_add(1, Ordering::SeqCst) >= CRASH_AFTER {
                        // The process freezes here, with a transaction open, until it is killed.
                        crashing.notify_one();
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    transform(&record, &output, "A")
                }
            },
            std::future::pending::<()>(),
        )
    });
    tokio::time::timeout(Duration::from_secs(60), crashing.notified())
        .await
        .context("instance A did not get to its crash within 60 s")?;
    // Let A's producer deliver the open transaction's outputs (they are sent as they come, and
    // only the commit would make them visible to read_committed readers)...
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at_crash = a_progress.snapshot();
    // ...and kill it: dropping the task is as close to `kill -9` as one process gets. Nothing
    // commits, nothing aborts; the transaction stays open on the broker. (Unlike `kill -9`,
    // dropping closes A's consumer, so the group need not wait for A's session to time out.)
    a_task.abort();
    let crashed = tokio::time::Instant::now();
    match a_task.await {
        Err(e) if e.is_cancelled() => {}
        Err(e) => return Err(e.into()),
        Ok(result) => anyhow::bail!("instance A stopped on its own: {result:?}"),
    }
    println!(
        "  A crashed: {} transactions committed ({} inputs), the outputs of {} more inputs sent \
         in a transaction left open (its task took {:.1?} to drop)",
        at_crash.transactions_committed,
        at_crash.records_in,
        CRASH_AFTER as u64 - at_crash.records_in,
        crashed.elapsed()
    );

    // Where B will start: the group's committed offsets.
    let lag = group_lag(&config, &group, &[input.as_str()]).await?;
    let committed: Vec<String> = lag
        .iter()
        .map(|p| {
            format!(
                "[{}]->{}",
                p.partition,
                p.committed.map_or("none".into(), |c| c.to_string())
            )
        })
        .collect();
    let remaining: i64 = lag.iter().map(|p| p.lag).sum();
    println!(
        "\ngroup `{group}` committed offsets now: {} ({remaining} inputs left to process)",
        committed.join(" ")
    );
    if cluster.is_embedded() {
        println!("  (the mock dropped the offsets of A's committed transactions)");
    }

    // Instance B: same group, same transactional id; the default 100 ms transactions.
    println!(
        "\ninstance B (transactional id `{transactional_id}` again, group `{group}`): its init \
         fences A and aborts A's open transaction{}",
        if cluster.is_embedded() {
            " (on a real broker: the mock does neither)"
        } else {
            ""
        }
    );
    let b = pipeline(Duration::from_millis(100), 1_000)?;
    let b_progress = b.progress();
    let starts: Arc<Mutex<BTreeMap<i32, i64>>> = Arc::default();
    let shutdown = {
        let b_progress = b_progress.clone();
        async move {
            b_progress
                .wait_for(|s| s.records_in as i64 >= remaining)
                .await
        }
    };
    let b_run = b.run(
        |record: Arc<ConsumerRecord>| {
            let (starts, output) = (starts.clone(), output.clone());
            async move {
                starts
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(record.partition())
                    .or_insert(record.offset());
                transform(&record, &output, "B")
            }
        },
        shutdown,
    );
    let b_stats = tokio::time::timeout(Duration::from_secs(60), b_run)
        .await
        .context("instance B did not finish within 60 s")??;
    let starts: Vec<String> = starts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(p, o)| format!("[{p}]@{o}"))
        .collect();
    println!("  B started reading at {}", starts.join(" "));
    print_stats("B", &b_stats);

    // What readers of `processed` see.
    let everything = read_all(&config, &cluster, &output, Isolation::ReadUncommitted, N).await?;
    let committed = read_all(&config, &cluster, &output, Isolation::ReadCommitted, N).await?;
    println!("\nreading `{output}` from the start:");
    println!(
        "  read_uncommitted: {} records ({})",
        everything.len(),
        by_instance(&everything)
    );
    let label = if cluster.is_embedded() {
        "read_committed, as the mock serves it (it ignores the isolation level)"
    } else {
        "read_committed"
    };
    println!(
        "  {label}: {} records ({})",
        committed.len(),
        by_instance(&committed)
    );
    let mut per_input: HashMap<usize, usize> = HashMap::new();
    for out in &committed {
        *per_input.entry(out.n).or_default() += 1;
    }
    let duplicates = per_input.values().filter(|&&c| c > 1).count();
    let extra: usize = per_input.values().map(|c| c.saturating_sub(1)).sum();
    let missing = (0..N).filter(|n| !per_input.contains_key(n)).count();
    println!(
        "\n{}inputs {N}, outputs {}, inputs with duplicates {duplicates} ({extra} extra outputs), missing {missing}",
        if cluster.is_embedded() { "what the mock shows: " } else { "" },
        committed.len()
    );

    if cluster.is_embedded() {
        println!(
            "\nNOTE: these counts are what the mock shows, not a proof of exactly-once nor a \
             failure of it; {MOCK_CAVEAT}."
        );
    } else {
        anyhow::ensure!(
            duplicates == 0 && missing == 0 && committed.len() == N,
            "read_committed shows {} outputs for {N} inputs: {duplicates} duplicated, {missing} missing",
            committed.len()
        );
        println!("exactly one committed output per input, across a crash and a restart");
    }
    Ok(())
}

/// The transform: deterministic, so that a re-run after an abort gives the same output (the
/// instance's name aside, there for the demo).
fn transform(record: &ConsumerRecord, output: &str, by: &str) -> anyhow::Result<Vec<OwnedRecord>> {
    let Input { n } = record.json()?;
    let out = Output {
        n,
        square: n * n,
        by: by.into(),
    };
    Ok(vec![OwnedRecord::to(output)
        .with_key(record.key().unwrap_or_default())
        .with_json(&out)?])
}

fn print_stats(name: &str, stats: &ExactlyOnceStats) {
    println!(
        "  {name}: {} transactions committed, {} aborted; {} records in, {} records out",
        stats.transactions_committed,
        stats.transactions_aborted,
        stats.records_in,
        stats.records_out
    );
}

fn by_instance(outputs: &[Output]) -> String {
    let a = outputs.iter().filter(|o| o.by == "A").count();
    format!("{a} by A, {} by B", outputs.len() - a)
}

/// Reads `topic` from the start of every partition, outside any group, with `isolation`, until
/// at least `expected` records have arrived and no more come for a second, or 30 s have passed.
async fn read_all(
    config: &KafkaConfig,
    cluster: &TestCluster,
    topic: &str,
    isolation: Isolation,
    expected: usize,
) -> anyhow::Result<Vec<Output>> {
    let mut consumer = Consumer::builder(config)
        .assign(topic, 0..cluster.partition_count(topic).await?)
        .offset_reset(OffsetReset::Earliest)
        .isolation(isolation)
        .build()?;
    let mut outputs = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let wait = if outputs.len() >= expected {
            Duration::from_secs(1)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Some(record)) => outputs.push(record?.json()?),
            Ok(None) | Err(_) => break,
        }
    }
    consumer.close().await?;
    Ok(outputs)
}
