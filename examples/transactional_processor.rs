//! Transactional consume-transform-produce (seed 001, case 5: the tutorial's
//! `TransactionalProcessor`), done with [`ExactlyOnce`].
//!
//! User events (JSON, keyed by user id) are produced to `user-events`. The pipeline reads them
//! with `read_committed` in the group `transactional-group`, adds `points_earned` and
//! `new_balance` to each, and writes the result to `processed-events`; each transaction holds a
//! few inputs' outputs *and* the inputs' offsets (the next ones to read), committed together.
//! Once every input is committed, the pipeline stops, and `processed-events` is read back: one
//! output per input.
//!
//! What the tutorial gets wrong, and this does not:
//!
//! - It opens one transaction per message (a begin, a produce, an offset commit and a commit,
//!   each waiting for the broker): transactions here are batched, every 100 ms.
//! - Its `transactional.id` is `txn-processor-{time}`, new at every start: a restarted processor
//!   then never fences the old one, and the transaction a crashed run left open is not aborted
//!   until it times out. The id here is stable: the same instance restarts with the same id.
//! - On any error it aborts and re-raises, so nothing is ever retried; and it does not rewind
//!   the consumer, so the aborted input would be skipped had the loop gone on. [`ExactlyOnce`]
//!   aborts, rewinds to where the transaction began, and reads those inputs again.
//! - Its business logic returns fixed values (10 points, balance 1000) and a wall-clock
//!   `processed_at`. Here the results are computed from the event alone (see `transform` below).
//!
//! Runs on an embedded broker in a few seconds, or on the cluster in `KAFKA_BOOTSTRAP_SERVERS`:
//!
//! ```text
//! cargo run --example transactional_processor
//! ```
//!
//! The embedded broker (librdkafka's mock cluster) runs the transactions' calls, but it cannot
//! show what they guarantee: it keeps aborted records visible and ignores `read_committed`.
//! Nothing is aborted in this run, so what it prints is the same on both; `eos_pipeline` shows
//! a crash and a restart.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use kafka_kit::consumer::{Consumer, ConsumerRecord, OffsetReset};
use kafka_kit::producer::{OwnedRecord, Producer, Record};
use kafka_kit::testing::{next_unless_fatal, TestCluster};
use kafka_kit::transaction::{ExactlyOnce, ExactlyOnceStats, Progress};
use serde::{Deserialize, Serialize};

const GROUP: &str = "transactional-group";
/// Stable across restarts of this instance (a second instance would be `...-1`): a restart
/// fences the previous run and aborts the transaction it left open.
const TRANSACTIONAL_ID: &str = "transactional-processor-0";
const PARTITIONS: i32 = 3;

/// An input event, as the tutorial's producer sends it, with the user's wallet balance at the
/// time of the event.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserEvent {
    user_id: String,
    event_type: String,
    product_id: String,
    /// The price, for a purchase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    amount: Option<f64>,
    /// The wallet balance before this event.
    balance: f64,
}

/// The tutorial's processed record: the event, and what it earned.
#[derive(Debug, Serialize, Deserialize)]
struct ProcessedEvent {
    user_id: String,
    original_event: UserEvent,
    result: String,
    points_earned: u64,
    new_balance: f64,
}

/// The business logic: points and the balance after the event.
///
/// The transform may run more than once for an input: when a transaction aborts (a failed
/// output, a broker error, a rebalance), its inputs are read again and transformed again, and
/// only the last run's outputs are ever committed. So it computes everything from the event
/// itself: no running total kept in memory (a map of balances updated here would count an
/// aborted input twice, and would be empty after a restart), no clock, no randomness. Run twice
/// on the same input, it gives the same output.
fn transform(event: &UserEvent) -> anyhow::Result<ProcessedEvent> {
    let (points_earned, new_balance) = match event.event_type.as_str() {
        "view_product" => (1, event.balance),
        "add_to_cart" => (2, event.balance),
        "purchase" => {
            let amount = event.amount.context("a purchase without an amount")?;
            anyhow::ensure!(
                amount > 0.0 && amount <= event.balance,
                "purchase of {amount} with a balance of {}",
                event.balance
            );
            // One point per whole unit spent; balances in cents, rounded once.
            let points = amount.floor() as u64;
            (points, ((event.balance - amount) * 100.0).round() / 100.0)
        }
        other => anyhow::bail!("unknown event type {other:?}"),
    };
    Ok(ProcessedEvent {
        user_id: event.user_id.clone(),
        original_event: event.clone(),
        result: "success".into(),
        points_earned,
        new_balance,
    })
}

