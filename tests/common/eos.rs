//! Exactly-once: helpers shared by the embedded tests (`tests/transactions.rs`), and the
//! scenarios that also run on a real broker (`tests/real_broker.rs`): the transactional
//! producer's protocol, fencing, and a pipeline that crashes inside a transaction and restarts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use kafka_kit::consumer::{
    group_lag, CommitOffsets, Consumer, ConsumerRecord, Isolation, NextOffset, OffsetReset,
};
use kafka_kit::error::Recovery;
use kafka_kit::partitioner::Md5Partitioner;
use kafka_kit::producer::{OwnedRecord, Producer, Record};
use kafka_kit::rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use kafka_kit::rdkafka::Timestamp;
use kafka_kit::testing::TestCluster;
use kafka_kit::transaction::{ExactlyOnce, ExactlyOnceBuilder, TransactionalProducer};
use kafka_kit::Error;

use super::unique_topic;

/// Writes inputs `in-{i}` for each `i` of `inputs` to `topic`: input `i` has key `k{i}` and goes
/// to partition `i % partitions`, so that from `0..n` on a new topic, partition `p` holds inputs
/// `p`, `p + partitions`, … at offsets 0, 1, …
pub async fn produce_inputs(
    cluster: &TestCluster,
    topic: &str,
    inputs: std::ops::Range<usize>,
    partitions: i32,
) -> anyhow::Result<()> {
    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    for i in inputs {
        let (key, payload) = (format!("k{i}"), format!("in-{i}"));
        producer
            .send_and_forget(
                Record::to(topic)
                    .partition(i as i32 % partitions)
                    .key(&key)
                    .payload(&payload),
            )
            .await?;
    }
    producer.close().await?;
    Ok(())
}

/// The input number of a record written by [`produce_inputs`].
pub fn input_number(record: &ConsumerRecord) -> Result<usize, String> {
    let payload = String::from_utf8_lossy(record.payload().unwrap_or_default());
    payload
        .strip_prefix("in-")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("not an input: {payload:?}"))
}

/// The input number an output payload `out-{i}-{j}` was made from.
pub fn output_of(payload: &str) -> Option<usize> {
    payload
        .strip_prefix("out-")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// The outputs of input `i` in the tests: `outputs` records `out-{i}-{j}` to `topic`, keyed like
/// the input.
pub fn outputs_of(record: &ConsumerRecord, topic: &str, outputs: usize) -> Vec<OwnedRecord> {
    let i = input_number(record).unwrap_or(usize::MAX);
    (0..outputs)
        .map(|j| {
            OwnedRecord::to(topic)
                .key(record.key().unwrap_or_default())
                .payload(format!("out-{i}-{j}"))
        })
        .collect()
}

/// The plainest transform: one output `out-{i}-0` per input.
pub fn copy_to(
    topic: &str,
) -> impl Fn(Arc<ConsumerRecord>) -> std::future::Ready<Result<Vec<OwnedRecord>, String>>
       + Send
       + Sync
       + 'static {
    let topic = topic.to_owned();
    move |record| std::future::ready(Ok(outputs_of(&record, &topic, 1)))
}

/// A pipeline reading `input` from the start, in `group`, as `transactional_id`.
pub fn pipeline(
    cluster: &TestCluster,
    input: &str,
    group: &str,
    transactional_id: &str,
) -> anyhow::Result<ExactlyOnceBuilder> {
    Ok(ExactlyOnce::builder(&cluster.consumer_config().build()?)
        .group_id(group)
        .topics([input])
        .transactional_id(transactional_id)
        .consumer(|c| c.offset_reset(OffsetReset::Earliest)))
}

