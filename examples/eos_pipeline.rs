//! Exactly-once across a real crash: a pipeline process killed with SIGKILL mid-transaction and
//! restarted, the restart timed, then a `read_committed` count showing one output per input.
//!
//! 1. `N` inputs are produced to `inputs`.
//! 2. Worker A, a child process (this example run again, with `EOS_PIPELINE_WORKER=A`), runs an
//!    [`ExactlyOnce`] pipeline `inputs` -> `processed` with transactional id X: a slow transform
//!    (50 ms per input) and a transaction per ten inputs. It prints a line after each commit.
//!    After 25 inputs it freezes inside its third transaction, whose outputs are already sent,
//!    and the parent kills it with SIGKILL (`Child::kill`): no commit, no abort, no leaving the
//!    group, nothing of a graceful shutdown.
//! 3. Worker B, a new process with the same group and the same transactional id X, starts at
//!    once. Its `init_transactions` fences A and aborts the transaction A left open; its consumer
//!    joins with A's `group.instance.id` (static membership: `ExactlyOnce` uses the
//!    transactional id), takes A's place and resumes from the offsets A's committed
//!    transactions committed. The parent prints how long B took from its start until it had
//!    partitions (its first input) and until its first commit.
//! 4. `processed` is read with `read_uncommitted` (A's aborted outputs are there) and with
//!    `read_committed` (they are not): exactly one output per input, none missing. On a real
//!    broker the example fails (exit code 1) unless that holds.
//!
//! ```text
//! cargo run --example eos_pipeline
//! KAFKA_BOOTSTRAP_SERVERS=localhost:9092 cargo run --example eos_pipeline
//! ```
//!
//! The workers get the cluster through `KAFKA_BOOTSTRAP_SERVERS`: the one you set, or the
//! embedded cluster's own TCP listeners. They use `session.timeout.ms=6000` (the least a real
//! broker accepts by default) so that the mock's waits stay short.
//!
//! Only a real broker shows exactly-once and the fast restart. The embedded broker (librdkafka's
//! mock cluster) runs the same calls, but keeps aborted records visible, ignores
//! `read_committed`, does not fence an older producer with the same transactional id, and drops
//! the offsets sent in transactions: B then starts over from the group's committed offsets
//! (none) and processes every input again. Its group coordinator also finds members by member id
//! only (`rd_kafka_mock_cgrp_classic_member_add`, librdkafka 2.12), so B cannot take A's place
//! there: it waits for A's session to time out. The example prints what the mock shows, labelled
//! as such.
//!
//! A worker never outlives the parent: the parent kills it on every way out (`kill_on_drop`),
//! and a worker whose stdin closes (the parent is gone, or asks it to stop) shuts down, and exits
//! at the latest 15 s later.

use std::collections::{BTreeSet, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{bail, Context as _};
use kafka_kit::config::{KafkaConfig, BOOTSTRAP_ENV};
use kafka_kit::consumer::{group_lag, Consumer, ConsumerRecord, Isolation, OffsetReset};
use kafka_kit::producer::{OwnedRecord, Producer, Record};
use kafka_kit::testing::TestCluster;
use kafka_kit::transaction::{ExactlyOnce, ExactlyOnceStats, Progress};
use kafka_kit::Error;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::Instant;

/// Inputs produced.
const N: usize = 60;
const PARTITIONS: i32 = 3;
/// A commits a transaction every this many inputs.
const BATCH: usize = 10;
/// A freezes (and is killed) once it has transformed this many inputs: two transactions
/// committed, and the outputs of five more sent in an open one.
const CRASH_AFTER: usize = 25;
/// The workers' `session.timeout.ms`: the least a real broker accepts by default
/// (`group.min.session.timeout.ms`), and short enough for the mock's rebalances.
const SESSION_TIMEOUT_MS: u64 = 6_000;

/// Set in a worker's environment: its name. Its absence makes this process the parent.
const WORKER_ENV: &str = "EOS_PIPELINE_WORKER";

#[derive(Debug, Serialize, Deserialize)]
struct Input {
    n: usize,
}

#[derive(Debug, Serialize, Deserialize)]
struct Output {
    n: usize,
    square: usize,
    /// The worker that wrote it: A or B.
    by: String,
}

const MOCK_CAVEAT: &str = "the embedded mock cluster cannot show exactly-once: it keeps aborted \
records visible, ignores read_committed, does not fence an older producer with the same \
transactional id, and drops the offsets sent in transactions, so the restarted worker starts \
over from the group's committed offsets (none here)";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Logs go to stderr: a worker's stdout carries its progress lines to the parent.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match std::env::var(WORKER_ENV) {
        Ok(name) => worker(&name).await,
        Err(_) => parent().await,
    }
}

