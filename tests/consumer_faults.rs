//! The consumer under faults: a stalled application while brokers restart and a member joins,
//! unreachable clusters, panicking callbacks, zero and endless durations. The faults are
//! injected into the embedded broker (librdkafka's mock cluster), so these tests always run on
//! it, whatever `KAFKA_BOOTSTRAP_SERVERS` says.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use kafka_kit::config::{ConfigBuilder, KafkaConfig};
use kafka_kit::consumer::processing::AtLeastOnce;
use kafka_kit::consumer::{
    lag_reports, Assigned, Assignment, CheckpointError, CheckpointStore, Consumer, ConsumerBuilder,
    OffsetReset, RebalanceListener, Revoked, TopicPartition,
};
use kafka_kit::rdkafka::error::RDKafkaErrorCode;
use kafka_kit::testing::TestCluster;
use kafka_kit::Error;

/// A session of 6 s and a poll interval of 10 s, as in the field report: a member that stops
/// polling for 10 s is thrown out of the group. The mock holds a rebalance open for the session
/// timeout less a second (5 s) before it assigns, whoever has joined.
fn short_sessions(config: ConfigBuilder) -> ConfigBuilder {
    config
        .set("session.timeout.ms", "6000")
        .set("max.poll.interval.ms", "10000")
        .set("heartbeat.interval.ms", "500")
}

/// What the mock waits before it assigns after a member joins: `session.timeout.ms` less 1 s.
const MOCK_REBALANCE_DELAY: Duration = Duration::from_secs(5);

fn consumer(config: &KafkaConfig, group: &str, topic: &str) -> ConsumerBuilder {
    Consumer::builder(config)
        .group_id(group)
        .topics([topic])
        .offset_reset(OffsetReset::Earliest)
}

/// Notes when partitions are assigned and whether any were lost.
#[derive(Clone, Default)]
struct Watch(Arc<Seen>);

#[derive(Default)]
struct Seen {
    assigned_at: Mutex<Option<Instant>>,
    lost: AtomicBool,
}

impl std::ops::Deref for Watch {
    type Target = Seen;
    fn deref(&self) -> &Seen {
        &self.0
    }
}

impl RebalanceListener for Watch {
    fn on_assigned(&self, assigned: &Assigned) {
        if !assigned.starts.is_empty() {
            *self.assigned_at.lock().unwrap() = Some(Instant::now());
        }
    }
    fn on_lost(&self, _: &[TopicPartition]) {
        self.lost.store(true, Ordering::SeqCst);
    }
}