/// Reads `topic` from the start of every partition with `isolation` (no consumer group) until
/// `done` is true of the payloads read, then `settle` longer (to catch any extra record), or until
/// `timeout` has passed; returns the payloads.
///
/// A consumer error that is not fatal is logged and skipped: some brokers answer a
/// committed-offset fetch for a group that does not exist yet with GROUP_ID_NOT_FOUND, and a
/// broker down for a moment gives transport errors. A fatal error, or a panic in the consumer's
/// callbacks, ends the read with that error.
pub async fn read_until(
    cluster: &TestCluster,
    topic: &str,
    isolation: Isolation,
    timeout: Duration,
    settle: Duration,
    done: impl Fn(&[String]) -> bool,
) -> anyhow::Result<Vec<String>> {
    let partitions = cluster.partition_count(topic).await?;
    let mut consumer = Consumer::builder(&cluster.config().build()?)
        .assign(topic, 0..partitions)
        .offset_reset(OffsetReset::Earliest)
        .isolation(isolation)
        .build()?;
    let deadline = Instant::now() + timeout;
    let mut stop = deadline;
    let mut payloads = Vec::new();
    let mut satisfied = false;
    loop {
        if !satisfied && done(&payloads) {
            satisfied = true;
            stop = deadline.min(Instant::now() + settle);
        }
        let left = stop.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left, consumer.recv()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(Ok(record))) => {
                payloads.push(String::from_utf8_lossy(record.payload().unwrap_or_default()).into());
            }
            Ok(Some(Err(e))) if stops_reading(&e) => return Err(e.into()),
            Ok(Some(Err(e))) => {
                tracing::warn!(topic, error = %e, "read-back: consumer error; going on");
            }
        }
    }
    consumer.close().await?;
    Ok(payloads)
}

/// Whether a consumer error ends a read: a fatal one, or a panic in the consumer's callbacks.
/// Others (GROUP_ID_NOT_FOUND, a broker going down for a moment) the consumer recovers from.
pub fn stops_reading(error: &Error) -> bool {
    error.is_fatal() || matches!(error, Error::Panicked { .. })
}

/// How many outputs each input has among `payloads`.
pub fn outputs_per_input(payloads: &[String]) -> anyhow::Result<BTreeMap<usize, usize>> {
    let mut per_input = BTreeMap::new();
    for payload in payloads {
        let i = output_of(payload).with_context(|| format!("not an output: {payload:?}"))?;
        *per_input.entry(i).or_insert(0) += 1;
    }
    Ok(per_input)
}

/// Prints that a test needs the embedded broker (for error injection) and is skipped.
pub fn skip_without_mock(test: &str) {
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: needs the embedded broker's error injection (KAFKA_BOOTSTRAP_SERVERS is set)"
    );
}