// ---------------------------------------------------------------------------------------------
// The parent: a cluster, the inputs, two workers, the read-back.
// ---------------------------------------------------------------------------------------------

async fn parent() -> anyhow::Result<()> {
    let cluster = TestCluster::from_env_or_embedded()?;
    let embedded = cluster.is_embedded();
    println!("cluster: {}", cluster.describe());
    if embedded {
        println!(
            "\nNOTE: {MOCK_CAVEAT}. The counts below are what the mock shows, not a proof: run \
             against a real broker (KAFKA_BOOTSTRAP_SERVERS) for that."
        );
    }
    // On a real cluster, which keeps topics, groups and transactional ids, names of this run's
    // own; the embedded cluster is new at every run.
    let suffix = if embedded {
        String::new()
    } else {
        format!("-{}", kafka_kit::testing::run_id())
    };
    let job = Job {
        bootstrap: cluster.bootstrap_servers().to_owned(),
        input: format!("inputs{suffix}"),
        output: format!("processed{suffix}"),
        group: format!("eos-pipeline{suffix}"),
        transactional_id: format!("eos-pipeline-0{suffix}"),
    };
    cluster.create_topic(&job.input, PARTITIONS).await?;
    cluster.create_topic(&job.output, PARTITIONS).await?;

    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    for n in 0..N {
        let key = format!("key-{}", n % 12);
        producer
            .send_json(Record::to(&job.input).key(&key), &Input { n })
            .await?;
    }
    producer.close().await?;
    println!(
        "\nproduced {N} inputs to `{}` ({PARTITIONS} partitions)",
        job.input
    );

    // Worker A: slow, a transaction per ten inputs (the interval is never reached), frozen
    // after 25 inputs.
    println!(
        "\nworker A (transactional id and group.instance.id `{}`, group `{}`): 50 ms \
         per input, a transaction per {BATCH} inputs; it freezes after {CRASH_AFTER} inputs, \
         with a transaction open",
        job.transactional_id, job.group
    );
    let mut a = Worker::spawn(
        "A",
        &job,
        &[
            ("EOS_PIPELINE_DELAY_MS", "50".into()),
            ("EOS_PIPELINE_BATCH", BATCH.to_string()),
            ("EOS_PIPELINE_INTERVAL_MS", "1500".into()),
            ("EOS_PIPELINE_FREEZE_AFTER", CRASH_AFTER.to_string()),
        ],
    )?;
    a.wait_for("its freeze", Duration::from_secs(60), |line| {
        line.tag == "frozen"
    })
    .await?;
    // Let A's producer deliver the open transaction's outputs (they are sent as they come, and
    // only a commit would make them visible to read_committed readers); A is frozen in its
    // transform, so nothing commits meanwhile.
    a.echo_for(Duration::from_millis(500)).await?;
    let at_kill = a.last_progress();
    let status = a.kill().await?;
    let killed = Instant::now();
    println!(
        "  A killed ({status}): {} transactions committed ({} inputs), the outputs of {} more \
         inputs sent in a transaction left open",
        at_kill.transactions_committed,
        at_kill.records_in,
        CRASH_AFTER as u64 - at_kill.records_in,
    );

    // Where B will start: the group's committed offsets, as A's transactions left them.
    let config = cluster.config().build()?;
    let lag = group_lag(&config, &job.group, &[job.input.as_str()]).await?;
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
        "\ngroup `{}` committed offsets now: {} ({remaining} inputs left to process){}",
        job.group,
        committed.join(" "),
        if embedded {
            "\n  (the mock dropped the offsets of A's committed transactions)"
        } else {
            ""
        }
    );

    // Worker B, at once: same group, same transactional id (so the same group.instance.id);
    // the default 100 ms transactions.
    println!(
        "\nworker B (transactional id and group.instance.id `{}` again, group `{}`): its init \
         fences A and aborts A's open transaction{}",
        job.transactional_id,
        job.group,
        if embedded {
            " (on a real broker: the mock does neither)"
        } else {
            ""
        }
    );
    let mut b = Worker::spawn(
        "B",
        &job,
        &[
            ("EOS_PIPELINE_BATCH", "1000".into()),
            ("EOS_PIPELINE_INTERVAL_MS", "100".into()),
        ],
    )?;
    println!("  B started {:.1?} after A's kill", killed.elapsed());
    let first_input = b
        .wait_for("its first input", Duration::from_secs(90), |line| {
            line.tag == "input"
        })
        .await?
        .at;
    let first_commit = b
        .wait_for("its first commit", Duration::from_secs(90), |line| {
            line.tag == "progress" && line.number("transactions_committed") >= 1
        })
        .await?
        .at;
    b.wait_for(
        "the remaining inputs to commit",
        Duration::from_secs(90),
        |line| line.tag == "progress" && line.number("records_in") as i64 >= remaining,
    )
    .await?;
    let b_stats = b.stop().await?;
    let starts: Vec<String> = b
        .seen
        .iter()
        .filter(|line| line.tag == "input")
        .map(|line| format!("[{}]@{}", line.number("partition"), line.number("offset")))
        .collect();
    println!("  B started reading at {}", starts.join(" "));
    print_stats("B", &b_stats);

    println!("\nrestart time, from B's start (right after A's kill):");
    println!("  B had partitions (its first input):   {first_input:>6.1?}");
    println!("  B committed its first transaction:    {first_commit:>6.1?}");
    let session = Duration::from_millis(SESSION_TIMEOUT_MS);
    if embedded {
        println!(
            "  That wait is the mock's: its group coordinator finds members by member id only \
             (rd_kafka_mock_cgrp_classic_member_add, librdkafka 2.12), so B's group.instance.id \
             does not give it A's place. B joins as a new member, and the mock holds the \
             rebalance for session.timeout.ms less a second ({:.0?} here) waiting for A to \
             rejoin, while A's session runs out. On a real broker (Kafka 2.3+) B takes A's \
             place at once. Without static membership a real broker makes B wait for A's \
             session to time out ({session:.0?} here, 45 s by default), or, had A been killed \
             during a rebalance, up to max.poll.interval.ms (300 s by default).",
            session.saturating_sub(Duration::from_secs(1))
        );
    } else if first_input < session {
        println!(
            "  under A's session timeout ({session:.0?}): B took A's place in the group with \
             A's group.instance.id, without waiting for A's session to run out"
        );
    } else {
        println!(
            "  not under A's session timeout ({session:.0?}): the group waited for A's session \
             to run out instead of giving B A's place (static membership needs Kafka 2.3+)"
        );
    }

    // What readers of `processed` see.
    let everything = read_all(&config, &cluster, &job.output, Isolation::ReadUncommitted).await?;
    let committed = read_all(&config, &cluster, &job.output, Isolation::ReadCommitted).await?;
    println!("\nreading `{}` from the start:", job.output);
    println!(
        "  read_uncommitted: {} records ({})",
        everything.len(),
        by_worker(&everything)
    );
    let label = if embedded {
        "read_committed, as the mock serves it (it ignores the isolation level)"
    } else {
        "read_committed"
    };
    println!(
        "  {label}: {} records ({})",
        committed.len(),
        by_worker(&committed)
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
        if embedded { "what the mock shows: " } else { "" },
        committed.len()
    );

    if embedded {
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
        println!("exactly one committed output per input, across a SIGKILL and a restart");
    }
    Ok(())
}

