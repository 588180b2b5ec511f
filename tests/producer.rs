//! Producer scenarios on the embedded broker (or on `KAFKA_BOOTSTRAP_SERVERS` when it is set),
//! checked against what the broker really holds.

mod common;

use std::time::Duration;

use anyhow::{ensure, Context as _};
use kafka_kit::producer::{Producer, Record};
use kafka_kit::rdkafka::error::RDKafkaErrorCode;
use kafka_kit::testing::TestCluster;

fn cluster() -> anyhow::Result<TestCluster> {
    common::init_tracing();
    Ok(TestCluster::from_env_or_embedded()?)
}

#[tokio::test]
async fn every_send_mode_delivers() -> anyhow::Result<()> {
    common::every_send_mode_delivers(&cluster()?).await
}

#[tokio::test]
async fn headers_round_trip() -> anyhow::Result<()> {
    common::headers_round_trip(&cluster()?).await
}

#[tokio::test]
async fn oversized_message_comes_back() -> anyhow::Result<()> {
    common::oversized_message_comes_back(&cluster()?).await
}

#[tokio::test]
async fn missing_topic_fails_with_key_and_context() -> anyhow::Result<()> {
    common::missing_topic_fails_with_key_and_context(&cluster()?).await
}

#[tokio::test]
async fn murmur2_matches_java() -> anyhow::Result<()> {
    common::murmur2_matches_java(&cluster()?).await
}

#[tokio::test]
async fn keyless_messages_spread() -> anyhow::Result<()> {
    common::keyless_messages_spread(&cluster()?).await
}

#[tokio::test]
async fn json_values() -> anyhow::Result<()> {
    common::json_values(&cluster()?).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_and_flush_on_drop() -> anyhow::Result<()> {
    common::backpressure_and_flush_on_drop(&cluster()?).await
}

/// A queue that stays full hands the message back, with its context, after the configured wait.
#[tokio::test]
async fn queue_full_hands_the_message_back() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("queue-full");
    cluster.create_topic(&topic, 1).await?;
    // One message fills the queue, and a long linger keeps it there.
    let config = cluster
        .config()
        .set("queue.buffering.max.messages", "1")
        .linger(Duration::from_secs(2))
        .build()?;
    let producer: Producer<u8> = Producer::builder(&config)
        .queue_full_timeout(Duration::from_millis(200))
        .build()?;
    producer
        .send_and_forget(Record::to(&topic).key("first").payload("1"))
        .await?;
    let started = std::time::Instant::now();
    let err = producer
        .send_with_callback(
            Record::to(&topic).key("second").payload("2").context(9),
            |_| {},
        )
        .await
        .err()
        .context("a second message fit in a queue of one")?;
    ensure!(
        started.elapsed() >= Duration::from_millis(200),
        "did not wait: {:?}",
        started.elapsed()
    );
    ensure!(
        err.error.code() == Some(RDKafkaErrorCode::QueueFull) && err.error.is_retriable(),
        "{err}"
    );
    ensure!(err.context == 9 && err.message.key.as_deref() == Some(&b"second"[..]));
    // Once the first is delivered, the handed-back message goes through.
    producer.flush(Duration::from_secs(10)).await?;
    producer.send_and_forget(err.message.as_record()).await?;
    producer.close().await?;
    let messages = cluster.read_topic(&topic, 2, common::READ_TIMEOUT).await?;
    ensure!(messages.len() == 2, "{} messages", messages.len());
    Ok(())
}

/// A delivery callback that panics does not stop the reports of other messages.
#[tokio::test]
async fn panicking_callback_does_not_stop_delivery_reports() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("panicky");
    cluster.create_topic(&topic, 1).await?;
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    producer
        .send_with_callback(Record::to(&topic).payload("a"), |_| {
            panic!("a user callback panics")
        })
        .await?;
    let report = producer
        .send(Record::to(&topic).key("after").payload("b"))
        .await?;
    ensure!(report.key.as_deref() == Some(&b"after"[..]));
    ensure!(producer.stats().delivered == 2);
    Ok(())
}