/// The transactional producer's calls in order: init, a transaction with an awaited send, a
/// send with a callback and the consumer's offsets, committed; then one aborted; then one more
/// committed. On a real broker, a `read_committed` reader sees the committed records only, and
/// the group's offsets are those sent in the transaction.
pub async fn transactional_producer_flow(cluster: &TestCluster) -> anyhow::Result<()> {
    let (input, output) = (unique_topic("txn-in"), unique_topic("txn-out"));
    cluster.create_topic(&input, 2).await?;
    cluster.create_topic(&output, 3).await?;
    produce_inputs(cluster, &input, 0..6, 2).await?;

    // The inputs, read in a group: the transaction commits their offsets for it.
    let group = unique_topic("txn-group");
    let mut consumer = Consumer::builder(&cluster.consumer_config().build()?)
        .group_id(&group)
        .topics([input.as_str()])
        .offset_reset(OffsetReset::Earliest)
        .build()?;
    let mut offsets = CommitOffsets::new();
    for _ in 0..6 {
        let record = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .context("no input within 30 s")?
            .context("the consumer stopped")??;
        offsets.insert_after(&record);
    }
    for partition in 0..2 {
        ensure!(
            offsets.get(&input, partition) == Some(NextOffset::resume_at(3)),
            "next offsets to read: {offsets:?}"
        );
    }
    let group_metadata = consumer
        .group_metadata()
        .context("a consumer in a group has group metadata")?;

    let config = cluster.config().build()?;
    let producer: TransactionalProducer<u32> =
        TransactionalProducer::builder(&config, unique_topic("txn-id"))
            .transaction_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(30))
            .build()?;
    ensure!(producer.transactional_id().starts_with("txn-id-"));
    producer.init(Duration::from_secs(30)).await?;

    producer.begin()?;
    let first = producer
        .send(
            Record::to(&output)
                .key("k1")
                .payload("committed-1")
                .context(1),
        )
        .await?;
    ensure!(first.topic == output && first.context == 1, "{first:?}");
    ensure!(first.key.as_deref() == Some(&b"k1"[..]), "{first:?}");
    ensure!(
        first.partition == Md5Partitioner::partition_for(b"k1", 3) && first.offset >= 0,
        "{first:?}"
    );
    if cluster.is_embedded() {
        // The mock broker stamps every produce with a log-append time of 1234 ms.
        ensure!(
            first.timestamp == Timestamp::LogAppendTime(1234),
            "{first:?}"
        );
    }
    let (report, callback_report) = tokio::sync::oneshot::channel();
    producer
        .send_with_callback(
            Record::to(&output)
                .key("k2")
                .payload("committed-2")
                .context(2),
            move |result| {
                let _ = report.send(result);
            },
        )
        .await?;
    producer.send_offsets(&offsets, group_metadata).await?;
    producer.commit().await?;
    // The commit flushed: the callback has its report (or gets it at once).
    let second = tokio::time::timeout(Duration::from_secs(10), callback_report)
        .await
        .context("no delivery callback 10 s after the commit")??;
    let second = second?;
    ensure!(
        second.context == 2 && second.key.as_deref() == Some(&b"k2"[..]),
        "{second:?}"
    );
    ensure!(
        second.topic == output && second.partition == Md5Partitioner::partition_for(b"k2", 3),
        "{second:?}"
    );

    // An aborted transaction: its record was delivered (to the log), and is never committed.
    producer.begin()?;
    let aborted = producer
        .send(
            Record::to(&output)
                .key("k3")
                .payload("aborted-3")
                .context(3),
        )
        .await?;
    ensure!(aborted.context == 3 && aborted.offset >= 0, "{aborted:?}");
    producer.abort().await?;

    // The producer goes on after an abort.
    producer.begin()?;
    let third = producer
        .send(
            Record::to(&output)
                .key("k4")
                .payload("committed-4")
                .context(4),
        )
        .await?;
    ensure!(third.context == 4, "{third:?}");
    producer.commit().await?;
    let stats = producer.producer().stats();
    ensure!(
        stats.enqueued == 4 && stats.delivered == 4 && stats.failed == 0,
        "{stats:?}"
    );

    if cluster.is_embedded() {
        // The mock keeps aborted records visible and drops transactional offsets: all four
        // records are there, and that is all that can be checked.
        let all = read_until(
            cluster,
            &output,
            Isolation::ReadUncommitted,
            Duration::from_secs(20),
            Duration::ZERO,
            |p| p.len() >= 4,
        )
        .await?;
        ensure!(all.len() == 4, "{all:?}");
    } else {
        let mut committed = read_until(
            cluster,
            &output,
            Isolation::ReadCommitted,
            Duration::from_secs(30),
            Duration::from_secs(2),
            |p| p.len() >= 3,
        )
        .await?;
        committed.sort();
        ensure!(
            committed == ["committed-1", "committed-2", "committed-4"],
            "read_committed sees {committed:?}"
        );
        let lag = group_lag(&config, &group, [&input]).await?;
        ensure!(
            lag.len() == 2 && lag.iter().all(|p| p.committed == Some(3) && p.lag == 0),
            "the offsets sent in the transaction were not committed: {lag:?}"
        );
    }
    consumer.close().await?;
    Ok(())
}