/// Symptom 1 of the field report: a member reads one record, then its application stops
/// reading (`buffer(4)`), while the three brokers restart one at a time and, 12 s in, a second
/// member joins. The polling thread keeps serving the group, so the first member is not
/// evicted: the second gets its share, the first keeps the other half, and both drop at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_application_keeps_its_partitions_through_broker_restarts_and_a_join(
) -> anyhow::Result<()> {
    common::init_tracing();
    let cluster = TestCluster::embedded(3)?;
    let topic = common::unique_topic("stalled");
    common::fill_partitions(&cluster, &topic, &[50; 6]).await?;
    let config = short_sessions(cluster.consumer_config()).build()?;
    let group = common::unique_topic("stalled-group");

    let first_watch = Watch::default();
    let mut first = consumer(&config, &group, &topic)
        .buffer(4)
        .listener(first_watch.clone())
        .build()?;
    let started = Instant::now();
    let record = tokio::time::timeout(Duration::from_secs(30), first.recv())
        .await
        .context("no record within 30 s")?
        .context("the stream ended")?;
    ensure!(record.is_ok(), "first item: {record:?}");
    // The application stalls from here: the buffer fills, then the backlog, then errors queue.
    let mock = cluster.mock().context("embedded")?;
    for broker in 1..=3 {
        mock.with_mock(move |m| m.broker_down(broker))??;
        tokio::time::sleep(Duration::from_secs(2)).await;
        mock.with_mock(move |m| m.broker_up(broker))??;
    }
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(started.elapsed())).await;

    let second_watch = Watch::default();
    let joined = Instant::now();
    let second = consumer(&config, &group, &topic)
        .listener(second_watch.clone())
        .build()?;
    let deadline = joined + MOCK_REBALANCE_DELAY + Duration::from_secs(10);
    let share = loop {
        let share = second.assignment()?.len();
        if share > 0 || Instant::now() > deadline {
            break share;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let waited = joined.elapsed();
    println!("second member: {share} partitions {waited:?} after joining (the mock holds a rebalance {MOCK_REBALANCE_DELAY:?})");
    ensure!(share == 3, "the second member got {share} of 6 partitions");
    ensure!(
        waited <= MOCK_REBALANCE_DELAY + Duration::from_secs(2),
        "the second member waited {waited:?}: more than 2 s past the mock's rebalance delay"
    );
    // Settled: the first member kept the other half, and was never thrown out.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let kept = first.assignment()?.len();
    println!(
        "first member: {kept} partitions, {:?} after it stopped reading",
        started.elapsed()
    );
    ensure!(kept == 3, "the first member kept {kept} partitions");
    ensure!(
        !first_watch.lost.load(Ordering::SeqCst),
        "the first member lost its partitions"
    );
    ensure!(
        second.assignment()?.len() == 3,
        "the second member's share moved"
    );

    let dropping = Instant::now();
    drop(first);
    let first_dropped = dropping.elapsed();
    let closing = Instant::now();
    second.close().await?;
    let second_closed = closing.elapsed();
    println!(
        "drop of the stalled member: {first_dropped:?}; close of the other: {second_closed:?}"
    );
    ensure!(
        first_dropped < Duration::from_secs(2),
        "drop took {first_dropped:?}"
    );
    ensure!(
        second_closed < Duration::from_secs(2),
        "close took {second_closed:?}"
    );
    Ok(())
}

/// Symptom 2: a consumer whose cluster cannot be reached, polled for a while and then left
/// unread (errors keep coming meanwhile), drops and closes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_whose_cluster_is_unreachable_drops_and_closes_at_once() -> anyhow::Result<()> {
    common::init_tracing();
    let config = KafkaConfig::builder()
        .bootstrap_servers("127.0.0.1:1")
        .build()?;
    for close in [false, true] {
        let mut consumer = consumer(&config, "unreachable", "t").build()?;
        let mut errors = 0;
        let polled = async {
            while let Some(item) = consumer.recv().await {
                ensure!(item.is_err(), "a record from nowhere");
                errors += 1;
            }
            anyhow::Ok(())
        };
        let _ = tokio::time::timeout(Duration::from_millis(500), polled).await;
        ensure!(errors > 0, "no error reported for an unreachable cluster");
        // Unread for 3 s: the errors queue up, bounded, and must not hold the drop.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let start = Instant::now();
        if close {
            consumer.close().await?;
        } else {
            drop(consumer);
        }
        let took = start.elapsed();
        println!(
            "{} after {errors} errors: {took:?}",
            if close { "close" } else { "drop" }
        );
        ensure!(took < Duration::from_secs(2), "took {took:?}");
    }
    Ok(())
}

/// A listener whose hooks panic, as chosen.
#[derive(Clone)]
struct Panicky(Arc<Hooks>);

struct Hooks {
    on_assigned: bool,
    on_revoked: bool,
    revoked: AtomicUsize,
}

impl Panicky {
    fn new(on_assigned: bool, on_revoked: bool) -> Self {
        Panicky(Arc::new(Hooks {
            on_assigned,
            on_revoked,
            revoked: AtomicUsize::new(0),
        }))
    }
}

impl std::ops::Deref for Panicky {
    type Target = Hooks;
    fn deref(&self) -> &Hooks {
        &self.0
    }
}

impl RebalanceListener for Panicky {
    fn on_assigned(&self, _: &Assigned) {
        if self.on_assigned {
            panic!("on_assigned failed");
        }
    }
    fn on_revoked(&self, _: &Revoked) {
        self.revoked.fetch_add(1, Ordering::SeqCst);
        if self.on_revoked {
            panic!("on_revoked failed");
        }
    }
}

/// A checkpoint store that panics when asked.
struct PanickyStore;

impl CheckpointStore for PanickyStore {
    fn load(&self, _: &str, _: i32) -> Result<Option<i64>, CheckpointError> {
        panic!("the checkpoint store failed");
    }
    fn save(&self, _: &[(&str, i32, i64)]) -> Result<(), CheckpointError> {
        panic!("the checkpoint store failed");
    }
}

/// The stream's items until the first panic error, skipping others; fails after 30 s.
async fn until_panic(consumer: &mut Consumer) -> anyhow::Result<(usize, Error)> {
    let mut records = 0;
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(item) = consumer.recv().await {
            match item {
                Ok(_) => records += 1,
                Err(e @ Error::Panicked { .. }) => return Some(e),
                Err(_) => {}
            }
        }
        None
    })
    .await
    .context("no panic reported within 30 s")?;
    Ok((
        records,
        found.context("the stream ended without the panic")?,
    ))
}

