//! Key-ordered concurrency in `AtLeastOnce`: many keys at once, each key in order, commits
//! never past an unfinished record, revokes that commit exactly the finished prefix, poison
//! records that block only their key. On the embedded broker, or `KAFKA_BOOTSTRAP_SERVERS`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context as _};
use kafka_kit::consumer::processing::{dead_letter_headers, AtLeastOnce, RetryPolicy};
use kafka_kit::consumer::{
    Consumer, ConsumerBuilder, ConsumerRecord, OffsetReset, RebalanceListener, Revoked,
};
use kafka_kit::producer::{Producer, Record};
use kafka_kit::testing::TestCluster;
use tokio::sync::Notify;

fn cluster() -> anyhow::Result<TestCluster> {
    common::init_tracing();
    Ok(TestCluster::from_env_or_embedded()?)
}

/// `count` records spread over `partitions` partitions with `keys` keys (`k{i % keys}`), each
/// key on one partition; payload `i`.
async fn produce_keyed(
    cluster: &TestCluster,
    topic: &str,
    partitions: i32,
    count: usize,
    keys: usize,
) -> anyhow::Result<()> {
    cluster.create_topic(topic, partitions).await?;
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    for i in 0..count {
        let (key, payload) = (format!("k{}", i % keys), i.to_string());
        producer
            .send_and_forget(Record::to(topic).key(&key).payload(&payload))
            .await?;
    }
    producer.close().await?;
    Ok(())
}

fn consumer(cluster: &TestCluster, group: &str, topic: &str) -> anyhow::Result<ConsumerBuilder> {
    Ok(Consumer::builder(
        &cluster
            .consumer_config()
            .set("session.timeout.ms", "3000")
            .build()?,
    )
    .group_id(group)
    .topics([topic])
    .offset_reset(OffsetReset::Earliest))
}

/// The offsets processed for each (partition, key), in processing order.
type OffsetsByKey = HashMap<(i32, String), Vec<i64>>;

/// (partition, key) of a record, and its offset.
fn place(record: &ConsumerRecord) -> ((i32, String), i64) {
    let key = record.key_str().unwrap_or_default().to_owned();
    ((record.partition(), key), record.offset())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_is_processed_in_order_while_keys_run_in_parallel() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("ordered");
    let total = 600;
    produce_keyed(&cluster, &topic, 3, total, 40).await?;
    let seen: Arc<Mutex<OffsetsByKey>> = Arc::default();
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let done = Arc::new(Notify::new());
    let count = Arc::new(AtomicUsize::new(0));
    let looped = AtLeastOnce::new(consumer(&cluster, &common::unique_topic("g"), &topic)?.build()?)
        .concurrency(16);
    let progress = looped.progress();
    let (s, r, m, d, c) = (
        seen.clone(),
        running.clone(),
        most.clone(),
        done.clone(),
        count.clone(),
    );
    let stats = tokio::time::timeout(
        Duration::from_secs(60),
        looped.run(
            move |record: Arc<ConsumerRecord>| {
                let (s, r, m, d, c) = (s.clone(), r.clone(), m.clone(), d.clone(), c.clone());
                async move {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    // Uneven work: later records of a key must still wait for earlier ones.
                    let offset = record.offset();
                    tokio::time::sleep(Duration::from_millis((offset * 7 % 5) as u64)).await;
                    let (key, offset) = place(&record);
                    s.lock().unwrap().entry(key).or_default().push(offset);
                    r.fetch_sub(1, Ordering::SeqCst);
                    if c.fetch_add(1, Ordering::SeqCst) + 1 == total {
                        d.notify_one();
                    }
                    anyhow::Ok(())
                }
            },
            async move { done.notified().await },
        ),
    )
    .await
    .context("not all records processed within 60 s")??;
    ensure!(stats.processed == total as u64, "{stats:?}");
    let seen = seen.lock().unwrap();
    ensure!(seen.len() == 40, "{} keys seen", seen.len());
    for (key, offsets) in seen.iter() {
        ensure!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "key {key:?} out of order: {offsets:?}"
        );
    }
    let most = most.load(Ordering::SeqCst);
    println!("600 records, 40 keys, concurrency 16: at most {most} at once");
    ensure!(
        most > 3,
        "at most {most} records ran at once: no more than one per partition"
    );
    ensure!(
        most <= 16,
        "{most} records ran at once, over the concurrency of 16"
    );
    let snapshot = progress.snapshot();
    ensure!(
        snapshot.in_flight == 0 && snapshot.waiting == 0,
        "{snapshot:?}"
    );
    Ok(())
}

