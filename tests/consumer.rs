//! Consumer scenarios on the embedded broker (or on `KAFKA_BOOTSTRAP_SERVERS` when it is set):
//! resuming after commits, rebalances that lose nothing, dead letters, lag, checkpoints.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use futures::StreamExt;
use kafka_kit::consumer::processing::{dead_letter_headers, AtLeastOnce, RetryPolicy};
use kafka_kit::consumer::{
    group_lag, Assignment, Consumer, ConsumerRecord, MemoryCheckpoints, NextOffset, OffsetReset,
    StartAt, StopAt, TopicPartition,
};
use kafka_kit::producer::{Producer, Record};
use kafka_kit::rdkafka::Message;
use kafka_kit::testing::{next_unless_fatal, TestCluster};

fn cluster() -> anyhow::Result<TestCluster> {
    common::init_tracing();
    Ok(TestCluster::from_env_or_embedded()?)
}

/// Produces `count` records `prefix-i` (key `k{i % keys}`) and waits for all of them.
async fn produce(
    cluster: &TestCluster,
    topic: &str,
    prefix: &str,
    count: usize,
    keys: usize,
) -> anyhow::Result<()> {
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    for i in 0..count {
        let (key, payload) = (format!("k{}", i % keys), format!("{prefix}-{i}"));
        producer
            .send_and_forget(Record::to(topic).key(&key).payload(&payload))
            .await?;
    }
    producer.close().await?;
    Ok(())
}

fn consumer(
    cluster: &TestCluster,
    group: &str,
    topic: &str,
) -> anyhow::Result<kafka_kit::consumer::ConsumerBuilder> {
    Ok(Consumer::builder(&cluster.consumer_config().build()?)
        .group_id(group)
        .topics([topic])
        .offset_reset(OffsetReset::Earliest))
}

/// The next record within 30 s; consumer errors that are not fatal (a committed-offset fetch that
/// some brokers answer with `GROUP_ID_NOT_FOUND` for a new group) are logged and skipped.
async fn next(consumer: &mut Consumer) -> anyhow::Result<ConsumerRecord> {
    let record = tokio::time::timeout(Duration::from_secs(30), next_unless_fatal(consumer))
        .await
        .context("no record within 30 s")?
        .context("the stream ended")??;
    Ok(record)
}