/// A second producer with the same transactional id fences the first: the first's next
/// transaction call fails with a fatal error, and every later call (sends included) is refused
/// with `Error::Unusable`. The new producer works.
///
/// The embedded broker does not fence: its InitProducerId hands each new producer a producer id
/// of its own (rdkafka_mock_handlers.c, `rd_kafka_mock_pid_new`), so the old id stays valid. There
/// the coordinator is made to answer the old producer's AddPartitionsToTxn as Kafka answers a
/// fenced producer, with PRODUCER_FENCED (which librdkafka treats as fatal, normalized to
/// `__FENCED`).
pub async fn fenced_producer_is_unusable(cluster: &TestCluster) -> anyhow::Result<()> {
    let output = unique_topic("fenced-out");
    cluster.create_topic(&output, 2).await?;
    let config = cluster.config().build()?;
    let id = unique_topic("fenced-id");
    let build = || -> anyhow::Result<TransactionalProducer> {
        Ok(TransactionalProducer::builder(&config, id.clone())
            .transaction_timeout(Duration::from_secs(10))
            .operation_timeout(Duration::from_secs(30))
            .build()?)
    };
    let old = build()?;
    old.init(Duration::from_secs(30)).await?;
    old.begin()?;
    old.send(Record::to(&output).key("a").payload("old-1"))
        .await?;
    old.commit().await?;

    let new = build()?;
    new.init(Duration::from_secs(30)).await?;
    if let Some(mock) = cluster.mock() {
        mock.with_mock(|m| {
            m.request_errors(
                RDKafkaApiKey::AddPartitionsToTxn,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
            );
        })?;
    }

    // `begin` only changes local state; the first call to reach the coordinator learns of the
    // fencing. The send's record is purged when the producer fails.
    old.begin()?;
    let sent = tokio::time::timeout(
        Duration::from_secs(30),
        old.send(Record::to(&output).key("a").payload("old-2")),
    )
    .await
    .context("the fenced producer's send neither failed nor was delivered within 30 s")?;
    ensure!(sent.is_err(), "the fenced producer delivered: {sent:?}");
    let fatal = old
        .commit()
        .await
        .err()
        .context("the fenced producer committed")?;
    ensure!(
        fatal.recovery() == Recovery::Fatal && fatal.is_fatal(),
        "not fatal: {fatal} ({:?})",
        fatal.recovery()
    );

    // From now on, every call is refused without reaching librdkafka.
    let unusable = |e: &Error| matches!(e, Error::Unusable { transactional_id, .. } if *transactional_id == id);
    let refused = [
        ("init", old.init(Duration::from_secs(5)).await.err()),
        ("begin", old.begin().err()),
        ("commit", old.commit().await.err()),
        ("abort", old.abort().await.err()),
        (
            "send_offsets",
            old.send_offsets(&CommitOffsets::new(), new_group_metadata(cluster).await?)
                .await
                .err(),
        ),
    ];
    for (call, error) in refused {
        let error = error.with_context(|| format!("{call} succeeded on a fenced producer"))?;
        ensure!(unusable(&error), "{call}: {error}");
        ensure!(error.recovery() == Recovery::Fatal, "{call}: {error}");
    }
    let record = || Record::to(&output).key("a").payload("old-3");
    let send_errors = [
        ("send", old.send(record()).await.err().map(|e| e.error)),
        (
            "send_json",
            old.send_json(record(), &"x").await.err().map(|e| e.error),
        ),
        (
            "enqueue",
            old.enqueue(record()).await.err().map(|e| e.error),
        ),
        (
            "send_with_callback",
            old.send_with_callback(record(), |_| {})
                .await
                .err()
                .map(|e| e.error),
        ),
        (
            "send_and_forget",
            old.send_and_forget(record()).await.err().map(|e| e.error),
        ),
    ];
    for (call, error) in send_errors {
        let error = error.with_context(|| format!("{call} succeeded on a fenced producer"))?;
        ensure!(unusable(&error), "{call}: {error}");
    }
    // A refused record comes back whole.
    let refused = old
        .send(Record::to(&output).key("a").payload("old-4"))
        .await
        .err()
        .context("sent")?;
    ensure!(refused.message.payload.as_deref() == Some(&b"old-4"[..]));

    // The new instance is unaffected.
    new.begin()?;
    new.send(Record::to(&output).key("a").payload("new-1"))
        .await?;
    new.commit().await?;
    Ok(())
}

