//! Exactly-once on the embedded broker (or on `KAFKA_BOOTSTRAP_SERVERS` when it is set): the
//! transactional producer's calls, errors injected into the transaction protocol, fencing, the
//! `ExactlyOnce` pipeline end to end (fan-out, retries, dead letters), and its startup checks
//! (static membership, durations).
//!
//! The embedded broker keeps aborted records visible and drops offsets committed in
//! transactions, so these tests check the pipeline's counts and that every input has an output;
//! that a `read_committed` reader sees exactly one output per input across a crash is checked on a
//! real broker (`tests/real_broker.rs`, `exactly_once_survives_a_crash`).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use common::eos::{
    copy_to, input_number, outputs_of, outputs_per_input, pipeline, produce_inputs, read_until,
    skip_without_mock,
};
use kafka_kit::consumer::processing::{dead_letter_headers, RetryPolicy};
use kafka_kit::consumer::{Consumer, ConsumerRecord, Isolation};
use kafka_kit::error::Recovery;
use kafka_kit::headers::HeaderReader;
use kafka_kit::rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use kafka_kit::rdkafka::Message;
use kafka_kit::testing::TestCluster;
use kafka_kit::transaction::{ExactlyOnce, ExactlyOnceStats, TransactionalProducer};
use kafka_kit::Error;

fn cluster() -> anyhow::Result<TestCluster> {
    common::init_tracing();
    Ok(TestCluster::from_env_or_embedded()?)
}

/// How long any one pipeline run may take: a group join (2 s on the embedded broker), a few
/// transactions, a few aborts with their backoff.
const RUN_TIMEOUT: Duration = Duration::from_secs(40);

// ---------------------------------------------------------------------------------------------
// 1. The transactional producer's protocol
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_producer_commits_aborts_and_goes_on() -> anyhow::Result<()> {
    common::transactional_producer_flow(&cluster()?).await
}

// ---------------------------------------------------------------------------------------------
// 2. Errors injected into the transaction protocol
// ---------------------------------------------------------------------------------------------

const INJECTED_INPUTS: usize = 30;

/// Runs a pipeline over 30 inputs (3 partitions, one output each) after pushing `errors` onto the
/// embedded broker's error stacks (each answers one request of its API, in order), until all 30
/// inputs are committed. Returns its counts, and how many outputs each input has in the log
/// (aborted ones included: the mock shows them). `None` on a real broker.
async fn run_with_injected_errors(
    test: &str,
    errors: &[(RDKafkaApiKey, &[RDKafkaRespErr])],
) -> anyhow::Result<Option<(ExactlyOnceStats, BTreeMap<usize, usize>)>> {
    let cluster = cluster()?;
    let Some(mock) = cluster.mock() else {
        skip_without_mock(test);
        return Ok(None);
    };
    let (input, output) = (
        common::unique_topic("inject-in"),
        common::unique_topic("inject-out"),
    );
    cluster.create_topic(&input, 3).await?;
    cluster.create_topic(&output, 3).await?;
    // Inputs first: the errors are for the pipeline's producer, not this one.
    produce_inputs(&cluster, &input, 0..INJECTED_INPUTS, 3).await?;
    for (api, codes) in errors {
        let (api, codes) = (*api, codes.to_vec());
        mock.with_mock(move |m| m.request_errors(api, &codes))?;
    }
    let eos = pipeline(
        &cluster,
        &input,
        &common::unique_topic("inject-group"),
        &common::unique_topic("inject-id"),
    )?
    .commit_every(1000, Duration::from_millis(100))
    .retry(RetryPolicy::attempts(5).backoff(Duration::from_millis(20)))
    .build()?;
    let progress = eos.progress();
    let n = INJECTED_INPUTS as u64;
    let stats = tokio::time::timeout(
        RUN_TIMEOUT,
        eos.run(
            copy_to(&output),
            progress.wait_for(move |s| s.records_in >= n),
        ),
    )
    .await
    .with_context(|| {
        format!(
            "{test}: not done in {RUN_TIMEOUT:?}: {:?}",
            progress.snapshot()
        )
    })??;
    let outputs = read_until(
        &cluster,
        &output,
        Isolation::ReadUncommitted,
        Duration::from_secs(20),
        Duration::ZERO,
        |p| outputs_per_input(p).is_ok_and(|o| o.len() >= INJECTED_INPUTS),
    )
    .await?;
    let per_input = outputs_per_input(&outputs)?;
    tracing::info!(
        test,
        ?stats,
        outputs = outputs.len(),
        "after injected errors"
    );
    Ok(Some((stats, per_input)))
}