/// Releases one held record when told; every other record finishes at once.
struct Hold {
    offset_key: String,
    release: Notify,
    held: Notify,
}

/// A handler that holds the first record of key `slow` until released.
fn holding_handler(
    hold: Arc<Hold>,
    processed: Arc<Mutex<Vec<(i32, i64)>>>,
) -> impl Fn(
    Arc<ConsumerRecord>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>
       + Send
       + Sync
       + 'static {
    let first = Arc::new(AtomicUsize::new(0));
    move |record: Arc<ConsumerRecord>| {
        let (hold, processed, first) = (hold.clone(), processed.clone(), first.clone());
        Box::pin(async move {
            if record.key_str() == Some(hold.offset_key.as_str())
                && first.fetch_add(1, Ordering::SeqCst) == 0
            {
                hold.held.notify_one();
                hold.release.notified().await;
            }
            processed
                .lock()
                .unwrap()
                .push((record.partition(), record.offset()));
            Ok(())
        })
    }
}

/// Fills one partition of a new `topic` with `count` records of distinct keys, but the one at
/// `slow` has key `slow`; a group name, and a [`Hold`] for that key.
async fn slow_key_at(
    cluster: &TestCluster,
    topic: &str,
    count: usize,
    slow: usize,
) -> anyhow::Result<(String, Arc<Hold>)> {
    cluster.create_topic(topic, 1).await?;
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    for i in 0..count {
        let key = if i == slow {
            "slow".to_owned()
        } else {
            format!("k{i}")
        };
        producer
            .send(Record::to(topic).key(&key).payload(&i.to_string()))
            .await?;
    }
    producer.close().await?;
    let hold = Arc::new(Hold {
        offset_key: "slow".into(),
        release: Notify::new(),
        held: Notify::new(),
    });
    Ok((common::unique_topic("g"), hold))
}