/// The producer-wide handler gets every report, with its key and context, one at a time and in
/// offset order per partition, although a fast sender serves most of them itself; a handler that
/// panics loses only its own call; without a handler `send_to_handler` is a config error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_handler_gets_every_report_in_order() -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex};
    let cluster = cluster()?;
    let topic = common::unique_topic("handler");
    cluster.create_topic(&topic, 3).await?;
    type Seen = Vec<(i32, i64, Vec<u8>, u32, std::thread::ThreadId)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let producer: Producer<u32> = Producer::builder(&cluster.config().build()?)
        .on_delivery({
            let seen = seen.clone();
            move |result| {
                let delivered = result.expect("every message is delivered");
                assert!(delivered.context != 7, "the handler panics for message 7");
                seen.lock().unwrap().push((
                    delivered.partition(),
                    delivered.offset(),
                    delivered.key().unwrap_or_default().to_vec(),
                    delivered.context,
                    std::thread::current().id(),
                ));
            }
        })
        .build()?;
    let n = 20_000u32;
    for i in 0..n {
        let key = format!("k-{}", i % 50);
        producer
            .send_to_handler(Record::to(&topic).key(&key).payload("x").context(i))
            .await?;
    }
    producer.flush(Duration::from_secs(30)).await?;
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    ensure!(seen.len() == n as usize - 1, "{} reports", seen.len());
    let mut last = [-1i64; 3];
    for (partition, offset, key, context, _) in &seen {
        ensure!(*key == format!("k-{}", context % 50).into_bytes());
        let last = &mut last[*partition as usize];
        ensure!(
            *offset > *last,
            "offset {offset} after {last} in partition {partition}"
        );
        *last = *offset;
    }
    let threads: std::collections::HashSet<_> = seen.iter().map(|s| s.4).collect();
    eprintln!("reports served on {} thread(s)", threads.len());

    let without: Producer<u32> = Producer::builder(&cluster.config().build()?).build()?;
    let refused = without
        .send_to_handler(Record::to(&topic).key("k").payload("x").context(5))
        .await
        .expect_err("no handler");
    ensure!(matches!(refused.error, kafka_kit::Error::Config(_)) && refused.context == 5);
    ensure!(
        refused.error.to_string().contains("on_delivery"),
        "{}",
        refused.error
    );
    Ok(())
}

/// Brokers restart one after another while a task sends steadily: every message is delivered
/// once, each partition's reports come in offset order, with the right key and context, and the
/// producer then closes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_survive_broker_restarts_in_order() -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex};
    common::init_tracing();
    let cluster = TestCluster::embedded(3)?;
    let topic = common::unique_topic("restarts");
    cluster.create_topic(&topic, 6).await?;
    type Seen = Vec<(i32, i64, Vec<u8>, u32)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let failed = Arc::new(Mutex::new(Vec::new()));
    let producer: Producer<u32> = Producer::builder(&cluster.config().build()?)
        .on_delivery({
            let (seen, failed) = (seen.clone(), failed.clone());
            move |result| match result {
                Ok(d) => seen.lock().unwrap().push((
                    d.partition(),
                    d.offset(),
                    d.key().unwrap_or_default().to_vec(),
                    d.context,
                )),
                Err(e) => failed
                    .lock()
                    .unwrap()
                    .push((e.context, e.error.to_string())),
            }
        })
        .build()?;
    let sending = tokio::spawn({
        let (producer, topic) = (producer.clone(), topic.clone());
        async move {
            for i in 0..4_000u32 {
                let key = format!("k-{}", i % 60);
                producer
                    .send_to_handler(Record::to(&topic).key(&key).payload("x").context(i))
                    .await?;
                if i % 100 == 99 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            anyhow::Ok(())
        }
    });
    let mock = cluster.mock().context("embedded")?;
    for broker in 1..=3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        mock.with_mock(move |m| m.broker_down(broker))??;
        tokio::time::sleep(Duration::from_millis(800)).await;
        mock.with_mock(move |m| m.broker_up(broker))??;
    }
    sending.await??;
    producer.flush(Duration::from_secs(60)).await?;
    let failed = std::mem::take(&mut *failed.lock().unwrap());
    ensure!(
        failed.is_empty(),
        "{} failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    ensure!(seen.len() == 4_000, "{} reports", seen.len());
    let mut contexts: Vec<u32> = seen.iter().map(|s| s.3).collect();
    contexts.sort_unstable();
    contexts.dedup();
    ensure!(
        contexts.len() == 4_000,
        "{} distinct contexts",
        contexts.len()
    );
    let mut last = [-1i64; 6];
    for (partition, offset, key, context) in &seen {
        ensure!(*key == format!("k-{}", context % 60).into_bytes());
        let last = &mut last[*partition as usize];
        ensure!(
            *offset > *last,
            "offset {offset} after {last} in partition {partition}"
        );
        *last = *offset;
    }
    let closing = std::time::Instant::now();
    drop(producer);
    ensure!(
        closing.elapsed() < Duration::from_secs(1),
        "drop took {:?}",
        closing.elapsed()
    );
    Ok(())
}