/// What both workers work on.
struct Job {
    bootstrap: String,
    input: String,
    output: String,
    group: String,
    transactional_id: String,
}

/// A line a worker printed: a tag, then `key=value` fields.
struct Line {
    tag: String,
    fields: HashMap<String, String>,
    /// When it was read, from the worker's start.
    at: Duration,
}

impl Line {
    fn parse(text: &str, at: Duration) -> Line {
        let mut words = text.split_whitespace();
        let tag = words.next().unwrap_or_default().to_owned();
        let fields = words
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Line { tag, fields, at }
    }

    fn number(&self, key: &str) -> u64 {
        self.fields
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

/// A worker process. Dropping it kills the process (SIGKILL), on every way out of the parent.
struct Worker {
    name: &'static str,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    started: Instant,
    /// Every line read so far.
    seen: Vec<Line>,
}

impl Worker {
    fn spawn(name: &'static str, job: &Job, settings: &[(&str, String)]) -> anyhow::Result<Worker> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .env(WORKER_ENV, name)
            .env(BOOTSTRAP_ENV, &job.bootstrap)
            .env("EOS_PIPELINE_INPUT", &job.input)
            .env("EOS_PIPELINE_OUTPUT", &job.output)
            .env("EOS_PIPELINE_GROUP", &job.group)
            .env("EOS_PIPELINE_TRANSACTIONAL_ID", &job.transactional_id)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (key, value) in settings {
            command.env(key, value);
        }
        let started = Instant::now();
        let mut child = command
            .spawn()
            .with_context(|| format!("could not start worker {name}"))?;
        let stdout = child.stdout.take().context("the worker's stdout")?;
        println!("  {name}: process {} started", child.id().unwrap_or(0));
        Ok(Worker {
            name,
            child,
            lines: BufReader::new(stdout).lines(),
            started,
            seen: Vec::new(),
        })
    }

    /// The first line the worker printed that satisfies `wanted`: one already read, or else
    /// the next one to, reading (and showing) its lines for at most `timeout`.
    async fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut wanted: impl FnMut(&Line) -> bool,
    ) -> anyhow::Result<&Line> {
        if let Some(i) = self.seen.iter().position(&mut wanted) {
            return Ok(&self.seen[i]);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .with_context(|| {
                    format!("worker {} did not get to {what} in {timeout:?}", self.name)
                })?
                .context("reading the worker's output")?;
            let Some(text) = line else {
                let status = self.child.wait().await?;
                bail!("worker {} ended ({status}) before {what}", self.name);
            };
            let line = self.show(&text);
            if line.tag == "error" {
                bail!("worker {} failed: {text}", self.name);
            }
            if wanted(line) {
                return Ok(self.seen.last().expect("just seen"));
            }
        }
    }

    /// Reads (and shows) the worker's lines for `duration`.
    async fn echo_for(&mut self, duration: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + duration;
        while let Ok(line) = tokio::time::timeout_at(deadline, self.lines.next_line()).await {
            match line? {
                Some(text) => {
                    self.show(&text);
                }
                None => break,
            }
        }
        Ok(())
    }

    fn show(&mut self, text: &str) -> &Line {
        let at = self.started.elapsed();
        println!("    {} {:>6.1?} | {text}", self.name, at);
        self.seen.push(Line::parse(text, at));
        self.seen.last().expect("just pushed")
    }

    /// The counts of the last progress line.
    fn last_progress(&self) -> ExactlyOnceStats {
        stats_of(self.seen.iter().rev().find(|l| l.tag == "progress"))
    }

    /// SIGKILL (on Unix; `TerminateProcess` on Windows), and the way the process ended.
    async fn kill(mut self) -> anyhow::Result<String> {
        self.child.kill().await?;
        let status = self.child.wait().await?;
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt as _;
            if let Some(signal) = status.signal() {
                return Ok(format!("process ended by signal {signal}, SIGKILL"));
            }
        }
        Ok(status.to_string())
    }

