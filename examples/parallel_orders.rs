//! Key-ordered parallel processing: order events of many users, each handled by a slow call,
//! many users at once, each user's journey in order (seed 001: "messages of one user_id go to
//! one partition, so that the business order holds").
//!
//! 200 users each go through seed 001's shopping journey (view, add to cart, checkout, payment,
//! order created, shipped, delivered): 1,400 events keyed by user id over 6 partitions. Each
//! event is handled by a simulated call to an order service that takes 10 ms.
//!
//! - With [`AtLeastOnce`]'s default, one record at a time, that is 100 events a second at most;
//!   one record per partition at a time (`parallel_partitions`), 600.
//! - With `concurrency(64)`, 64 events are handled at once, and each user's events still one
//!   after another, in offset order: the handler checks that every user's journey arrives in
//!   order, and the example fails if one does not.
//!
//! Commits never pass an event still being handled, so a crash replays the unfinished ones
//! (at least once), never skips one.
//!
//! ```text
//! cargo run --example parallel_orders
//! KAFKA_BOOTSTRAP_SERVERS=localhost:9092 cargo run --example parallel_orders
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use kafka_kit::consumer::processing::AtLeastOnce;
use kafka_kit::consumer::{Consumer, ConsumerRecord, OffsetReset};
use kafka_kit::producer::{Producer, Record};
use kafka_kit::testing::{run_id, TestCluster};
use serde::{Deserialize, Serialize};

/// Seed 001's journey, in the order every user goes through it.
const JOURNEY: [&str; 7] = [
    "view_product",
    "add_to_cart",
    "checkout",
    "payment_success",
    "order_created",
    "order_shipped",
    "order_delivered",
];
const USERS: u32 = 200;
const PARTITIONS: i32 = 6;
/// The simulated order-service call.
const CALL: Duration = Duration::from_millis(10);

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    user_id: u32,
    event_type: String,
    step: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cluster = TestCluster::from_env_or_embedded()?;
    println!("cluster: {}", cluster.describe());
    let topic = format!("user-orders-{}", run_id());
    cluster.create_topic(&topic, PARTITIONS).await?;

    // Users' journeys interleave, as they would in production: step by step, all users.
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    for (step, event_type) in JOURNEY.iter().enumerate() {
        for user_id in 1000..1000 + USERS {
            let event = Event {
                user_id,
                event_type: (*event_type).to_owned(),
                step,
            };
            producer
                .send_and_forget(
                    Record::to(&topic)
                        .key(&user_id.to_string())
                        .payload(&serde_json::to_vec(&event)?),
                )
                .await?;
        }
    }
    producer.close().await?;
    let events = USERS as usize * JOURNEY.len();
    println!("{events} events of {USERS} users produced to {topic} ({PARTITIONS} partitions)\n");

    let one = process(&cluster, &topic, 1, 300).await?;
    let many = process(&cluster, &topic, 64, events).await?;
    println!(
        "\nconcurrency 64 handled events {:.0}x as fast as one at a time, every user's journey in order",
        many / one
    );
    Ok(())
}

/// Handles the first `events` events of `topic` with `concurrency`, checking every user's order;
/// returns events per second.
async fn process(
    cluster: &TestCluster,
    topic: &str,
    concurrency: usize,
    events: usize,
) -> anyhow::Result<f64> {
    let consumer = Consumer::builder(&cluster.consumer_config().build()?)
        .group_id(format!("orders-{concurrency}-{}", run_id()))
        .topics([topic])
        .offset_reset(OffsetReset::Earliest)
        .build()?;
    // Measure the handling, not the group join.
    let joined = Instant::now();
    while consumer.assignment()?.is_empty() {
        ensure!(
            joined.elapsed() < Duration::from_secs(60),
            "no partition assigned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let next_step: Arc<Mutex<HashMap<u32, usize>>> = Arc::default();
    let out_of_order = Arc::new(AtomicUsize::new(0));
    let handled = Arc::new(AtomicUsize::new(0));
    let all_done = Arc::new(tokio::sync::Notify::new());
    let looped = AtLeastOnce::new(consumer).concurrency(concurrency);
    let (steps, wrong, count, done) = (
        next_step.clone(),
        out_of_order.clone(),
        handled.clone(),
        all_done.clone(),
    );
    let started = Instant::now();
    let run = looped.run_json(
        move |event: Event, _record: Arc<ConsumerRecord>| {
            let (steps, wrong, count, done) =
                (steps.clone(), wrong.clone(), count.clone(), done.clone());
            async move {
                // The user's previous event must be done before this one starts.
                let expected = {
                    let mut steps = steps.lock().unwrap();
                    let next = steps.entry(event.user_id).or_insert(0);
                    let expected = *next;
                    *next = event.step + 1;
                    expected
                };
                if expected != event.step {
                    wrong.fetch_add(1, Ordering::SeqCst);
                    eprintln!(
                        "user {}: {} arrived before step {expected}",
                        event.user_id, event.event_type
                    );
                }
                tokio::time::sleep(CALL).await; // the order service
                if count.fetch_add(1, Ordering::SeqCst) + 1 == events {
                    done.notify_one();
                }
                anyhow::Ok(())
            }
        },
        async move { all_done.notified().await },
    );
    let stats = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .context("not done within 120 s")??;
    let elapsed = started.elapsed();
    let rate = handled.load(Ordering::SeqCst) as f64 / elapsed.as_secs_f64();
    println!(
        "concurrency {concurrency:>2}: {} events in {:.1} s, {rate:.0} events/s; every user's journey in order: {}",
        stats.processed,
        elapsed.as_secs_f64(),
        out_of_order.load(Ordering::SeqCst) == 0,
    );
    ensure!(
        out_of_order.load(Ordering::SeqCst) == 0,
        "some user's events were handled out of order"
    );
    let users = next_step.lock().unwrap().len();
    if events == USERS as usize * JOURNEY.len() {
        ensure!(users == USERS as usize, "{users} users seen");
        ensure!(
            next_step
                .lock()
                .unwrap()
                .values()
                .all(|&n| n == JOURNEY.len()),
            "a journey is incomplete"
        );
    }
    Ok(rate)
}