/// A delivery callback that drops the producer's last handle closes it at once: it cannot wait
/// for its own thread to finish serving.
#[tokio::test]
async fn dropping_the_last_handle_in_a_callback_does_not_hang() -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex};
    let cluster = cluster()?;
    let topic = common::unique_topic("drop-in-callback");
    cluster.create_topic(&topic, 1).await?;
    // Lingering, so that the report comes after the last handle has moved into the callback's reach.
    let config = cluster.config().set("linger.ms", "300").build()?;
    let producer: Producer = Producer::builder(&config).build()?;
    let last: Arc<Mutex<Option<Producer>>> = Arc::default();
    let (tx, rx) = tokio::sync::oneshot::channel();
    producer
        .send_with_callback(Record::to(&topic).key("k").payload("x"), {
            let last = last.clone();
            move |result| {
                let handle = last.lock().unwrap().take();
                let started = std::time::Instant::now();
                drop(handle);
                let _ = tx.send((result.is_ok(), started.elapsed()));
            }
        })
        .await?;
    *last.lock().unwrap() = Some(producer);
    let (delivered, drop_took) = tokio::time::timeout(Duration::from_secs(20), rx).await??;
    ensure!(delivered);
    ensure!(
        drop_took < Duration::from_secs(1),
        "the drop took {drop_took:?}"
    );
    Ok(())
}

/// Contexts need only be `Send`: a `Cell` (not `Sync`) works in callback mode.
#[tokio::test]
async fn contexts_need_not_be_sync() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let topic = common::unique_topic("cell-context");
    cluster.create_topic(&topic, 1).await?;
    let producer: Producer<std::cell::Cell<u32>> =
        Producer::builder(&cluster.config().build()?).build()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    producer
        .send_with_callback(
            Record::to(&topic)
                .key("c")
                .payload("x")
                .context(std::cell::Cell::new(3)),
            move |r| {
                let _ = tx.send(
                    r.map(|report| report.context.get())
                        .map_err(|e| e.error.to_string()),
                );
            },
        )
        .await
        // A context that isn't `Sync` makes the error not `Sync` either: keep just the cause.
        .map_err(kafka_kit::Error::from)?;
    ensure!(rx.await? == Ok(3));
    Ok(())
}