/// Symptom 3: a panic in a hook or a checkpoint store no longer kills the polling thread (the
/// stream used to end as if finished). It reaches the stream as `Error::Panicked`, the consumer
/// goes on serving, and the processing loop returns the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_in_hooks_and_checkpoint_stores_reach_the_stream_and_stop_the_loop(
) -> anyhow::Result<()> {
    common::init_tracing();
    let cluster = TestCluster::embedded(1)?;
    let topic = common::unique_topic("panics");
    common::fill_partitions(&cluster, &topic, &[5; 2]).await?;
    let config = cluster
        .consumer_config()
        .set("session.timeout.ms", "3000")
        .build()?;

    // on_assigned: reported, and the records still come (the assignment was applied).
    let listener = Panicky::new(true, false);
    let mut assigned = consumer(&config, &common::unique_topic("g"), &topic)
        .listener(listener)
        .build()?;
    let (_, error) = until_panic(&mut assigned).await?;
    ensure!(
        matches!(&error, Error::Panicked { callback, message }
            if *callback == "RebalanceListener::on_assigned" && message == "on_assigned failed"),
        "{error:?}"
    );
    let mut after = 0;
    while after < 10 {
        let item = tokio::time::timeout(Duration::from_secs(30), assigned.recv())
            .await?
            .context("the stream ended after the panic")?;
        after += usize::from(item.is_ok());
    }
    assigned.close().await?;

    // on_revoked: a second member joins, the eager rebalance revokes everything.
    let group = common::unique_topic("g");
    let listener = Panicky::new(false, true);
    let mut revoked = consumer(&config, &group, &topic)
        .listener(listener.clone())
        .build()?;
    tokio::time::timeout(Duration::from_secs(30), revoked.recv())
        .await?
        .context("no record")??;
    let other = consumer(&config, &group, &topic).build()?;
    let (_, error) = until_panic(&mut revoked).await?;
    ensure!(
        matches!(&error, Error::Panicked { callback, .. } if *callback == "RebalanceListener::on_revoked"),
        "{error:?}"
    );
    ensure!(listener.revoked.load(Ordering::SeqCst) >= 1);
    drop(other);
    revoked.close().await?;

    // A checkpoint store: its load panics on assignment; the partitions start at the committed
    // offsets instead (the fallback), and the loop stops with the panic.
    let looped = consumer(&config, &common::unique_topic("g"), &topic)
        .checkpoints(PanickyStore)
        .build()?;
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        AtLeastOnce::new(looped).run(
            move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
                async { anyhow::Ok(()) }
            },
            std::future::pending::<()>(),
        ),
    )
    .await
    .context("the loop went on after the panic")?;
    ensure!(
        matches!(&result, Err(Error::Panicked { callback, .. }) if *callback == "CheckpointStore::load"),
        "{result:?}"
    );
    Ok(())
}

/// Symptom 4: zero intervals are configuration errors naming the setting; `Duration::MAX`
/// anywhere panics nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_durations_are_config_errors_and_endless_ones_never_panic() -> anyhow::Result<()> {
    common::init_tracing();
    let cluster = TestCluster::embedded(1)?;
    let topic = common::unique_topic("durations");
    common::fill_partitions(&cluster, &topic, &[3]).await?;
    let config = cluster.consumer_config().build()?;

    let zero = AtLeastOnce::new(consumer(&config, "zero", &topic).build()?)
        .commit_every(10, Duration::ZERO)
        .run(|_| async { anyhow::Ok(()) }, std::future::pending::<()>())
        .await;
    ensure!(
        matches!(&zero, Err(Error::Config(e)) if e.to_string().contains("commit_every interval")),
        "{zero:?}"
    );
    let mut reports = lag_reports(config.clone(), "zero", [&topic], Duration::ZERO);
    let first = futures::StreamExt::next(&mut reports).await;
    ensure!(
        matches!(&first, Some(Err(Error::Config(e))) if e.to_string().contains("lag_reports interval")),
        "{first:?}"
    );

    // Endless: a revoke timeout, a commit interval, a lag report interval.
    let endless = consumer(&config, &common::unique_topic("endless"), &topic)
        .revoke_timeout(Duration::MAX)
        .build()?;
    let mut reports = lag_reports(config.clone(), "endless", [&topic], Duration::MAX);
    let first = tokio::time::timeout(
        Duration::from_secs(30),
        futures::StreamExt::next(&mut reports),
    )
    .await?;
    ensure!(matches!(first, Some(Ok(_))), "{first:?}");
    let stopped = Arc::new(tokio::sync::Notify::new());
    let stop = stopped.clone();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let run = AtLeastOnce::new(endless)
        .commit_every(u64::MAX, Duration::MAX)
        .run(
            move |_| {
                if counter.fetch_add(1, Ordering::SeqCst) == 2 {
                    stop.notify_one();
                }
                async { anyhow::Ok(()) }
            },
            async move { stopped.notified().await },
        );
    let stats = tokio::time::timeout(Duration::from_secs(30), run).await??;
    ensure!(stats.processed == 3, "{stats:?}");
    Ok(())
}