/// The pipeline aborted at least once, then committed every input, each with an output.
fn aborted_then_committed_everything(
    test: &str,
    stats: &ExactlyOnceStats,
    per_input: &BTreeMap<usize, usize>,
) -> anyhow::Result<()> {
    let n = INJECTED_INPUTS as u64;
    ensure!(
        stats.transactions_aborted >= 1,
        "{test}: the injected error did not abort a transaction: {stats:?}"
    );
    ensure!(
        stats.transactions_committed >= 1 && stats.records_in == n && stats.records_out == n,
        "{test}: not every input committed after the abort: {stats:?}"
    );
    ensure!(stats.dead_lettered == 0, "{test}: {stats:?}");
    let missing: Vec<usize> = (0..INJECTED_INPUTS)
        .filter(|i| !per_input.contains_key(i))
        .collect();
    ensure!(
        missing.is_empty(),
        "{test}: inputs without output: {missing:?}"
    );
    Ok(())
}

/// EndTxn(commit) answered UNKNOWN_PRODUCER_ID (the broker lost the producer's state): librdkafka
/// classifies it as permanent and, for a commit, raises an abortable error that needs an epoch
/// bump (rdkafka_txnmgr.c, `rd_kafka_txn_handle_EndTxn`). `commit` fails with
/// `txn_requires_abort`; the pipeline aborts (librdkafka bumps the epoch with InitProducerId,
/// KIP-360), rewinds, and commits the inputs in a new transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_txn_error_aborts_and_retries() -> anyhow::Result<()> {
    let test = "end_txn_error_aborts_and_retries";
    let Some((stats, per_input)) = run_with_injected_errors(
        test,
        &[(
            RDKafkaApiKey::EndTxn,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID],
        )],
    )
    .await?
    else {
        return Ok(());
    };
    aborted_then_committed_everything(test, &stats, &per_input)
}

/// AddPartitionsToTxn answered TOPIC_AUTHORIZATION_FAILED for the output partitions: a
/// partition-level permanent error, which librdkafka turns into an abortable transaction error
/// (`rd_kafka_txn_handle_AddPartitionsToTxn`), purging the transaction's queued records. Their
/// deliveries fail with a purge error, so the pipeline aborts, rewinds, and retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_partitions_error_aborts_and_retries() -> anyhow::Result<()> {
    let test = "add_partitions_error_aborts_and_retries";
    let Some((stats, per_input)) = run_with_injected_errors(
        test,
        &[(
            RDKafkaApiKey::AddPartitionsToTxn,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED],
        )],
    )
    .await?
    else {
        return Ok(());
    };
    aborted_then_committed_everything(test, &stats, &per_input)
}

/// Produce answered RECORD_LIST_TOO_LARGE: not retriable (`rd_kafka_err_action` leaves it
/// permanent, and the idempotence layer has no special case for it), so a transactional
/// producer raises an abortable error ("current transaction must be aborted",
/// `rd_kafka_handle_Produce_error`): the batch fails with that code, the rest of the queue is
/// purged, the pipeline aborts and retries. The failed batch used up its sequence numbers, so the
/// retried transaction's first produce to that partition gets OUT_OF_ORDER_SEQUENCE_NUMBER, which
/// librdkafka answers with an epoch bump through one more abortable error ("skipped sequence
/// numbers", `rd_kafka_handle_idempotent_Produce_error`): two aborts, then the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_error_aborts_and_retries() -> anyhow::Result<()> {
    let test = "produce_error_aborts_and_retries";
    let Some((stats, per_input)) = run_with_injected_errors(
        test,
        &[(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE],
        )],
    )
    .await?
    else {
        return Ok(());
    };
    aborted_then_committed_everything(test, &stats, &per_input)
}