/// Bad configuration is refused before a client exists, naming the property.
#[tokio::test]
async fn bad_producer_config_is_a_typed_error() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let config = cluster.config().build()?;
    let err = Producer::<()>::builder(&config)
        .partitioning(kafka_kit::partitioner::Partitioning::Librdkafka(
            "not-a-partitioner".into(),
        ))
        .build()
        .err()
        .context("an unknown partitioner was accepted")?;
    let kafka_kit::Error::Config(config_err) = &err else {
        anyhow::bail!("not a config error: {err}")
    };
    ensure!(
        config_err.problems()[0].property() == "partitioner",
        "{err}"
    );
    Ok(())
}

/// `Duration::MAX` means "no deadline" everywhere a producer takes a timeout: building, sending
/// into a full queue, flushing, closing and dropping never panic on an overflowing deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_max_means_no_deadline() -> anyhow::Result<()> {
    common::init_tracing();
    let cluster = TestCluster::embedded(1)?;
    let topic = common::unique_topic("duration-max");
    cluster.create_topic(&topic, 1).await?;
    // One message fills the queue, and a linger keeps it there for a while.
    let config = cluster
        .config()
        .set("queue.buffering.max.messages", "1")
        .linger(Duration::from_millis(300))
        .build()?;
    let producer: Producer = Producer::builder(&config)
        .queue_full_timeout(Duration::MAX)
        .close_timeout(Duration::MAX)
        .build()?;
    producer
        .send_and_forget(Record::to(&topic).key("first").payload("1"))
        .await?;
    // The queue is full: this send waits, with no deadline, until the first is delivered.
    let started = std::time::Instant::now();
    producer
        .send_and_forget(Record::to(&topic).key("second").payload("2"))
        .await?;
    ensure!(
        started.elapsed() >= Duration::from_millis(100),
        "the second send did not wait for room: {:?}",
        started.elapsed()
    );
    producer.flush(Duration::MAX).await?;
    producer
        .send_and_forget(Record::to(&topic).key("third").payload("3"))
        .await?;
    producer.clone().close().await?;
    // Dropping the last handle with a message in flight flushes through rdkafka, with no deadline.
    producer
        .send_and_forget(Record::to(&topic).key("fourth").payload("4"))
        .await?;
    ensure!(
        producer.in_flight() > 0,
        "nothing in flight to flush on drop"
    );
    tokio::task::spawn_blocking(move || drop(producer)).await?;
    let messages = cluster.read_topic(&topic, 4, Duration::MAX).await?;
    ensure!(messages.len() == 4, "{} messages", messages.len());
    Ok(())
}

/// A zero queue-full timeout is allowed and means "don't wait": a full queue hands the message
/// back at once. A zero close timeout only reports what is still in flight.
#[tokio::test]
async fn zero_producer_timeouts_do_not_wait() -> anyhow::Result<()> {
    common::init_tracing();
    let cluster = TestCluster::embedded(1)?;
    let topic = common::unique_topic("zero-timeouts");
    cluster.create_topic(&topic, 1).await?;
    let config = cluster
        .config()
        .set("queue.buffering.max.messages", "1")
        .linger(Duration::from_millis(500))
        .build()?;
    let producer: Producer = Producer::builder(&config)
        .queue_full_timeout(Duration::ZERO)
        .close_timeout(Duration::ZERO)
        .build()?;
    producer
        .send_and_forget(Record::to(&topic).key("first").payload("1"))
        .await?;
    let started = std::time::Instant::now();
    let err = producer
        .send_and_forget(Record::to(&topic).key("second").payload("2"))
        .await
        .err()
        .context("a second message fit in a queue of one")?;
    ensure!(
        err.error.code() == Some(RDKafkaErrorCode::QueueFull),
        "{err}"
    );
    ensure!(
        started.elapsed() < Duration::from_millis(100),
        "waited {:?} with a zero timeout",
        started.elapsed()
    );
    let closed = producer.clone().close().await;
    ensure!(
        closed.is_err(),
        "close with a zero timeout and a lingering message returned Ok"
    );
    producer.flush(Duration::from_secs(10)).await?;
    Ok(())
}