    /// Closes the worker's stdin, which asks it to stop (committing its open transaction), and
    /// waits for its final counts.
    async fn stop(&mut self) -> anyhow::Result<ExactlyOnceStats> {
        drop(self.child.stdin.take());
        self.wait_for("its stop", Duration::from_secs(30), |line| {
            line.tag == "stopped"
        })
        .await?;
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .context("the worker did not exit 20 s after it stopped")??;
        anyhow::ensure!(
            status.success(),
            "worker {} exited with {status}",
            self.name
        );
        Ok(stats_of(
            self.seen.iter().rev().find(|l| l.tag == "stopped"),
        ))
    }
}

/// The counts a worker printed on `line` (`ExactlyOnceStats` is `#[non_exhaustive]`: filled in
/// field by field).
fn stats_of(line: Option<&Line>) -> ExactlyOnceStats {
    let get = |key| line.map_or(0, |l| l.number(key));
    let mut stats = ExactlyOnceStats::default();
    stats.transactions_committed = get("transactions_committed");
    stats.transactions_aborted = get("transactions_aborted");
    stats.records_in = get("records_in");
    stats.records_out = get("records_out");
    stats
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

fn by_worker(outputs: &[Output]) -> String {
    let a = outputs.iter().filter(|o| o.by == "A").count();
    format!("{a} by A, {} by B", outputs.len() - a)
}

/// Reads `topic` from the start of every partition, outside any group, with `isolation`, until
/// at least `N` records have arrived and no more come for a second, or 30 s have passed. A
/// consumer error that is not fatal (say, GROUP_ID_NOT_FOUND for the reader's new group from
/// some brokers) is shown and skipped.
async fn read_all(
    config: &KafkaConfig,
    cluster: &TestCluster,
    topic: &str,
    isolation: Isolation,
) -> anyhow::Result<Vec<Output>> {
    let mut consumer = Consumer::builder(config)
        .assign(topic, 0..cluster.partition_count(topic).await?)
        .offset_reset(OffsetReset::Earliest)
        .isolation(isolation)
        .build()?;
    let mut outputs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let wait = if outputs.len() >= N {
            Duration::from_secs(1)
        } else {
            deadline.saturating_duration_since(Instant::now())
        };
        match tokio::time::timeout(wait, consumer.recv()).await {
            Ok(Some(Ok(record))) => outputs.push(record.json()?),
            Ok(Some(Err(e))) if e.is_fatal() || matches!(e, Error::Panicked { .. }) => {
                return Err(e.into())
            }
            Ok(Some(Err(e))) => println!("  (reading `{topic}`: {e}; going on)"),
            Ok(None) | Err(_) => break,
        }
    }
    consumer.close().await?;
    Ok(outputs)
}