/// Errors librdkafka retries by itself never reach the pipeline, and abort nothing:
/// - EndTxn CONCURRENT_TRANSACTIONS and COORDINATOR_LOAD_IN_PROGRESS: `RETRY` while committing,
///   the request is sent again (`rd_kafka_buf_retry`) and `commit` returns success;
/// - AddPartitionsToTxn CONCURRENT_TRANSACTIONS: the partitions are registered again 20 ms later;
/// - Produce NOT_ENOUGH_REPLICAS: `RETRY`, the idempotent producer drains and resends the batch
///   with the same sequence numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_errors_are_retried_by_librdkafka() -> anyhow::Result<()> {
    use RDKafkaRespErr::*;
    let test = "retriable_errors_are_retried_by_librdkafka";
    let Some((stats, per_input)) = run_with_injected_errors(
        test,
        &[
            (
                RDKafkaApiKey::EndTxn,
                &[
                    RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
                    RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                ],
            ),
            (
                RDKafkaApiKey::AddPartitionsToTxn,
                &[RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS],
            ),
            (
                RDKafkaApiKey::Produce,
                &[RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS],
            ),
        ],
    )
    .await?
    else {
        return Ok(());
    };
    let n = INJECTED_INPUTS as u64;
    ensure!(
        stats.transactions_aborted == 0 && stats.retries == 0,
        "a retriable error aborted a transaction: {stats:?}"
    );
    ensure!(stats.records_in == n && stats.records_out == n, "{stats:?}");
    // Nothing was aborted, so nothing is duplicated, even on the embedded broker.
    ensure!(
        per_input.len() == INJECTED_INPUTS && per_input.values().all(|&n| n == 1),
        "{per_input:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Fencing
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_producer_fails_fatally_then_refuses_every_call() -> anyhow::Result<()> {
    common::fenced_producer_is_unusable(&cluster()?).await
}

/// A pipeline whose producer is fenced (by a newer instance with its transactional id) stops with
/// the fatal error; the transaction it had open is never committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_pipeline_stops_with_a_fatal_error() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let (input, output) = (
        common::unique_topic("fenced-in"),
        common::unique_topic("fenced-out"),
    );
    cluster.create_topic(&input, 3).await?;
    cluster.create_topic(&output, 3).await?;
    produce_inputs(&cluster, &input, 0..10, 3).await?;
    let id = common::unique_topic("fenced-pipeline-id");
    let eos = pipeline(&cluster, &input, &common::unique_topic("fenced-group"), &id)?
        .commit_every(1000, Duration::from_millis(50))
        .build()?;
    let progress = eos.progress();
    let run = tokio::spawn(eos.run(copy_to(&output), std::future::pending::<()>()));
    tokio::time::timeout(RUN_TIMEOUT, progress.wait_for(|s| s.records_in >= 10))
        .await
        .with_context(|| {
            format!(
                "the first inputs were not committed: {:?}",
                progress.snapshot()
            )
        })?;

    // A newer instance fences the pipeline's producer. (The embedded broker does not fence; see
    // `fenced_producer_is_unusable`: it answers the pipeline's next AddPartitionsToTxn as Kafka
    // answers a fenced producer.)
    let newer: TransactionalProducer =
        TransactionalProducer::builder(&cluster.config().build()?, id.clone()).build()?;
    newer.init(Duration::from_secs(30)).await?;
    if let Some(mock) = cluster.mock() {
        mock.with_mock(|m| {
            m.request_errors(
                RDKafkaApiKey::AddPartitionsToTxn,
                &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
            );
        })?;
    }
    produce_inputs(&cluster, &input, 10..20, 3).await?;

    let result = tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .context("the fenced pipeline did not stop")??;
    let error = match result {
        Ok(stats) => bail!("the fenced pipeline stopped without an error: {stats:?}"),
        Err(e) => e,
    };
    ensure!(
        error.recovery() == Recovery::Fatal,
        "not fatal: {error} ({:?})",
        error.recovery()
    );
    let stats = progress.snapshot();
    ensure!(
        stats.records_in == 10 && stats.records_out == 10,
        "the fenced pipeline committed after it was fenced: {stats:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. The pipeline end to end
// ---------------------------------------------------------------------------------------------

/// 60 inputs over 3 partitions; input `i` gives `i % 3` outputs (0, 1 or 2). Transactions close
/// every 25 inputs; the shutdown comes with the last 10 inputs in an open transaction, which it
/// commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_fans_out_and_commits_the_open_transaction_at_shutdown() -> anyhow::Result<()> {
    const N: usize = 60;
    let cluster = cluster()?;
    let (input, output) = (
        common::unique_topic("fanout-in"),
        common::unique_topic("fanout-out"),
    );
    cluster.create_topic(&input, 3).await?;
    cluster.create_topic(&output, 3).await?;
    produce_inputs(&cluster, &input, 0..N, 3).await?;

    let eos = pipeline(
        &cluster,
        &input,
        &common::unique_topic("fanout-group"),
        &common::unique_topic("fanout-id"),
    )?
    .commit_every(25, Duration::from_secs(30))
    .build()?;
    let progress = eos.progress();
    let transformed = Arc::new(AtomicUsize::new(0));
    let transform = {
        let (transformed, output) = (transformed.clone(), output.clone());
        move |record: Arc<ConsumerRecord>| {
            transformed.fetch_add(1, Ordering::SeqCst);
            let result = input_number(&record).map(|i| outputs_of(&record, &output, i % 3));
            std::future::ready(result)
        }
    };
    // Shut down once every input went through the transform: 50 are committed by then (two full
    // transactions), the last 10 are in the open one.
    let shutdown = {
        let (transformed, progress) = (transformed.clone(), progress.clone());
        async move {
            while transformed.load(Ordering::SeqCst) < N {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let at_shutdown = progress.snapshot();
            assert_eq!(
                at_shutdown.records_in, 50,
                "the last transaction should still be open: {at_shutdown:?}"
            );
        }
    };
    let stats = tokio::time::timeout(RUN_TIMEOUT, eos.run(transform, shutdown))
        .await
        .with_context(|| format!("not done: {:?}", progress.snapshot()))??;
    let expected_outputs: usize = (0..N).map(|i| i % 3).sum();
    // Field by field: `ExactlyOnceStats` is `#[non_exhaustive]`.
    ensure!(
        (
            stats.transactions_committed,
            stats.transactions_aborted,
            stats.records_in,
            stats.records_out,
            stats.dead_lettered,
            stats.retries,
        ) == (3, 0, N as u64, expected_outputs as u64, 0, 0),
        "{stats:?}"
    );

    // No abort, so the log holds exactly the committed outputs, even on the embedded broker.
    let outputs = read_until(
        &cluster,
        &output,
        Isolation::ReadCommitted,
        Duration::from_secs(20),
        Duration::from_secs(1),
        |p| p.len() >= expected_outputs,
    )
    .await?;
    ensure!(
        outputs.len() == expected_outputs,
        "{} outputs",
        outputs.len()
    );
    let per_input = outputs_per_input(&outputs)?;
    for i in 0..N {
        ensure!(
            per_input.get(&i).copied().unwrap_or(0) == i % 3,
            "input {i}: {:?} outputs, expected {}",
            per_input.get(&i),
            i % 3
        );
    }
    let distinct: BTreeSet<&String> = outputs.iter().collect();
    ensure!(distinct.len() == outputs.len(), "duplicate outputs");
    Ok(())
}

/// A transform that fails twice on one input, then succeeds: each failure aborts the transaction
/// and rewinds; the third attempt commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_transform_is_retried_after_aborts() -> anyhow::Result<()> {
    const N: usize = 20;
    const FLAKY: usize = 7;
    let cluster = cluster()?;
    let (input, output) = (
        common::unique_topic("flaky-in"),
        common::unique_topic("flaky-out"),
    );
    cluster.create_topic(&input, 2).await?;
    cluster.create_topic(&output, 2).await?;
    produce_inputs(&cluster, &input, 0..N, 2).await?;
    let eos = pipeline(
        &cluster,
        &input,
        &common::unique_topic("flaky-group"),
        &common::unique_topic("flaky-id"),
    )?
    .retry(RetryPolicy::attempts(3).backoff(Duration::from_millis(20)))
    .build()?;
    let progress = eos.progress();
    let attempts: Arc<Mutex<HashMap<usize, u32>>> = Arc::default();
    let transform = {
        let (attempts, output) = (attempts.clone(), output.clone());
        move |record: Arc<ConsumerRecord>| {
            let result = input_number(&record).and_then(|i| {
                let mut attempts = attempts.lock().unwrap();
                let attempt = attempts.entry(i).or_insert(0);
                *attempt += 1;
                if i == FLAKY && *attempt <= 2 {
                    Err(format!("input {i}: transient failure {attempt}"))
                } else {
                    Ok(outputs_of(&record, &output, 1))
                }
            });
            std::future::ready(result)
        }
    };
    let stats = tokio::time::timeout(
        RUN_TIMEOUT,
        eos.run(transform, progress.wait_for(|s| s.records_in >= N as u64)),
    )
    .await
    .with_context(|| format!("not done: {:?}", progress.snapshot()))??;
    ensure!(
        stats.retries == 2 && stats.transactions_aborted >= 2,
        "{stats:?}"
    );
    ensure!(
        stats.records_in == N as u64 && stats.records_out == N as u64 && stats.dead_lettered == 0,
        "{stats:?}"
    );
    ensure!(attempts.lock().unwrap()[&FLAKY] == 3, "{attempts:?}");
    let outputs = read_until(
        &cluster,
        &output,
        Isolation::ReadCommitted,
        Duration::from_secs(20),
        Duration::ZERO,
        |p| outputs_per_input(p).is_ok_and(|o| o.len() >= N),
    )
    .await?;
    let per_input = outputs_per_input(&outputs)?;
    ensure!(
        per_input.len() == N,
        "outputs of {} inputs",
        per_input.len()
    );
    if !cluster.is_embedded() {
        ensure!(
            per_input.values().all(|&n| n == 1),
            "read_committed shows aborted outputs: {per_input:?}"
        );
    }
    Ok(())
}

