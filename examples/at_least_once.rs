//! At-least-once processing with a dead-letter topic (seed 002, the confluent-kafka guide: "commit
//! manually after processing; send what fails to a dead-letter queue, commit, and go on").
//!
//! Twenty orders are produced as JSON; two are not valid JSON, and one has a negative amount that
//! the handler always rejects. An [`AtLeastOnce`] loop processes them: the rejected order is tried
//! three times, then sent to the dead-letter topic with headers saying where it came from and why;
//! the undecodable ones go there at once. Processing goes on past all three, and every offset,
//! dead letters included, is committed: the group's lag ends at 0.
//!
//! # Delivery semantics
//!
//! - **At least once** (this example): commit an offset only after its record was handled (or
//!   dead-lettered). A crash between handling and committing handles the record again after a
//!   restart: nothing is lost, and handlers should be idempotent.
//! - **At most once**: commit before handling. A crash after the commit loses the record, which is
//!   never handled again; fine for logs and metrics, not for orders.
//! - **Exactly once**: the handler's output and the consumed offsets are committed together in a
//!   Kafka transaction (consume-transform-produce, `read_committed` readers): kafka-kit's
//!   `transaction::ExactlyOnce`, shown in the `transactional_processor` and `eos_pipeline`
//!   examples.
//!
//! Runs on an embedded broker, or on the cluster in `KAFKA_BOOTSTRAP_SERVERS`:
//!
//! ```text
//! cargo run --example at_least_once
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kafka_kit::consumer::processing::{dead_letter_headers, AtLeastOnce, RetryPolicy};
use kafka_kit::consumer::{group_lag, Consumer, ConsumerRecord, OffsetReset};
use kafka_kit::headers::HeaderReader;
use kafka_kit::producer::{Producer, Record};
use kafka_kit::rdkafka::Message;
use kafka_kit::testing::TestCluster;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u32,
    customer: String,
    amount: f64,
}

const ORDERS: u32 = 20;
/// Not JSON: these never reach the handler, and are dead-lettered at once.
const UNDECODABLE: [u32; 2] = [6, 13];
/// A negative amount: the handler rejects it on every attempt.
const REJECTED: u32 = 9;
const ATTEMPTS: u32 = 3;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    let cluster = TestCluster::from_env_or_embedded()?;
    println!("cluster: {}", cluster.describe());
    // Topics and a group of their own per run, so that re-runs show just this run's records.
    let run = &kafka_kit::testing::run_id();
    let (topic, dlt, group) = (
        format!("orders-{run}"),
        format!("orders-dlt-{run}"),
        format!("order-processor-{run}"),
    );
    // One partition: records are processed in order, so once the last order is handled, all
    // earlier ones are (see `shutdown` below).
    cluster.create_topic(&topic, 1).await?;
    cluster.create_topic(&dlt, 1).await?;

    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    let customers = ["alice", "bob", "carol", "dave"];
    for id in 1..=ORDERS {
        let key = format!("order-{id}");
        let payload = if UNDECODABLE.contains(&id) {
            format!("order {id}: 3x coffee, {}", customers[id as usize % 4])
        } else {
            let amount = if id == REJECTED {
                -5.0
            } else {
                f64::from(id) * 2.5
            };
            serde_json::to_string(&Order {
                id,
                customer: customers[id as usize % 4].into(),
                amount,
            })?
        };
        producer
            .send(Record::to(&topic).key(&key).payload(&payload))
            .await?;
    }
    println!(
        "\nproduced {ORDERS} orders to `{topic}`: orders {UNDECODABLE:?} are not JSON, order \
         {REJECTED} has a negative amount"
    );

    // The loop stops once every record is accounted for: each good order handled, and the
    // rejected one on its last attempt (it is dead-lettered right after, before the loop looks at
    // `shutdown` again). Undecodable records never reach the handler.
    let handled = Arc::new(AtomicUsize::new(0));
    let expected = (ORDERS as usize) - UNDECODABLE.len();
    let shutdown = {
        let handled = handled.clone();
        async move {
            while handled.load(Ordering::SeqCst) < expected {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let handler = {
        let handled = handled.clone();
        let attempts = Arc::new(AtomicUsize::new(0));
        move |order: Order, record: Arc<ConsumerRecord>| {
            let (handled, attempts) = (handled.clone(), attempts.clone());
            async move {
                if order.amount < 0.0 {
                    let attempt = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                    println!(
                        "  order {:>2} @{:<2} attempt {attempt}: rejected (negative amount {})",
                        order.id,
                        record.offset(),
                        order.amount
                    );
                    if attempt == ATTEMPTS as usize {
                        handled.fetch_add(1, Ordering::SeqCst);
                    }
                    anyhow::bail!("negative amount {}", order.amount);
                }
                println!(
                    "  order {:>2} @{:<2} processed: {} pays {:.2}",
                    order.id,
                    record.offset(),
                    order.customer,
                    order.amount
                );
                handled.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }
    };

    let consumer = Consumer::builder(&cluster.consumer_config().build()?)
        .group_id(&group)
        .topics([&topic])
        .offset_reset(OffsetReset::Earliest)
        .build()?;
    println!("\nprocessing as group `{group}`, dead letters to `{dlt}`:");
    let processing = AtLeastOnce::new(consumer)
        .retry(RetryPolicy::attempts(ATTEMPTS).backoff(Duration::from_millis(50)))
        .dead_letter(producer.clone(), &dlt)
        .commit_every(5, Duration::from_millis(500))
        .run_json(handler, shutdown);
    let stats = tokio::time::timeout(Duration::from_secs(30), processing)
        .await
        .context("processing did not finish within 30 s")??;
    producer.close().await?;
    println!(
        "\nstats: {} processed, {} retries, {} dead-lettered, {} batch commits",
        stats.processed, stats.retries, stats.dead_lettered, stats.commits
    );

    println!("\ndead letters in `{dlt}`:");
    let letters = cluster.read_topic(&dlt, 3, Duration::from_secs(30)).await?;
    for letter in &letters {
        let headers = HeaderReader::new(letter.headers());
        println!(
            "  key={} payload={}",
            String::from_utf8_lossy(letter.key().unwrap_or_default()),
            String::from_utf8_lossy(letter.payload().unwrap_or_default())
        );
        for name in [
            dead_letter_headers::ORIGINAL_TOPIC,
            dead_letter_headers::ORIGINAL_PARTITION,
            dead_letter_headers::ORIGINAL_OFFSET,
            dead_letter_headers::ATTEMPTS,
            dead_letter_headers::ERROR,
        ] {
            println!("    {name:<22} {}", headers.get_str(name)?.unwrap_or("-"));
        }
    }

    let lag = group_lag(&cluster.config().build()?, &group, &[topic.as_str()]).await?;
    let left: i64 = lag.iter().map(|p| p.lag).sum();
    println!("\nlag of group `{group}`:");
    for p in &lag {
        println!(
            "  {}[{}]: committed {}, high watermark {}, lag {}",
            p.topic,
            p.partition,
            p.committed.map_or("-".into(), |c| c.to_string()),
            p.high_watermark,
            p.lag
        );
    }
    anyhow::ensure!(
        stats.processed == u64::from(ORDERS) - 3 && stats.dead_lettered == 3,
        "unexpected stats {stats:?}"
    );
    anyhow::ensure!(letters.len() == 3, "{} dead letters, not 3", letters.len());
    anyhow::ensure!(left == 0, "{left} records left uncommitted");
    println!("\ndone: every order processed or dead-lettered, and all committed");
    Ok(())
}