// ---------------------------------------------------------------------------------------------
// A worker: one ExactlyOnce pipeline, reporting on stdout.
// ---------------------------------------------------------------------------------------------

/// Runs the pipeline, printing `progress` after each commit or abort, `input` at the first input
/// of each partition, `frozen` when it freezes, `stopped` at the end and `error` on failure.
async fn worker(name: &str) -> anyhow::Result<()> {
    let result = run_worker(name).await;
    if let Err(e) = &result {
        println!("error {e:#}");
    }
    result
}

async fn run_worker(name: &str) -> anyhow::Result<()> {
    let var = |key: &str| std::env::var(key).with_context(|| format!("{key} is not set"));
    let number = |key: &str| -> anyhow::Result<Option<u64>> {
        std::env::var(key)
            .ok()
            .map(|v| v.parse().with_context(|| format!("{key}={v}")))
            .transpose()
    };
    let output = var("EOS_PIPELINE_OUTPUT")?;
    let delay = Duration::from_millis(number("EOS_PIPELINE_DELAY_MS")?.unwrap_or(0));
    let freeze_after = number("EOS_PIPELINE_FREEZE_AFTER")?.map(|n| n as usize);
    let config = TestCluster::external(var(BOOTSTRAP_ENV)?)
        .config()
        .set("session.timeout.ms", SESSION_TIMEOUT_MS.to_string())
        .set("heartbeat.interval.ms", "1000")
        .build()?;
    // Static membership is ExactlyOnce's default: the transactional id is the consumer's
    // group.instance.id too.
    let eos = ExactlyOnce::builder(&config)
        .group_id(var("EOS_PIPELINE_GROUP")?)
        .topics([var("EOS_PIPELINE_INPUT")?])
        .transactional_id(var("EOS_PIPELINE_TRANSACTIONAL_ID")?)
        .consumer(|c| c.offset_reset(OffsetReset::Earliest))
        .commit_every(
            number("EOS_PIPELINE_BATCH")?.unwrap_or(1000) as usize,
            Duration::from_millis(number("EOS_PIPELINE_INTERVAL_MS")?.unwrap_or(100)),
        )
        .build()?;
    tokio::spawn(report(eos.progress()));

    let transformed = Arc::new(AtomicUsize::new(0));
    let first_seen: Arc<Mutex<BTreeSet<i32>>> = Arc::default();
    let by = name.to_owned();
    let transform = move |record: Arc<ConsumerRecord>| {
        let n = transformed.fetch_add(1, Ordering::SeqCst) + 1;
        let first = first_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(record.partition());
        if first {
            println!(
                "input partition={} offset={}",
                record.partition(),
                record.offset()
            );
        }
        let freeze = freeze_after.is_some_and(|after| n > after);
        if freeze && Some(n - 1) == freeze_after {
            println!("frozen transformed={}", n - 1);
        }
        let (output, by) = (output.clone(), by.clone());
        async move {
            if freeze {
                // Frozen with a transaction open, until the parent kills the process.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(delay).await;
            transform(&record, &output, &by)
        }
    };
    let stats = eos.run(transform, stdin_closed()).await?;
    println!("stopped {}", fields(&stats));
    Ok(())
}

/// The transform: deterministic, so that a re-run after an abort gives the same output (the
/// worker's name aside, there for the demo).
fn transform(record: &ConsumerRecord, output: &str, by: &str) -> anyhow::Result<Vec<OwnedRecord>> {
    let Input { n } = record.json()?;
    let out = Output {
        n,
        square: n * n,
        by: by.into(),
    };
    Ok(vec![OwnedRecord::to(output)
        .key(record.key().unwrap_or_default())
        .json(&out)?])
}

/// Prints a `progress` line after each commit and abort.
async fn report(progress: Progress) {
    let mut last = progress.snapshot();
    loop {
        let before = (last.transactions_committed, last.transactions_aborted);
        last = progress
            .wait_for(|now| (now.transactions_committed, now.transactions_aborted) != before)
            .await;
        println!("progress {}", fields(&last));
    }
}

fn fields(stats: &ExactlyOnceStats) -> String {
    format!(
        "transactions_committed={} transactions_aborted={} records_in={} records_out={}",
        stats.transactions_committed,
        stats.transactions_aborted,
        stats.records_in,
        stats.records_out
    )
}

/// Completes when stdin closes: the parent asks the worker to stop, or is gone. A worker that
/// has not exited 15 s later (frozen in its transform, say) exits anyway: it never outlives its
/// parent for long.
fn stdin_closed() -> impl std::future::Future<Output = ()> {
    let (closed, on_close) = tokio::sync::oneshot::channel::<()>();
    // A thread of its own: a blocking read on the runtime would hold up its shutdown.
    // A watchdog in a worker process (not library code), on a thread of its own: sleeping and
    // exiting is its job.
    #[allow(clippy::disallowed_methods)]
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
        let _ = closed.send(());
        std::thread::sleep(Duration::from_secs(15));
        std::process::exit(3);
    });
    async move {
        let _ = on_close.await;
    }
}