/// An input that always fails goes, after its attempts, to the dead-letter topic (inside the
/// transaction, with the `dlt.*` headers); the others are processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_input_is_dead_lettered() -> anyhow::Result<()> {
    const N: usize = 20;
    const POISON: usize = 5; // partition 1, offset 2
    let cluster = cluster()?;
    let (input, output, dead_letters) = (
        common::unique_topic("poison-in"),
        common::unique_topic("poison-out"),
        common::unique_topic("poison-dlt"),
    );
    cluster.create_topic(&input, 2).await?;
    cluster.create_topic(&output, 2).await?;
    cluster.create_topic(&dead_letters, 1).await?;
    produce_inputs(&cluster, &input, 0..N, 2).await?;
    let eos = pipeline(
        &cluster,
        &input,
        &common::unique_topic("poison-group"),
        &common::unique_topic("poison-id"),
    )?
    .retry(RetryPolicy::attempts(2).backoff(Duration::from_millis(20)))
    .dead_letter(&dead_letters)
    .build()?;
    let progress = eos.progress();
    let transform = {
        let output = output.clone();
        move |record: Arc<ConsumerRecord>| {
            let result = input_number(&record).and_then(|i| match i {
                POISON => Err(format!("poison input {i}")),
                _ => Ok(outputs_of(&record, &output, 1)),
            });
            std::future::ready(result)
        }
    };
    let stats = tokio::time::timeout(
        RUN_TIMEOUT,
        eos.run(transform, progress.wait_for(|s| s.records_in >= N as u64)),
    )
    .await
    .with_context(|| format!("not done: {:?}", progress.snapshot()))??;
    ensure!(
        stats.dead_lettered == 1 && stats.retries == 2 && stats.transactions_aborted >= 2,
        "{stats:?}"
    );
    ensure!(
        stats.records_in == N as u64 && stats.records_out == N as u64 - 1,
        "{stats:?}"
    );

    // The dead letter is written once, in a committed transaction.
    let letters = read_until(
        &cluster,
        &dead_letters,
        Isolation::ReadCommitted,
        Duration::from_secs(20),
        Duration::from_secs(1),
        |p| !p.is_empty(),
    )
    .await?;
    ensure!(letters == ["in-5"], "dead letters: {letters:?}");
    let letter = cluster
        .read_topic(&dead_letters, 1, Duration::from_secs(20))
        .await?
        .pop()
        .context("no dead letter")?;
    ensure!(letter.key() == Some(&b"k5"[..]) && letter.payload() == Some(&b"in-5"[..]));
    let headers = HeaderReader::new(letter.headers());
    let header = |name| headers.get_str(name).ok().flatten().unwrap_or_default();
    ensure!(
        header(dead_letter_headers::ORIGINAL_TOPIC) == input,
        "{headers:?}"
    );
    ensure!(
        header(dead_letter_headers::ORIGINAL_PARTITION) == "1",
        "{headers:?}"
    );
    ensure!(
        header(dead_letter_headers::ORIGINAL_OFFSET) == "2",
        "{headers:?}"
    );
    ensure!(header(dead_letter_headers::ATTEMPTS) == "2", "{headers:?}");
    ensure!(
        header(dead_letter_headers::ERROR).contains("poison input 5"),
        "{headers:?}"
    );

    let outputs = read_until(
        &cluster,
        &output,
        Isolation::ReadCommitted,
        Duration::from_secs(20),
        Duration::ZERO,
        |p| outputs_per_input(p).is_ok_and(|o| o.len() >= N - 1),
    )
    .await?;
    let per_input = outputs_per_input(&outputs)?;
    let with_output: BTreeSet<usize> = per_input.keys().copied().collect();
    let expected: BTreeSet<usize> = (0..N).filter(|&i| i != POISON).collect();
    ensure!(
        with_output == expected,
        "inputs with outputs: {with_output:?}"
    );
    Ok(())
}