/// `lag_reports` may be called outside a runtime: the timer is made when the stream is polled.
#[test]
fn lag_reports_can_be_made_outside_a_runtime() -> anyhow::Result<()> {
    let config = KafkaConfig::builder()
        .bootstrap_servers("127.0.0.1:1")
        .build()?;
    let reports = lag_reports(config, "g", ["t"], Duration::from_secs(1));
    drop(reports);
    Ok(())
}

/// Symptom 6: some brokers answer the committed-offset fetch of a group that does not exist yet
/// with GROUP_ID_NOT_FOUND. It is reported, never ends the stream, and the partitions still
/// start (where `auto.offset.reset` says: a new group has nothing committed) instead of waiting
/// for an offset that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_id_not_found_on_the_offset_fetch_is_reported_and_reading_goes_on(
) -> anyhow::Result<()> {
    use kafka_kit::rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    common::init_tracing();
    let cluster = TestCluster::embedded(1)?;
    let topic = common::unique_topic("new-group");
    common::fill_partitions(&cluster, &topic, &[4; 3]).await?;
    let mock = cluster.mock().context("embedded")?;
    let config = cluster.consumer_config().build()?;
    for assignment in [Assignment::Eager, Assignment::CooperativeSticky] {
        mock.with_mock(|m| {
            m.request_errors(
                RDKafkaApiKey::OffsetFetch,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_ID_NOT_FOUND; 3],
            );
        })?;
        let mut consumer = consumer(&config, &common::unique_topic("new-group"), &topic)
            .assignment(assignment)
            .build()?;
        let (mut records, mut not_found) = (0, 0);
        tokio::time::timeout(Duration::from_secs(30), async {
            while records < 12 {
                match consumer.recv().await.context("the stream ended")? {
                    Ok(_) => records += 1,
                    Err(e) if e.code() == Some(RDKafkaErrorCode::GroupIdNotFound) => not_found += 1,
                    Err(e) => ensure!(!e.is_fatal(), "{e}"),
                }
            }
            anyhow::Ok(())
        })
        .await
        .with_context(|| {
            format!("{assignment:?}: read {records} of 12 records ({not_found} GROUP_ID_NOT_FOUND)")
        })??;
        println!("{assignment:?}: 12 records read; GROUP_ID_NOT_FOUND reported {not_found} times");
        ensure!(not_found > 0, "the injected error was not reported");
        consumer.close().await?;
    }
    Ok(())
}

/// A hook that never returns holds nothing but its own thread: `drop` returns within the revoke
/// timeout plus a second, and the stuck polling thread is left to finish in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_never_returns_does_not_hold_the_drop() -> anyhow::Result<()> {
    struct Stuck(Arc<AtomicBool>);
    impl RebalanceListener for Stuck {
        fn on_assigned(&self, _: &Assigned) {
            self.0.store(true, Ordering::SeqCst);
            // A hook that blocks the polling thread: what this test is about.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_secs(30));
        }
    }
    common::init_tracing();
    let cluster = TestCluster::embedded(1)?;
    let topic = common::unique_topic("stuck");
    common::fill_partitions(&cluster, &topic, &[1]).await?;
    let config = cluster.consumer_config().build()?;
    let entered = Arc::new(AtomicBool::new(false));
    let consumer = consumer(&config, &common::unique_topic("stuck"), &topic)
        .listener(Stuck(entered.clone()))
        .revoke_timeout(Duration::from_secs(1))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !entered.load(Ordering::SeqCst) {
        ensure!(Instant::now() < deadline, "never assigned");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    tokio::task::spawn_blocking(move || drop(consumer)).await?;
    let took = start.elapsed();
    println!("drop with the polling thread stuck in a hook: {took:?}");
    ensure!(took < Duration::from_millis(2_500), "drop took {took:?}");
    Ok(())
}