/// Five users, each viewing a product, adding it to the cart and buying it.
fn user_events() -> Vec<UserEvent> {
    let users = [
        ("1001", "SKU-LAMP", 49.90, 500.0),
        ("1002", "SKU-DESK", 199.80, 350.0),
        ("1003", "SKU-PEN", 3.50, 20.0),
        ("1004", "SKU-CHAIR", 129.00, 1000.0),
        ("1005", "SKU-MUG", 12.25, 80.5),
    ];
    let mut events = Vec::new();
    for step in ["view_product", "add_to_cart", "purchase"] {
        for (user, product, price, balance) in users {
            events.push(UserEvent {
                user_id: user.into(),
                event_type: step.into(),
                product_id: product.into(),
                amount: (step == "purchase").then_some(price),
                balance,
            });
        }
    }
    events
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let cluster = TestCluster::from_env_or_embedded()?;
    println!("cluster: {}", cluster.describe());
    // The tutorial's topic names on a fresh embedded cluster; on a real one, which keeps topics,
    // names of this run's own, so that reading back shows just this run's records. The group
    // and the transactional id stay the tutorial's: they name the processor, not the run.
    let suffix = if cluster.is_embedded() {
        String::new()
    } else {
        format!("-{}", kafka_kit::testing::run_id())
    };
    let (input, output) = (
        format!("user-events{suffix}"),
        format!("processed-events{suffix}"),
    );
    cluster.create_topic(&input, PARTITIONS).await?;
    cluster.create_topic(&output, PARTITIONS).await?;

    let events = user_events();
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    for event in &events {
        producer
            .send_json(Record::to(&input).key(&event.user_id), event)
            .await?;
    }
    producer.close().await?;
    println!(
        "produced {} user events to `{input}` ({PARTITIONS} partitions, keyed by user id)",
        events.len()
    );

    // The consumer's settings (on the embedded broker, a short session timeout, or every
    // rebalance takes 44 s) serve the producer too: it ignores them, with a warning.
    let pipeline = ExactlyOnce::builder(&cluster.consumer_config().build()?)
        .group_id(GROUP)
        .topics([&input])
        .transactional_id(TRANSACTIONAL_ID)
        .consumer(|c| c.offset_reset(OffsetReset::Earliest))
        .build()?;
    let reporter = Arc::new(Reporter::new(pipeline.progress()));
    println!(
        "\ntransactional processor `{TRANSACTIONAL_ID}`, group `{GROUP}`: `{input}` -> `{output}`"
    );

    let total = events.len() as u64;
    let shutdown = {
        let reporter = reporter.clone();
        async move {
            // Every input committed: its output and its offset are in Kafka for good.
            while reporter.report().records_in < total {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let run = pipeline.run(
        |record: Arc<ConsumerRecord>| {
            let (reporter, output) = (reporter.clone(), output.clone());
            async move {
                reporter.received(&record);
                let event: UserEvent = record.json()?;
                // The tutorial's simulated work (0.1 s there): it spreads the inputs over a few
                // transactions.
                tokio::time::sleep(Duration::from_millis(40)).await;
                let processed = transform(&event)?;
                Ok::<_, anyhow::Error>(vec![OwnedRecord::to(output)
                    .key(record.key().unwrap_or_default())
                    .json(&processed)?])
            }
        },
        shutdown,
    );
    let stats = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .context("the pipeline did not finish within 60 s")??;
    reporter.report();
    println!(
        "\nstats: {} transactions committed, {} aborted; {} records in, {} records out",
        stats.transactions_committed,
        stats.transactions_aborted,
        stats.records_in,
        stats.records_out
    );

    // A read_committed reader of the output sees only committed transactions' records.
    let outputs = read_back(&cluster, &output, events.len()).await?;
    println!("\n`{output}`, read back with read_committed:");
    let mut inputs_seen = HashSet::new();
    for (partition, offset, out) in &outputs {
        let e = &out.original_event;
        println!(
            "  [{partition}]@{offset:<2} user {} {:<12} {:<9} +{:<3} points, balance {:>7.2} -> {:>7.2}",
            out.user_id, e.event_type, e.product_id, out.points_earned, e.balance, out.new_balance
        );
        inputs_seen.insert((e.user_id.clone(), e.event_type.clone()));
    }
    println!(
        "\n{} inputs, {} outputs, {} distinct inputs among them",
        events.len(),
        outputs.len(),
        inputs_seen.len()
    );
    anyhow::ensure!(
        stats.records_in == total && stats.records_out == total,
        "unexpected stats {stats:?}"
    );
    anyhow::ensure!(
        outputs.len() == events.len() && inputs_seen.len() == events.len(),
        "expected one output per input"
    );
    println!("done: one output per input, each committed with its input's offset");
    Ok(())
}

/// Prints what the pipeline does as it goes: each input received, and each transaction's end
/// with its inputs and the offsets (next to read) committed with it.
///
/// The pipeline runs the transform, and polls the shutdown future, in one task, between its
/// commits: so a commit or an abort is seen (by the next transform, or by the shutdown future)
/// before any input of the next transaction is received.
struct Reporter {
    progress: Progress,
    state: Mutex<ReporterState>,
}

#[derive(Default)]
struct ReporterState {
    last: ExactlyOnceStats,
    /// The next offset to read of each partition, for the inputs received since the last
    /// commit or abort.
    open: BTreeMap<(String, i32), i64>,
    /// Inputs received so far, to tell a re-read (after an abort) from a first one.
    seen: HashSet<(String, i32, i64)>,
}

impl Reporter {
    fn new(progress: Progress) -> Self {
        Reporter {
            progress,
            state: Mutex::default(),
        }
    }

    fn received(&self, record: &ConsumerRecord) {
        self.report();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (topic, partition, offset) = (record.topic(), record.partition(), record.offset());
        let again = !state.seen.insert((topic.to_owned(), partition, offset));
        state
            .open
            .insert((topic.to_owned(), partition), record.next_offset().get());
        println!(
            "  received {topic}[{partition}]@{offset}: user {}{}",
            record.key_str().unwrap_or("-"),
            if again {
                " (again, after an abort)"
            } else {
                ""
            }
        );
    }

    /// Prints the transactions that ended since the last call; returns the counts now.
    fn report(&self) -> ExactlyOnceStats {
        let now = self.progress.snapshot();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now.transactions_aborted > state.last.transactions_aborted {
            println!("  transaction aborted: its inputs are read again");
            state.open.clear();
        }
        if now.transactions_committed > state.last.transactions_committed {
            let offsets: Vec<String> = state
                .open
                .iter()
                .map(|((t, p), o)| format!("{t}[{p}]->{o}"))
                .collect();
            println!(
                "  transaction committed: {} inputs, {} outputs, offsets {}",
                now.records_in - state.last.records_in,
                now.records_out - state.last.records_out,
                offsets.join(" ")
            );
            state.open.clear();
        }
        state.last = now;
        now
    }
}

/// Reads `topic` from the start of every partition with a `read_committed` consumer (kafka-kit's
/// default) outside any group, until `expected` records have arrived and no more come for a
/// second (a duplicate would show), or 30 s have passed.
async fn read_back(
    cluster: &TestCluster,
    topic: &str,
    expected: usize,
) -> anyhow::Result<Vec<(i32, i64, ProcessedEvent)>> {
    let mut consumer = Consumer::builder(&cluster.config().build()?)
        .assign(topic, 0..cluster.partition_count(topic).await?)
        .offset_reset(OffsetReset::Earliest)
        .build()?;
    let mut records = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let wait = if records.len() >= expected {
            Duration::from_secs(1)
        } else {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        };
        // Errors the consumer recovers from are logged and skipped; only a fatal one stops us.
        match tokio::time::timeout(wait, next_unless_fatal(&mut consumer)).await {
            Ok(Some(record)) => {
                let record = record?;
                records.push((record.partition(), record.offset(), record.json()?));
            }
            Ok(None) | Err(_) => break,
        }
    }
    consumer.close().await?;
    records.sort_by_key(|(p, o, _)| (*p, *o));
    Ok(records)
}