/// Group metadata of a real member of a new group, for calls that need some.
async fn new_group_metadata(
    cluster: &TestCluster,
) -> anyhow::Result<kafka_kit::consumer::ConsumerGroupMetadata> {
    let topic = unique_topic("metadata");
    cluster.create_topic(&topic, 1).await?;
    let consumer = Consumer::builder(&cluster.consumer_config().build()?)
        .group_id(unique_topic("metadata-group"))
        .topics([topic.as_str()])
        .build()?;
    let metadata = consumer.group_metadata().context("no group metadata")?;
    consumer.close().await?;
    Ok(metadata)
}

/// Exactly once across a crash: a pipeline is killed (its task aborted: no commit, no abort, no
/// graceful anything) while a transaction is open whose outputs are already on the broker; a new
/// instance with the same group and transactional id fences it (aborting that transaction), takes
/// its partitions over and goes on from the last committed offsets. A `read_committed` reader
/// then sees exactly one output per input, and none of the aborted ones (which are in the log).
///
/// Needs a real broker: the embedded one shows aborted records and drops offsets committed in
/// transactions.
pub async fn exactly_once_survives_a_crash(cluster: &TestCluster) -> anyhow::Result<()> {
    const INPUTS: usize = 300;
    const PARTITIONS: i32 = 3;
    /// The first instance commits every 50 inputs…
    const BATCH: usize = 50;
    /// …and hangs on its 130th: the open transaction then holds 29 inputs, with their outputs.
    const HANG_AT: usize = 130;

    let (input, output) = (unique_topic("eos-in"), unique_topic("eos-out"));
    let (group, id) = (unique_topic("eos-group"), unique_topic("eos-id"));
    cluster.create_topic(&input, PARTITIONS).await?;
    cluster.create_topic(&output, PARTITIONS).await?;
    produce_inputs(cluster, &input, 0..INPUTS, PARTITIONS).await?;

    // The first instance. The batch is closed by count long before the interval (5 s, under the
    // 10 s transaction timeout) ends.
    let first = pipeline(cluster, &input, &group, &id)?
        .commit_every(BATCH, Duration::from_secs(5))
        .build()?;
    let first_progress = first.progress();
    let calls = Arc::new(AtomicUsize::new(0));
    let hanging = Arc::new(AtomicBool::new(false));
    let transform = {
        let (calls, hanging, output) = (calls.clone(), hanging.clone(), output.clone());
        move |record: Arc<ConsumerRecord>| {
            let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let hanging = hanging.clone();
            let outputs = outputs_of(&record, &output, 1);
            async move {
                if call == HANG_AT {
                    hanging.store(true, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Ok::<_, String>(outputs)
            }
        }
    };
    let task = tokio::spawn(first.run(transform, std::future::pending::<()>()));

    // Joining the group and processing 129 inputs: well under a minute.
    let hung = tokio::time::timeout(Duration::from_secs(90), async {
        while !hanging.load(Ordering::SeqCst) && !task.is_finished() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if task.is_finished() {
        bail!("the first instance stopped early: {:?}", task.await?);
    }
    hung.with_context(|| {
        format!(
            "the first instance never reached input {HANG_AT}: {:?}",
            first_progress.snapshot()
        )
    })?;
    // Two transactions of 50 committed (unless something aborted one), one open.
    let before = first_progress.snapshot();
    ensure!(
        before.transactions_committed >= 1
            && before.records_in >= BATCH as u64
            && before.records_in < HANG_AT as u64
            && before.records_out == before.records_in,
        "the first instance before the crash: {before:?}"
    );
    // The open transaction's outputs reach the broker within the producer's linger time; make
    // sure they are in the log before the crash, so that there is something to abort.
    let in_log = read_until(
        cluster,
        &output,
        Isolation::ReadUncommitted,
        Duration::from_secs(30),
        Duration::ZERO,
        |p| p.len() > before.records_out as usize,
    )
    .await?;
    ensure!(
        in_log.len() > before.records_out as usize,
        "the open transaction's outputs never reached the broker: {} in the log, {} committed",
        in_log.len(),
        before.records_out
    );

    // The crash. Dropping the pipeline's future is as abrupt as an async runtime allows: the
    // transaction stays open on the broker.
    task.abort();
    let crashed = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .context("the aborted task was not dropped within 30 s")?;
    ensure!(
        crashed
            .as_ref()
            .is_err_and(tokio::task::JoinError::is_cancelled),
        "{crashed:?}"
    );
    let committed_first = first_progress.snapshot();
    ensure!(
        committed_first == before,
        "{committed_first:?} != {before:?}"
    );

    // The restart: same group, same transactional id. Its init fences the old producer and has
    // the coordinator abort the open transaction (librdkafka retries CONCURRENT_TRANSACTIONS
    // until that is done); its consumer gets the partitions once the group has rebalanced
    // without the old member, and starts at the offsets the first instance committed.
    let second = pipeline(cluster, &input, &group, &id)?
        .init_timeout(Duration::from_secs(60))
        .build()?;
    let second_progress = second.progress();
    let remaining = (INPUTS as u64) - committed_first.records_in;
    let stats = tokio::time::timeout(
        Duration::from_secs(180),
        second.run(
            copy_to(&output),
            second_progress.wait_for(move |s| s.records_in >= remaining),
        ),
    )
    .await
    .with_context(|| {
        format!(
            "the restarted instance did not process the {remaining} remaining inputs within 180 s: {:?}",
            second_progress.snapshot()
        )
    })??;
    ensure!(
        stats.records_in == remaining && stats.records_out == remaining,
        "the restarted instance: {stats:?}, expected {remaining} inputs"
    );

    // Exactly one committed output per input; the aborted outputs are in the log, unseen.
    let committed = read_until(
        cluster,
        &output,
        Isolation::ReadCommitted,
        Duration::from_secs(60),
        Duration::from_secs(3),
        |p| p.len() >= INPUTS,
    )
    .await?;
    let per_input = outputs_per_input(&committed)?;
    let missing: Vec<usize> = (0..INPUTS).filter(|i| !per_input.contains_key(i)).collect();
    let duplicated: Vec<(&usize, &usize)> = per_input.iter().filter(|(_, &n)| n > 1).collect();
    ensure!(
        missing.is_empty() && duplicated.is_empty() && committed.len() == INPUTS,
        "read_committed: {} outputs; missing inputs {missing:?}; duplicated {duplicated:?}",
        committed.len()
    );
    let everything = read_until(
        cluster,
        &output,
        Isolation::ReadUncommitted,
        Duration::from_secs(60),
        Duration::from_secs(3),
        |p| p.len() > INPUTS,
    )
    .await?;
    ensure!(
        everything.len() > INPUTS,
        "the aborted outputs should be in the log: {} records",
        everything.len()
    );
    let lag = group_lag(&cluster.config().build()?, &group, [&input]).await?;
    ensure!(
        lag.len() == PARTITIONS as usize && lag.iter().all(|p| p.lag == 0),
        "lag left: {lag:?}"
    );
    tracing::info!(
        inputs = INPUTS,
        first = ?committed_first,
        second = ?stats,
        aborted_outputs = everything.len() - INPUTS,
        "exactly once across a crash"
    );
    Ok(())
}