/// A pipeline dropped in the middle of a transaction (its task aborted: a crash, as far as an
/// async program can crash) lets its consumer leave the group without waiting for the partitions
/// the dropped transaction held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_pipeline_leaves_the_group_promptly() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let (input, output) = (
        common::unique_topic("dropped-in"),
        common::unique_topic("dropped-out"),
    );
    cluster.create_topic(&input, 2).await?;
    cluster.create_topic(&output, 2).await?;
    produce_inputs(&cluster, &input, 0..10, 2).await?;
    let eos = pipeline(
        &cluster,
        &input,
        &common::unique_topic("dropped-group"),
        &common::unique_topic("dropped-id"),
    )?
    .commit_every(1000, Duration::from_secs(30))
    .build()?;
    let progress = eos.progress();
    let transformed = Arc::new(AtomicUsize::new(0));
    let transform = {
        let (transformed, output) = (transformed.clone(), output.clone());
        move |record: Arc<ConsumerRecord>| {
            let call = transformed.fetch_add(1, Ordering::SeqCst) + 1;
            let outputs = outputs_of(&record, &output, 1);
            async move {
                if call == 5 {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Ok::<_, String>(outputs)
            }
        }
    };
    let task = tokio::spawn(eos.run(transform, std::future::pending::<()>()));
    tokio::time::timeout(RUN_TIMEOUT, async {
        while transformed.load(Ordering::SeqCst) < 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .context("the pipeline never reached its fifth input")?;
    // A transaction is open, holding both partitions (4 inputs of them).
    ensure!(
        progress.snapshot().records_in == 0,
        "{:?}",
        progress.snapshot()
    );
    let started = Instant::now();
    task.abort();
    let dropped = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .context("the aborted pipeline was not dropped within 30 s")?;
    ensure!(dropped.is_err_and(|e| e.is_cancelled()));
    let took = started.elapsed();
    tracing::info!(?took, "pipeline dropped");
    // The consumer's revoke waits for held partitions for up to its revoke timeout (10 s): a
    // dropped transaction must not hold them.
    ensure!(
        took < Duration::from_secs(5),
        "dropping the pipeline took {took:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. Startup checks
// ---------------------------------------------------------------------------------------------

/// Every setting that breaks exactly-once is reported, all at once, before any client exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_checks_report_every_problem_at_once() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let config = cluster
        .config()
        .set("session.timeout.ms", "6000")
        .set("transaction.timeout.ms", "6000")
        .set("enable.auto.commit", "true")
        .set("isolation.level", "read_uncommitted")
        .build()?;
    let builder = || {
        ExactlyOnce::builder(&config)
            .group_id("startup-group")
            .topics(["startup-in"])
            .transactional_id("startup-id")
    };
    let problems = |result: kafka_kit::Result<ExactlyOnce>| -> anyhow::Result<Vec<String>> {
        match result {
            Ok(pipeline) => bail!("built: {pipeline:?}"),
            Err(Error::Config(e)) => {
                let mut properties: Vec<String> = e
                    .problems()
                    .iter()
                    .map(|p| p.property().to_owned())
                    .collect();
                properties.sort();
                tracing::info!(error = %e, "refused");
                Ok(properties)
            }
            Err(e) => bail!("not a configuration error: {e}"),
        }
    };
    let found = problems(builder().build())?;
    ensure!(
        found
            == [
                "enable.auto.commit",
                "isolation.level",
                "transaction.timeout.ms"
            ],
        "{found:?}"
    );
    let message = builder().build().err().context("built")?.to_string();
    for property in [
        "enable.auto.commit",
        "isolation.level",
        "transaction.timeout.ms",
    ] {
        ensure!(message.contains(property), "{message}");
    }

    // The builder's own transaction timeout is checked the same way (and wins over the
    // configuration's).
    let fine = cluster.config().set("session.timeout.ms", "6000").build()?;
    let found = problems(
        ExactlyOnce::builder(&fine)
            .group_id("startup-group")
            .topics(["startup-in"])
            .transactional_id("startup-id")
            .transaction_timeout(Duration::from_secs(7))
            .build(),
    )?;
    ensure!(found == ["transaction.timeout.ms"], "{found:?}");

    // Missing group, topics and transactional id: three more, at once.
    let found = problems(ExactlyOnce::builder(&fine).build())?;
    ensure!(
        found == ["group.id", "topics", "transactional.id"],
        "{found:?}"
    );
    Ok(())
}

/// The value librdkafka holds for `name` in the consumer's client configuration (not what
/// kafka-kit meant to set, what the client got); `None` when unset.
// rdkafka has no safe call that reads a client's configuration back: FFI, in this test only.
#[allow(unsafe_code)]
fn client_setting(consumer: &Consumer, name: &str) -> Option<String> {
    use kafka_kit::rdkafka::bindings as rd;
    use kafka_kit::rdkafka::consumer::Consumer as _;
    let name = std::ffi::CString::new(name).expect("no NUL in a property name");
    let mut value = vec![0u8; 1024];
    let mut size = value.len();
    let client = consumer.rdkafka().client();
    // SAFETY: `client` is alive for the whole block; `rd_kafka_conf` returns the configuration
    // the client owns (not to be freed), and `rd_kafka_conf_get` writes at most `size` bytes,
    // NUL-terminated, into `value`.
    let result = unsafe {
        let conf = rd::rd_kafka_conf(client.native_ptr());
        rd::rd_kafka_conf_get(
            conf,
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            &raw mut size,
        )
    };
    if result != rd::rd_kafka_conf_res_t::RD_KAFKA_CONF_OK {
        return None;
    }
    let value = std::ffi::CStr::from_bytes_until_nul(&value).ok()?;
    Some(value.to_str().ok()?.to_owned()).filter(|v| !v.is_empty())
}

/// By default the pipeline's consumer is a static member of its group, with the transactional id
/// as its `group.instance.id`: a restarted instance takes its old place at once instead of waiting
/// for the dead member's session (or, killed in a rebalance, `max.poll.interval.ms`).
/// `static_membership(false)` turns it off; a transactional id Kafka would refuse as an instance
/// id is reported at `build()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_membership_is_the_default_and_can_be_turned_off() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let id = common::unique_topic("static-id");
    let builder = || pipeline(&cluster, "static-in", "static-group", &id);

    let default = builder()?.build()?;
    let instance = client_setting(default.consumer(), "group.instance.id");
    ensure!(
        instance.as_deref() == Some(id.as_str()),
        "group.instance.id is {instance:?}, not the transactional id {id:?}"
    );
    // The setting reached a real client: the group id is read back the same way.
    ensure!(client_setting(default.consumer(), "group.id").as_deref() == Some("static-group"));
    drop(default);

    let dynamic = builder()?.static_membership(false).build()?;
    let instance = client_setting(dynamic.consumer(), "group.instance.id");
    ensure!(
        instance.is_none(),
        "opted out, yet group.instance.id is {instance:?}"
    );
    drop(dynamic);

    // A group.instance.id of the configuration's own wins over the transactional id...
    let config = cluster
        .consumer_config()
        .set("group.instance.id", "configured-instance")
        .build()?;
    let configured = ExactlyOnce::builder(&config)
        .group_id("static-group")
        .topics(["static-in"])
        .transactional_id(&id)
        .build()?;
    let instance = client_setting(configured.consumer(), "group.instance.id");
    ensure!(
        instance.as_deref() == Some("configured-instance"),
        "{instance:?}"
    );
    drop(configured);
    // ...and contradicts an opt-out.
    let refused = ExactlyOnce::builder(&config)
        .group_id("static-group")
        .topics(["static-in"])
        .transactional_id(&id)
        .static_membership(false)
        .build();
    ensure!(
        config_problems(refused)? == ["group.instance.id"],
        "static_membership(false) with a configured group.instance.id"
    );

    // Kafka's clients refuse instance ids outside a-z A-Z 0-9 . _ - (and longer than 249).
    for bad in ["points processor/0", &"x".repeat(250)] {
        let refused = pipeline(&cluster, "static-in", "static-group", bad)?.build();
        let message = match &refused {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        };
        ensure!(
            config_problems(refused)? == ["group.instance.id"],
            "transactional id {bad:?}"
        );
        ensure!(message.contains("static_membership(false)"), "{message}");
        // Without static membership the same id is fine.
        pipeline(&cluster, "static-in", "static-group", bad)?
            .static_membership(false)
            .build()?;
    }
    Ok(())
}

/// The properties of a refused build's problems, sorted; an error if it was not refused for its
/// configuration.
fn config_problems<T: std::fmt::Debug>(
    result: kafka_kit::Result<T>,
) -> anyhow::Result<Vec<String>> {
    match result {
        Ok(built) => bail!("built: {built:?}"),
        Err(Error::Config(e)) => {
            tracing::info!(error = %e, "refused");
            let mut properties: Vec<String> = e
                .problems()
                .iter()
                .map(|p| p.property().to_owned())
                .collect();
            properties.sort();
            Ok(properties)
        }
        Err(e) => bail!("not a configuration error: {e}"),
    }
}

/// Zero durations are configuration errors naming their setting, reported with the other
/// problems, before any client exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_durations_are_config_errors() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let builder = || pipeline(&cluster, "zero-in", "zero-group", "zero-id");
    let found = config_problems(builder()?.commit_every(100, Duration::ZERO).build())?;
    ensure!(found == ["commit_interval"], "{found:?}");
    let message = builder()?
        .commit_every(100, Duration::ZERO)
        .build()
        .err()
        .context("built")?
        .to_string();
    ensure!(
        message.contains("commit_interval") && message.contains("0s"),
        "{message}"
    );
    // All at once, with the other problems.
    let found = config_problems(
        builder()?
            .commit_every(0, Duration::ZERO)
            .init_timeout(Duration::ZERO)
            .transaction_timeout(Duration::ZERO)
            .build(),
    )?;
    ensure!(
        found
            == [
                "commit_interval",
                "init_timeout",
                "max_records",
                "transaction.timeout.ms"
            ],
        "{found:?}"
    );
    let config = cluster.config().build()?;
    let found = config_problems(
        TransactionalProducer::<()>::builder(&config, "zero-id")
            .operation_timeout(Duration::ZERO)
            .transaction_timeout(Duration::ZERO)
            .build(),
    )?;
    ensure!(
        found == ["operation_timeout", "transaction.timeout.ms"],
        "{found:?}"
    );
    Ok(())
}

/// `Duration::MAX` as a timeout or an interval anywhere in the transaction API panics nowhere:
/// librdkafka calls get no timeout, deadlines saturate, and a transaction timeout librdkafka
/// cannot take is a configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_max_never_panics() -> anyhow::Result<()> {
    const N: usize = 12;
    let cluster = cluster()?;
    let (input, output) = (
        common::unique_topic("max-in"),
        common::unique_topic("max-out"),
    );
    cluster.create_topic(&input, 2).await?;
    cluster.create_topic(&output, 2).await?;
    produce_inputs(&cluster, &input, 0..N, 2).await?;

    // The producer: every call with an unbounded timeout.
    let config = cluster.config().build()?;
    let producer: TransactionalProducer =
        TransactionalProducer::builder(&config, common::unique_topic("max-id"))
            .operation_timeout(Duration::MAX)
            .producer(|p| p.queue_full_timeout(Duration::MAX))
            .build()?;
    producer.init(Duration::MAX).await?;
    producer.begin()?;
    producer
        .send(
            kafka_kit::producer::Record::to(&output)
                .key("k")
                .payload("aborted"),
        )
        .await?;
    producer.abort().await?;
    producer.begin()?;
    producer
        .send(
            kafka_kit::producer::Record::to(&output)
                .key("k")
                .payload("committed"),
        )
        .await?;
    producer.commit().await?;

    // The pipeline: transactions close by count only; the shutdown commits the rest.
    let eos = pipeline(
        &cluster,
        &input,
        &common::unique_topic("max-group"),
        &common::unique_topic("max-id"),
    )?
    .commit_every(5, Duration::MAX)
    .init_timeout(Duration::MAX)
    .retry(RetryPolicy::attempts(3).max_backoff(Duration::MAX))
    .build()?;
    let progress = eos.progress();
    let transformed = Arc::new(AtomicUsize::new(0));
    let transform = {
        let (transformed, output) = (transformed.clone(), output.clone());
        move |record: Arc<ConsumerRecord>| {
            transformed.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok::<_, String>(outputs_of(&record, &output, 1)))
        }
    };
    let shutdown = {
        let transformed = transformed.clone();
        async move {
            while transformed.load(Ordering::SeqCst) < N {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let stats = tokio::time::timeout(RUN_TIMEOUT, eos.run(transform, shutdown))
        .await
        .with_context(|| format!("not done: {:?}", progress.snapshot()))??;
    ensure!(
        stats.records_in == N as u64 && stats.records_out == N as u64,
        "{stats:?}"
    );

    // librdkafka takes transaction.timeout.ms up to i32::MAX: refused, by name.
    let found = config_problems(
        TransactionalProducer::<()>::builder(&config, "max-id")
            .transaction_timeout(Duration::MAX)
            .build(),
    )?;
    ensure!(found == ["transaction.timeout.ms"], "{found:?}");
    let found = config_problems(
        pipeline(&cluster, &input, "max-group", "max-id")?
            .transaction_timeout(Duration::MAX)
            .build(),
    )?;
    ensure!(found == ["transaction.timeout.ms"], "{found:?}");
    Ok(())
}

/// The read-back helper goes on after consumer errors that are not fatal: two of the embedded
/// cluster's three brokers are down for the read's first two seconds (the consumer reports
/// BrokerTransportFailure, then reconnects), and every record is still read. The helper used to
/// stop at the first such error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_back_goes_on_after_non_fatal_errors() -> anyhow::Result<()> {
    let cluster = cluster()?;
    let Some(mock) = cluster.mock() else {
        skip_without_mock("read_back_goes_on_after_non_fatal_errors");
        return Ok(());
    };
    let topic = common::unique_topic("readback");
    cluster.create_topic(&topic, 3).await?;
    produce_inputs(&cluster, &topic, 0..9, 3).await?;
    for broker in 1..=2 {
        mock.with_mock(move |m| m.broker_down(broker))??;
    }
    let up = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        for broker in 1..=2 {
            mock.with_mock(move |m| m.broker_up(broker))??;
        }
        anyhow::Ok(())
    };
    let (read, up) = tokio::join!(
        read_until(
            &cluster,
            &topic,
            Isolation::ReadUncommitted,
            Duration::from_secs(30),
            Duration::ZERO,
            |p| p.len() >= 9,
        ),
        up
    );
    up?;
    let read = read?;
    ensure!(read.len() == 9, "{read:?}");
    Ok(())
}