/// Resolves once `counter` reaches `target` (a shutdown signal for processing loops).
async fn reached(counter: Arc<AtomicUsize>, target: usize) {
    while counter.load(Ordering::SeqCst) < target {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_consumer_resumes_right_after_the_last_commit() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("resume");
    cluster.create_topic(&topic, 1).await?;
    produce(&cluster, &topic, "m", 20, 1).await?;
    let group = common::unique_topic("group");

    let mut first = consumer(&cluster, &group, &topic)?.build()?;
    for expected in 0..10 {
        let record = next(&mut first).await?;
        ensure!(
            record.offset() == expected,
            "read {} instead of {expected}",
            record.offset()
        );
        if expected == 9 {
            first.commit(&record).await?; // commits 10: the next to read
        }
    }
    let committed = first.committed().await?;
    ensure!(
        committed.get(&topic, 0) == Some(NextOffset::resume_at(10)),
        "{committed:?}"
    );
    first.close().await?;

    let mut second = consumer(&cluster, &group, &topic)?.build()?;
    let record = next(&mut second).await?;
    ensure!(
        record.offset() == 10,
        "resumed at {} instead of 10",
        record.offset()
    );
    ensure!(record.payload() == Some(&b"m-10"[..]));
    second.close().await?;
    Ok(())
}

/// Sets a flag when its consumer is assigned partitions.
struct AssignedFlag(Arc<std::sync::atomic::AtomicBool>);

impl kafka_kit::consumer::RebalanceListener for AssignedFlag {
    fn on_assigned(&self, assigned: &kafka_kit::consumer::Assigned) {
        if !assigned.starts.is_empty() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

/// Two members of one group, an at-least-once loop each: the second one joining mid-stream moves
/// partitions, and every record is processed (at least once), with all offsets committed.
async fn rebalance_loses_nothing(assignment: Assignment) -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("rebalance");
    cluster.create_topic(&topic, 4).await?;
    let group = common::unique_topic("group");
    let total = 400;
    produce(&cluster, &topic, "a", total / 2, 40).await?;

    let seen: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let member =
        |name: &'static str, stop: tokio::sync::oneshot::Receiver<()>| -> anyhow::Result<_> {
            let assigned = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let consumer = consumer(&cluster, &group, &topic)?
                .assignment(assignment)
                .listener(AssignedFlag(assigned.clone()))
                .build()?;
            let (seen, done, calls) = (seen.clone(), done.clone(), calls.clone());
            let task = tokio::spawn(
                AtLeastOnce::new(consumer)
                    .commit_every(25, Duration::from_millis(200))
                    .parallel_partitions(true)
                    .run(
                        move |record| {
                            let (seen, done) = (seen.clone(), done.clone());
                            calls.fetch_add(1, Ordering::SeqCst);
                            async move {
                                let payload =
                                    String::from_utf8_lossy(record.payload().unwrap_or_default())
                                        .into_owned();
                                {
                                    let mut seen = seen.lock().unwrap();
                                    let times = seen.entry(payload).or_insert(0);
                                    *times += 1;
                                    if *times == 1 {
                                        done.fetch_add(1, Ordering::SeqCst);
                                    }
                                }
                                tracing::debug!(
                                    member = name,
                                    partition = record.partition(),
                                    "processed"
                                );
                                // A little work per record, so that the second member has some left.
                                tokio::time::sleep(Duration::from_millis(2)).await;
                                Ok::<_, std::convert::Infallible>(())
                            }
                        },
                        stop,
                    ),
            );
            Ok((task, assigned))
        };
    let (stop_first, first_stops) = tokio::sync::oneshot::channel();
    let (stop_second, second_stops) = tokio::sync::oneshot::channel();
    let (first, _) = member("first", first_stops)?;
    // Let the first member own everything and process some, then add the second, and once it has
    // partitions, the rest of the records.
    tokio::time::timeout(Duration::from_secs(30), reached(done.clone(), 20))
        .await
        .context("first member stalled")?;
    let (second, second_assigned) = member("second", second_stops)?;
    tokio::time::timeout(Duration::from_secs(30), async {
        while !second_assigned.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .context("the second member was never assigned partitions")?;
    produce(&cluster, &topic, "b", total / 2, 40).await?;
    tokio::time::timeout(Duration::from_secs(60), reached(done.clone(), total))
        .await
        .with_context(|| format!("only {} of {total} processed", done.load(Ordering::SeqCst)))?;

    // Members leave one after the other, each committing on its way out. The first gets the
    // second's partitions back and goes on from their committed offsets; it stops once idle.
    let _ = stop_second.send(());
    let b = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .context("second member did not stop")???;
    let mut last = usize::MAX;
    while calls.load(Ordering::SeqCst) != last {
        last = calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    let _ = stop_first.send(());
    let a = tokio::time::timeout(Duration::from_secs(30), first)
        .await
        .context("first member did not stop")???;
    ensure!(a.processed + b.processed >= total as u64, "{a:?} {b:?}");
    ensure!(
        b.processed > 0,
        "the second member processed nothing: {b:?}"
    );
    let seen = seen.lock().unwrap().clone();
    ensure!(
        seen.len() == total,
        "{} distinct records processed of {total}",
        seen.len()
    );
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    tracing::info!(duplicates, first = ?a, second = ?b, "rebalance test");

    // Everything is committed: the group has no lag left.
    let lag = group_lag(&cluster.config().build()?, &group, &[&topic]).await?;
    ensure!(
        lag.iter().all(|p| p.lag == 0),
        "lag left after both members stopped: {lag:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eager_rebalance_loses_nothing() -> anyhow::Result<()> {
    rebalance_loses_nothing(Assignment::Eager).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_rebalance_loses_nothing() -> anyhow::Result<()> {
    rebalance_loses_nothing(Assignment::CooperativeSticky).await
}

/// The first member stops reading (busy) with a full buffer; the second one still gets its
/// partitions, because the first member's polling thread serves the rebalance on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_happens_while_the_application_is_busy() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("busy");
    cluster.create_topic(&topic, 2).await?;
    produce(&cluster, &topic, "m", 200, 20).await?;
    let group = common::unique_topic("group");

    let mut busy = consumer(&cluster, &group, &topic)?.buffer(4).build()?;
    let first = next(&mut busy).await?;
    ensure!(
        busy.assignment()?.len() == 2,
        "the first member should own both partitions"
    );
    // From here on the first member reads nothing: its buffer (4) fills up at once.
    let started = Instant::now();
    let mut joiner = consumer(&cluster, &group, &topic)?.build()?;
    let record = next(&mut joiner).await?;
    ensure!(record.partition() != first.partition() || busy.assignment()?.len() < 2);
    ensure!(
        busy.assignment()?.len() == 1,
        "the busy member still owns {:?}",
        busy.assignment()?
    );
    tracing::info!(after = ?started.elapsed(), "the joining member got a partition while the other was busy");
    // Records of the partition the busy member lost are not handed to it any more.
    let lost = joiner.assignment()?[0].partition;
    for _ in 0..4 {
        let Ok(Some(Ok(r))) = tokio::time::timeout(Duration::from_secs(2), busy.recv()).await
        else {
            break;
        };
        ensure!(
            r.partition() != lost,
            "a record of the revoked partition {lost} was handed out"
        );
    }
    busy.close().await?;
    joiner.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_and_processing_goes_on() -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Order {
        id: u32,
        amount: f64,
    }
    let cluster = cluster()?;
    let (topic, dlt) = (
        common::unique_topic("orders"),
        common::unique_topic("orders-dlt"),
    );
    cluster.create_topic(&topic, 1).await?;
    cluster.create_topic(&dlt, 1).await?;
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    let values = [
        r#"{"id":1,"amount":10.0}"#,
        "not json at all",           // cannot be decoded
        r#"{"id":2,"amount":-5.0}"#, // the handler always rejects it
        r#"{"id":3,"amount":7.5}"#,
        r#"{"id":4}"#, // missing field: cannot be decoded
        r#"{"id":5,"amount":1.0}"#,
    ];
    for value in values {
        producer
            .send(Record::to(&topic).key("orders").payload(value))
            .await?;
    }
    let group = common::unique_topic("group");
    let consumer = consumer(&cluster, &group, &topic)?.build()?;
    let finished = Arc::new(AtomicUsize::new(0));
    let processed = Arc::new(Mutex::new(Vec::new()));
    let attempts = Arc::new(AtomicUsize::new(0));
    // Three processed plus one rejected for good; the two undecodable ones never reach the
    // handler. Records go in order, so by then all six are done.
    let stop = reached(finished.clone(), 4);
    let stats = {
        let (finished, processed, attempts) =
            (finished.clone(), processed.clone(), attempts.clone());
        AtLeastOnce::new(consumer)
            .retry(RetryPolicy::attempts(3).backoff(Duration::from_millis(10)))
            .dead_letter(producer.clone(), dlt.clone())
            .commit_every(1, Duration::from_millis(100))
            .run_json(
                move |order: Order, _record| {
                    let (finished, processed, attempts) =
                        (finished.clone(), processed.clone(), attempts.clone());
                    async move {
                        if order.amount < 0.0 {
                            if attempts.fetch_add(1, Ordering::SeqCst) == 2 {
                                finished.fetch_add(1, Ordering::SeqCst); // about to be dead-lettered
                            }
                            anyhow::bail!("negative amount {}", order.amount);
                        }
                        processed.lock().unwrap().push(order.id);
                        finished.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }
                },
                stop,
            )
            .await?
    };
    ensure!(
        *processed.lock().unwrap() == [1, 3, 5],
        "processed {:?}",
        processed.lock().unwrap()
    );
    ensure!(
        attempts.load(Ordering::SeqCst) == 3,
        "the failing record ran {} times",
        attempts.load(Ordering::SeqCst)
    );
    ensure!(stats.dead_lettered == 3 && stats.retries == 2, "{stats:?}");

    let dead = cluster.read_topic(&dlt, 3, common::READ_TIMEOUT).await?;
    ensure!(dead.len() == 3, "{} dead letters", dead.len());
    let mut origins = BTreeSet::new();
    for letter in &dead {
        let headers = kafka_kit::headers::HeaderReader::new(letter.headers());
        ensure!(headers.get_str(dead_letter_headers::ORIGINAL_TOPIC)? == Some(topic.as_str()));
        ensure!(headers.get_str(dead_letter_headers::ORIGINAL_PARTITION)? == Some("0"));
        let offset: i64 = headers
            .get_str(dead_letter_headers::ORIGINAL_OFFSET)?
            .context("no offset")?
            .parse()?;
        let error = headers
            .get_str(dead_letter_headers::ERROR)?
            .context("no error")?;
        let tries = headers
            .get_str(dead_letter_headers::ATTEMPTS)?
            .context("no attempts")?;
        ensure!(
            letter.payload() == Some(values[offset as usize].as_bytes()),
            "payload not kept"
        );
        ensure!(letter.key() == Some(&b"orders"[..]));
        match offset {
            1 | 4 => ensure!(
                tries == "0" && error.contains("could not decode"),
                "{error}"
            ),
            2 => ensure!(tries == "3" && error.contains("negative amount"), "{error}"),
            _ => anyhow::bail!("record {offset} should not be dead-lettered"),
        }
        origins.insert(offset);
    }
    ensure!(origins == BTreeSet::from([1, 2, 4]));
    // Everything, dead letters included, is committed.
    let lag = group_lag(&cluster.config().build()?, &group, &[&topic]).await?;
    ensure!(lag[0].committed == Some(6) && lag[0].lag == 0, "{lag:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_dead_letter_topic_a_poison_record_stops_the_loop_uncommitted(
) -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("poison");
    cluster.create_topic(&topic, 1).await?;
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    for value in [r#"{"n":1}"#, "poison", r#"{"n":3}"#] {
        producer.send(Record::to(&topic).payload(value)).await?;
    }
    let group = common::unique_topic("group");
    let consumer = consumer(&cluster, &group, &topic)?.build()?;
    let err = AtLeastOnce::new(consumer)
        .run_json(
            |_: serde_json::Value, _| async { Ok::<_, std::convert::Infallible>(()) },
            std::future::pending::<()>(),
        )
        .await
        .err()
        .context("the loop went past a poison record without a dead-letter topic")?;
    ensure!(
        matches!(
            &err,
            kafka_kit::Error::Processing {
                offset: 1,
                attempts: 0,
                ..
            }
        ),
        "{err}"
    );
    // The record before it is committed; the poison record is not.
    let lag = group_lag(&cluster.config().build()?, &group, &[&topic]).await?;
    ensure!(lag[0].committed == Some(1), "{lag:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_figures_are_exact() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("lag");
    common::fill_partitions(&cluster, &topic, &[10, 11, 12]).await?;
    let group = common::unique_topic("group");
    let config = cluster.consumer_config().build()?;
    // Nothing committed: lag is everything.
    let lag = group_lag(&config, &group, &[&topic]).await?;
    ensure!(
        lag.iter().map(|p| p.lag).collect::<Vec<_>>() == [10, 11, 12],
        "{lag:?}"
    );

    // Commit 4 on partition 0 and 11 (all) on partition 1; nothing on partition 2.
    let consumer = Consumer::builder(&config)
        .group_id(&group)
        .assign(&topic, [0, 1, 2])
        .build()?;
    let mut offsets = kafka_kit::consumer::CommitOffsets::new();
    offsets.insert(&topic, 0, NextOffset::resume_at(4)).insert(
        &topic,
        1,
        NextOffset::resume_at(11),
    );
    consumer
        .commit_offsets(&offsets, kafka_kit::rdkafka::consumer::CommitMode::Sync)
        .await?;
    let own = consumer.lag().await?;
    consumer.close().await?;
    let lag = group_lag(&config, &group, &[&topic]).await?;
    ensure!(
        lag == own,
        "the group's view {lag:?} differs from the member's {own:?}"
    );
    let figures: Vec<(i32, Option<i64>, i64, i64)> = lag
        .iter()
        .map(|p| (p.partition, p.committed, p.high_watermark, p.lag))
        .collect();
    ensure!(
        figures == [(0, Some(4), 10, 6), (1, Some(11), 11, 0), (2, None, 12, 12)],
        "{figures:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_restore_positions_and_follow_commits() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("checkpoint");
    common::fill_partitions(&cluster, &topic, &[20, 20]).await?;
    let store = Arc::new(MemoryCheckpoints::new());
    kafka_kit::consumer::CheckpointStore::save(&*store, &[(topic.as_str(), 0, 15)])?;
    let group = common::unique_topic("group");
    let mut consumer = consumer(&cluster, &group, &topic)?
        .checkpoints(store.clone())
        .build()?;
    let mut firsts = BTreeMap::new();
    while firsts.len() < 2 {
        let record = next(&mut consumer).await?;
        firsts.entry(record.partition()).or_insert(record.offset());
        if record.partition() == 1 && record.offset() == 3 {
            consumer.commit(&record).await?;
        }
    }
    ensure!(
        firsts == BTreeMap::from([(0, 15), (1, 0)]),
        "started at {firsts:?}"
    );
    // Reaching offset 3 of partition 1 may take a few more records.
    while !store
        .snapshot()
        .contains_key(&TopicPartition::new(&topic, 1))
    {
        let record = next(&mut consumer).await?;
        if record.partition() == 1 && record.offset() == 3 {
            consumer.commit(&record).await?;
        }
    }
    ensure!(
        store.snapshot().get(&TopicPartition::new(&topic, 1)) == Some(&4),
        "{:?}",
        store.snapshot()
    );
    consumer.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_assignment_from_the_beginning_stops_at_an_offset() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("bounded");
    common::fill_partitions(&cluster, &topic, &[10, 10]).await?;
    let consumer = Consumer::builder(&cluster.consumer_config().build()?)
        .assign(&topic, [0, 1])
        .start_at(StartAt::Beginning)
        .stop_at(StopAt::Offset(5))
        .build()?;
    let records: Vec<ConsumerRecord> = tokio::time::timeout(
        Duration::from_secs(30),
        consumer.map(|r| r.unwrap()).collect(),
    )
    .await
    .context("the stream did not end")?;
    let mut per_partition = BTreeMap::<i32, Vec<i64>>::new();
    for r in &records {
        per_partition
            .entry(r.partition())
            .or_default()
            .push(r.offset());
    }
    ensure!(
        per_partition == BTreeMap::from([(0, vec![0, 1, 2, 3, 4]), (1, vec![0, 1, 2, 3, 4])]),
        "{per_partition:?}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_consumer_settings_are_typed_errors() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let config = cluster.config().build()?;
    let err = Consumer::builder(&config)
        .topics(["t"])
        .build()
        .err()
        .context("a group-less subscription was accepted")?;
    let kafka_kit::Error::Config(e) = &err else {
        anyhow::bail!("{err}")
    };
    ensure!(e.problems()[0].property() == "group.id", "{err}");
    let err = Consumer::builder(&config)
        .group_id("g")
        .build()
        .err()
        .context("a consumer without topics was accepted")?;
    ensure!(err.to_string().contains("`topics`"), "{err}");
    Ok(())
}

#[tokio::test]
async fn check_connection_reports_brokers() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("ping");
    cluster.create_topic(&topic, 1).await?;
    let consumer = Consumer::builder(&cluster.consumer_config().build()?)
        .assign(&topic, [0])
        .build()?;
    let brokers = consumer.check_connection(Duration::from_secs(10)).await?;
    ensure!(brokers >= 1, "{brokers} brokers");
    Ok(())
}

#[tokio::test]
async fn records_carry_typed_headers_and_json() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("typed");
    cluster.create_topic(&topic, 1).await?;
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    let headers = kafka_kit::headers::Headers::new()
        .event_type("login")
        .schema_version("v1.0");
    producer
        .send_json(
            Record::to(&topic).key("1001").headers(headers),
            &serde_json::json!({"user_id": 1001}),
        )
        .await?;
    let mut consumer = Consumer::builder(&cluster.consumer_config().build()?)
        .assign(&topic, [0])
        .start_at(StartAt::Beginning)
        .build()?;
    let record = next(&mut consumer).await?;
    ensure!(record.key_str() == Some("1001"));
    ensure!(record.headers().event_type()? == Some("login"));
    ensure!(record.json::<serde_json::Value>()?["user_id"] == 1001);
    ensure!(record.topic() == topic);
    Ok(())
}

/// A replay bounded by time ends by itself: a partition stops at its first record past the stop
/// time, and a partition with nothing left before it stops at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_window_stops_at_a_time_and_at_the_end() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("window");
    cluster.create_topic(&topic, 2).await?;
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    let base = 1_700_000_000_000_i64; // record timestamps an hour apart... in 2023
    for i in 0..10 {
        // Partition 0: one record a second from `base`; partition 1: all well before the stop.
        producer
            .send(
                Record::to(&topic)
                    .partition(0)
                    .timestamp(base + i * 1000)
                    .payload(&format!("p0-{i}")),
            )
            .await?;
        producer
            .send(
                Record::to(&topic)
                    .partition(1)
                    .timestamp(base - 100_000 + i)
                    .payload(&format!("p1-{i}")),
            )
            .await?;
    }
    let consumer = Consumer::builder(&cluster.consumer_config().build()?)
        .assign(&topic, [0, 1])
        .start_at(StartAt::Beginning)
        .stop_at(StopAt::Time(base + 4_500))
        .build()?;
    let records: Vec<ConsumerRecord> = tokio::time::timeout(
        Duration::from_secs(30),
        consumer.map(|r| r.unwrap()).collect(),
    )
    .await
    .context("the replay did not end")?;
    let payloads: BTreeSet<String> = records
        .iter()
        .map(|r| String::from_utf8_lossy(r.payload().unwrap_or_default()).into_owned())
        .collect();
    let expected: BTreeSet<String> = (0..5)
        .map(|i| format!("p0-{i}"))
        .chain((0..10).map(|i| format!("p1-{i}")))
        .collect();
    ensure!(payloads == expected, "replayed {payloads:?}");
    Ok(())
}