/// The test support's read-back helper reads on through errors that are not fatal: here its
/// consumer sees the only broker go down (transport errors, all brokers down) and come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_topic_reads_on_through_non_fatal_errors() -> anyhow::Result<()> {
    common::init_tracing();
    let cluster = std::sync::Arc::new(TestCluster::embedded(1)?);
    let topic = common::unique_topic("read-on");
    cluster.create_topic(&topic, 1).await?;
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    let send = |from: usize| {
        let (producer, topic) = (producer.clone(), topic.clone());
        async move {
            for i in from..from + 5 {
                producer
                    .send(Record::to(&topic).payload(&i.to_string()))
                    .await?;
            }
            anyhow::Ok(())
        }
    };
    send(0).await?;
    let reader = tokio::spawn({
        let (cluster, topic) = (cluster.clone(), topic.clone());
        async move {
            cluster
                .read_topic(&topic, 10, Duration::from_secs(60))
                .await
        }
    });
    // Let the reader fetch the first five, then take the broker away for a while.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mock = cluster.mock().context("embedded")?;
    mock.with_mock(|mock| mock.broker_down(1))??;
    tokio::time::sleep(Duration::from_secs(2)).await;
    mock.with_mock(|mock| mock.broker_up(1))??;
    send(5).await?;
    let messages = reader.await??;
    let payloads: Vec<String> = messages
        .iter()
        .map(|m| {
            String::from_utf8_lossy(kafka_kit::rdkafka::Message::payload(m).unwrap_or_default())
                .into_owned()
        })
        .collect();
    let expected: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    ensure!(payloads == expected, "read {payloads:?}");
    Ok(())
}

/// `create_topic` creates only a missing topic: asking again is fine, and another partition count
/// for an existing topic is a typed error rather than a silent mismatch.
#[tokio::test]
async fn create_topic_twice_and_with_another_partition_count() -> anyhow::Result<()> {
    common::init_tracing();
    let cluster = TestCluster::embedded(1)?;
    let topic = common::unique_topic("twice");
    cluster.create_topic(&topic, 3).await?;
    cluster.create_topic(&topic, 3).await?;
    ensure!(cluster.partition_count(&topic).await? == 3);
    let err = cluster
        .create_topic(&topic, 5)
        .await
        .err()
        .context("an existing topic of 3 partitions was accepted for 5")?;
    ensure!(
        matches!(&err, kafka_kit::Error::Testing(m) if m.contains("3 partitions, not the 5")),
        "{err}"
    );
    ensure!(cluster.partition_count(&topic).await? == 3);
    // The same through the embedded broker's own handle.
    let embedded = cluster.mock().context("embedded")?;
    embedded.create_topic(&topic, 3)?;
    ensure!(embedded.create_topic(&topic, 4).is_err());
    Ok(())
}

/// A cluster that cannot create topics over the protocol is fine for topics that exist. The
/// embedded broker (librdkafka's mock cluster) has no CreateTopics handler at all: seen as an
/// external cluster, asking it to create a topic times out ("Admin operation error:
/// OperationTimedOut", after a minute), as librdkafka's standalone mock cluster did for the perf
/// tool. `create_topic` looks in the metadata first, so an existing topic never asks.
#[tokio::test]
async fn create_topic_does_not_ask_for_an_existing_topic() -> anyhow::Result<()> {
    common::init_tracing();
    let cluster = TestCluster::embedded(1)?;
    let topic = common::unique_topic("exists");
    cluster.create_topic(&topic, 2).await?;
    let external = TestCluster::external(cluster.bootstrap_servers());
    ensure!(!external.is_embedded());
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(20), external.create_topic(&topic, 2))
        .await
        .context("create_topic asked the cluster to create a topic that exists")??;
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let err = external
        .create_topic(&topic, 6)
        .await
        .err()
        .context("an existing topic of 2 partitions was accepted for 6")?;
    ensure!(matches!(err, kafka_kit::Error::Testing(_)), "{err}");
    Ok(())
}