/// Crash with a record held while later ones finished and were committed: after a restart, the
/// held record is processed again, and nothing before it is skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_commit_passes_an_unfinished_record() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("held");
    // One partition: key `slow` first, then 49 records of other keys.
    let (group, hold) = slow_key_at(&cluster, &topic, 50, 0).await?;
    let processed: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let looped = AtLeastOnce::new(consumer(&cluster, &group, &topic)?.build()?)
        .concurrency(8)
        .commit_every(1, Duration::from_millis(50));
    let progress = looped.progress();
    let run = tokio::spawn(looped.run(
        holding_handler(hold.clone(), processed.clone()),
        std::future::pending::<()>(),
    ));
    tokio::time::timeout(Duration::from_secs(30), hold.held.notified())
        .await
        .context("the held record never came")?;
    // Everything else finishes and commits go out meanwhile.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while processed.lock().unwrap().len() < 49 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the other records did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let snapshot = progress.snapshot();
    println!("while offset 0 is held: {snapshot:?}");
    ensure!(
        snapshot.stats.commits > 0,
        "no commit went out: {snapshot:?}"
    );
    let point = snapshot
        .commit_points
        .iter()
        .next()
        .map(|(_, _, o)| o.get());
    ensure!(
        point == Some(0),
        "the commit point passed the held record: {point:?}"
    );
    // Crash: the task is dropped with the record held; the consumer closes.
    run.abort();
    let _ = run.await;

    let again: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let released = Arc::new(Hold {
        offset_key: "none".into(),
        release: Notify::new(),
        held: Notify::new(),
    });
    let restarted = AtLeastOnce::new(consumer(&cluster, &group, &topic)?.build()?).concurrency(8);
    let (a, d) = (again.clone(), Arc::new(Notify::new()));
    let stop = d.clone();
    let watcher = tokio::spawn(async move {
        loop {
            if a.lock().unwrap().len() >= 50 {
                stop.notify_one();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    tokio::time::timeout(
        Duration::from_secs(30),
        restarted.run(holding_handler(released, again.clone()), async move {
            d.notified().await;
        }),
    )
    .await
    .context("the restart did not process everything again")??;
    watcher.await?;
    let again = again.lock().unwrap();
    ensure!(
        again.contains(&(0, 0)),
        "the held record was not processed again"
    );
    println!(
        "after the restart: {} records processed again, from offset 0",
        again.len()
    );
    Ok(())
}

/// Records the commits of each revoke.
#[derive(Clone, Default)]
struct Revokes(Arc<Mutex<Vec<Revoked>>>);

impl RebalanceListener for Revokes {
    fn on_revoked(&self, revoked: &Revoked) {
        self.0.lock().unwrap().push(revoked.clone());
    }
}

/// A revoke while a record is held commits exactly the finished prefix: the held record's
/// offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_mid_flight_commits_exactly_the_finished_prefix() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("revoke");
    let (group, hold) = slow_key_at(&cluster, &topic, 30, 10).await?;
    let revokes = Revokes::default();
    let processed: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let looped = AtLeastOnce::new(
        consumer(&cluster, &group, &topic)?
            .listener(revokes.clone())
            .revoke_timeout(Duration::from_millis(500))
            .build()?,
    )
    .concurrency(8);
    let stop = Arc::new(Notify::new());
    let stopping = stop.clone();
    let run = tokio::spawn(looped.run(
        holding_handler(hold.clone(), processed.clone()),
        async move { stopping.notified().await },
    ));
    tokio::time::timeout(Duration::from_secs(30), hold.held.notified())
        .await
        .context("the held record never came")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while processed.lock().unwrap().len() < 29 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the other records did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A second member joins: the eager rebalance revokes the partition while 10 is held.
    let other = consumer(&cluster, &group, &topic)?.build()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let revoked = loop {
        if let Some(r) = revokes.0.lock().unwrap().first().cloned() {
            break r;
        }
        ensure!(tokio::time::Instant::now() < deadline, "no revoke");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The mock refuses commits while the group rebalances (a real broker takes them from the
    // old generation): what the revoke sent is the point, and whether it landed depends on it.
    let offsets: Vec<(i32, i64)> = revoked
        .offsets
        .iter()
        .map(|(_, p, o)| (p, o.get()))
        .collect();
    println!(
        "revoked with offset 10 held: sent {offsets:?}, {}",
        match &revoked.committed {
            Ok(_) => "committed".to_owned(),
            Err(e) => format!("refused: {e}"),
        }
    );
    if !cluster.is_embedded() {
        ensure!(revoked.committed.is_ok(), "{:?}", revoked.committed);
    }
    ensure!(
        offsets == [(0, 10)],
        "committed {offsets:?}, not the prefix before 10"
    );
    hold.release.notify_one();
    stop.notify_one();
    drop(other);
    tokio::time::timeout(Duration::from_secs(30), run).await???;
    Ok(())
}

/// A record that always fails holds up only its own key: the other keys go on, and it reaches
/// the dead-letter topic after its retries, before the later records of its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_blocks_only_its_key_and_is_dead_lettered() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("poison-keys");
    let dlt = common::unique_topic("poison-keys-dlt");
    cluster.create_topic(&dlt, 1).await?;
    produce_keyed(&cluster, &topic, 2, 200, 10).await?;
    let order: Arc<Mutex<BTreeMap<String, Vec<i64>>>> = Arc::default();
    let finished = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let (o, f, d) = (order.clone(), finished.clone(), done.clone());
    let stats = tokio::time::timeout(
        Duration::from_secs(60),
        AtLeastOnce::new(consumer(&cluster, &common::unique_topic("g"), &topic)?.build()?)
            .concurrency(8)
            .retry(RetryPolicy::attempts(3).backoff(Duration::from_millis(100)))
            .dead_letter(Producer::builder(&cluster.config().build()?).build()?, &dlt)
            .run(
                move |record: Arc<ConsumerRecord>| {
                    let (o, f, d) = (o.clone(), f.clone(), d.clone());
                    async move {
                        // Record 5 (key k5) is poison.
                        if record.payload() == Some(b"5".as_slice()) {
                            anyhow::bail!("poison");
                        }
                        let key = record.key_str().unwrap_or_default().to_owned();
                        o.lock()
                            .unwrap()
                            .entry(key)
                            .or_default()
                            .push(record.offset());
                        if f.fetch_add(1, Ordering::SeqCst) + 1 == 199 {
                            d.notify_one();
                        }
                        Ok(())
                    }
                },
                async move { done.notified().await },
            ),
    )
    .await
    .context("the other records were not all processed")??;
    ensure!(
        stats.dead_lettered == 1 && stats.processed == 199,
        "{stats:?}"
    );
    ensure!(stats.retries == 2, "{stats:?}");
    for (key, offsets) in order.lock().unwrap().iter() {
        ensure!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {offsets:?}"
        );
    }
    let dead = cluster.read_topic(&dlt, 1, Duration::from_secs(30)).await?;
    ensure!(dead.len() == 1, "{} dead letters", dead.len());
    let headers =
        kafka_kit::headers::HeaderReader::new(kafka_kit::rdkafka::Message::headers(&dead[0]));
    let attempts = headers.get_str(dead_letter_headers::ATTEMPTS)?;
    ensure!(attempts == Some("3"), "attempts {attempts:?}");
    Ok(())
}

/// A hot key cannot grow its queue without bound: past 256 waiting, its partition is paused
/// (what the consumer had fetched still arrives), and the other keys go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_holds_back_its_partition_not_the_others() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("hot");
    cluster.create_topic(&topic, 2).await?;
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    for i in 0..1500 {
        producer
            .send_and_forget(
                Record::to(&topic)
                    .partition(0)
                    .key("hot")
                    .payload(&i.to_string()),
            )
            .await?;
    }
    for i in 0..100 {
        let key = format!("cold-{i}");
        producer
            .send_and_forget(Record::to(&topic).partition(1).key(&key).payload("c"))
            .await?;
    }
    producer.close().await?;
    let buffer = 64;
    let looped = AtLeastOnce::new(
        consumer(&cluster, &common::unique_topic("g"), &topic)?
            .buffer(buffer)
            .build()?,
    )
    .concurrency(8);
    let progress = looped.progress();
    let (hot, cold) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (h, c) = (hot.clone(), cold.clone());
    let hot_left_when_cold_done = Arc::new(AtomicUsize::new(usize::MAX));
    let left = hot_left_when_cold_done.clone();
    let run = tokio::spawn(looped.run(
        move |record: Arc<ConsumerRecord>| {
            let (h, c, left) = (h.clone(), c.clone(), left.clone());
            async move {
                if record.partition() == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    h.fetch_add(1, Ordering::SeqCst);
                } else if c.fetch_add(1, Ordering::SeqCst) + 1 == 100 {
                    left.store(1500 - h.load(Ordering::SeqCst), Ordering::SeqCst);
                }
                anyhow::Ok(())
            }
        },
        std::future::pending::<()>(),
    ));
    let mut most = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while hot.load(Ordering::SeqCst) < 1500 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the hot key did not finish"
        );
        most = most.max(progress.snapshot().max_waiting_per_key);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    run.abort();
    let left = hot_left_when_cold_done.load(Ordering::SeqCst);
    println!("hot key: at most {most} waiting; {left} of its 1500 records left when the 100 cold keys were done");
    ensure!(
        left != usize::MAX && left > 0,
        "the cold keys waited for the hot one ({left} left)"
    );
    // 256 before the pause, plus what the consumer had fetched (its buffer and one batch).
    let bound = 256 + buffer + 256;
    ensure!(
        most > 0 && most <= bound,
        "at most {most} waiting for the hot key (bound {bound})"
    );
    Ok(())
}
