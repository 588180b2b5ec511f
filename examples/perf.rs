//! A throughput tool in the spirit of librdkafka's rdkafka_performance: kafka-kit against raw
//! rdkafka, same workload, same broker, one run.
//!
//! ```text
//! cargo run --release --example perf -- produce --mode callback --raw
//! cargo run --release --example perf -- produce --mode await --messages 200000 --size 100 --keys 1000
//! cargo run --release --example perf -- consume --raw
//! cargo run --release --example perf -- consume --messages 12000 --handler-ms 10 --concurrency 64
//! cargo run --release --example perf -- eos --messages 200000
//! cargo run --release --example perf -- produce --brokers localhost:9092 --preset reliable
//! ```
//!
//! Flags: `--mode await|callback|handler|fire` (produce; `handler` is the producer-wide
//! `on_delivery` handler with `send_to_handler`, `callback` a closure per message), `--brokers LIST` (default: the embedded broker,
//! or `KAFKA_BOOTSTRAP_SERVERS`), `--topic NAME`, `--messages N` (default 500000), `--size BYTES`
//! (default 100), `--partitions N` (default 6), `--keys N` (distinct keys, MD5-routed; 0 for
//! keyless; default 1000), `--preset reliable|ordered|throughput|fire-and-forget`,
//! `--partitioner md5|murmur2|consistent` (default md5), `--set property=value` (any librdkafka
//! property, for every client of the run; repeatable), `--raw` (also run raw rdkafka:
//! `BaseProducer` with no per-message state, the floor, and `ThreadedProducer` with a boxed
//! opaque for callback, handler and fire; `FutureProducer` for await; `BaseConsumer` for consume),
//! `--runs N` (repeat the comparison), `--also-partitioner NAME` (kafka-kit again with another
//! partitioner, in the same runs), `--raw-only` (the raw baselines alone, to profile them),
//! `--in-process-broker`.
//!
//! `consume --handler-ms MS` runs every record through `AtLeastOnce` with a handler that waits
//! `MS` (a database or HTTP call): once one record per partition at a time, once key-ordered
//! with `--concurrency N` (default 64), and prints the ratios.
//!
//! `eos` runs the exactly-once pipeline ([`ExactlyOnce`], default 100 ms commit interval) from one
//! topic to another, one output per input, after the same work done at least once (consumer,
//! outputs enqueued, and every 100 ms: wait for the deliveries, then commit the offsets), and
//! reports both. On the embedded broker transactions are acknowledged without being acted on:
//! run it on a real broker (`--brokers`) for figures that mean anything.
//!
//! It prints progress each second, then, per client, p50/p99/max delivery latency (await mode),
//! and at the end each client's `msgs_per_sec` and `cpu_us_per_msg` as min–max (median) over the
//! runs, with kafka-kit's ratio to each raw client run by run. CPU is the client process's own
//! (`getrusage`): the embedded broker runs in a child process (`perf broker`) unless
//! `--in-process-broker` is given. The clients take turns going first from one run to the next.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use futures::stream::{FuturesUnordered, StreamExt};
use kafka_kit::config::{KafkaConfig, Preset};
use kafka_kit::consumer::{Consumer, OffsetReset, StartAt};
use kafka_kit::partitioner::Partitioning;
use kafka_kit::producer::{OwnedRecord, Producer, Record};
use kafka_kit::rdkafka::consumer::{BaseConsumer, Consumer as _};
use kafka_kit::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use kafka_kit::rdkafka::message::{DeliveryResult, Message};
use kafka_kit::rdkafka::producer::{
    BaseRecord, FutureProducer, FutureRecord, Producer as _, ProducerContext, ThreadedProducer,
};
use kafka_kit::rdkafka::util::Timeout;
use kafka_kit::rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use kafka_kit::testing::{next_unless_fatal, run_id, unless_fatal, TestCluster};
use kafka_kit::transaction::ExactlyOnce;

#[derive(Clone, Debug)]
struct Args {
    command: String,
    mode: String,
    brokers: Option<String>,
    topic: Option<String>,
    messages: u64,
    size: usize,
    partitions: i32,
    keys: usize,
    preset: Option<Preset>,
    partitioner: Partitioning,
    raw: bool,
    /// Extra librdkafka properties for every client of the run.
    set: Vec<(String, String)>,
    /// `consume` through `AtLeastOnce` with a handler that waits this long per record.
    handler_ms: Option<u64>,
    /// The `AtLeastOnce` concurrency compared with per-partition processing.
    concurrency: usize,
    /// Runs of the whole comparison, alternating the clients; figures are reported as min–max.
    runs: usize,
    /// Serve the embedded broker from this process instead of a child process of its own.
    in_process_broker: bool,
    /// Also run kafka-kit's producer with this partitioner, in the same runs.
    also_partitioner: Option<Partitioning>,
    /// Run the raw baselines only (for profiling them alone).
    raw_only: bool,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        command: String::new(),
        mode: "callback".into(),
        brokers: None,
        topic: None,
        messages: 500_000,
        size: 100,
        partitions: 6,
        keys: 1000,
        preset: None,
        partitioner: Partitioning::Md5,
        raw: false,
        set: Vec::new(),
        handler_ms: None,
        concurrency: 64,
        runs: 1,
        in_process_broker: false,
        also_partitioner: None,
        raw_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "produce" | "consume" | "eos" | "broker" => args.command.clone_from(&arg),
            "--runs" => args.runs = value()?.parse::<usize>()?.max(1),
            "--in-process-broker" => args.in_process_broker = true,
            "--also-partitioner" => args.also_partitioner = Some(partitioner(&value()?)?),
            "--mode" => args.mode = value()?,
            "--brokers" => args.brokers = Some(value()?),
            "--topic" => args.topic = Some(value()?),
            "--messages" => args.messages = value()?.parse()?,
            "--size" => args.size = value()?.parse()?,
            "--partitions" => args.partitions = value()?.parse()?,
            "--keys" => args.keys = value()?.parse()?,
            "--raw" => args.raw = true,
            "--raw-only" => (args.raw, args.raw_only) = (true, true),
            "--handler-ms" => args.handler_ms = Some(value()?.parse()?),
            "--concurrency" => args.concurrency = value()?.parse()?,
            "--set" => {
                let setting = value()?;
                let (k, v) = setting
                    .split_once('=')
                    .context("--set takes property=value")?;
                args.set.push((k.to_owned(), v.to_owned()));
            }
            "--preset" => {
                args.preset = Some(match value()?.as_str() {
                    "reliable" => Preset::Reliable,
                    "ordered" => Preset::Ordered,
                    "throughput" => Preset::Throughput,
                    "fire-and-forget" => Preset::FireAndForget,
                    other => bail!("unknown preset {other}"),
                });
            }
            "--partitioner" => args.partitioner = partitioner(&value()?)?,
            other => bail!("unknown argument {other} (see the doc comment of examples/perf.rs)"),
        }
    }
    if !matches!(
        args.mode.as_str(),
        "await" | "callback" | "handler" | "fire"
    ) {
        bail!("--mode is await, callback, handler or fire");
    }
    Ok(args)
}

fn partitioner(name: &str) -> anyhow::Result<Partitioning> {
    Ok(match name {
        "md5" => Partitioning::Md5,
        "murmur2" => Partitioning::Murmur2Random,
        "consistent" => Partitioning::ConsistentRandom,
        other => bail!("unknown partitioner {other}"),
    })
}

/// The process's peak resident memory, in MiB.
fn max_rss_mib() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| u.max_rss() as f64 / 1024.0)
}

/// CPU time of the whole process so far (user + system).
fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage on this process");
    let time =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    time(usage.user_time()) + time(usage.system_time())
}

/// Measures one client's run.
struct Run {
    label: &'static str,
    started: Instant,
    cpu: Duration,
    done: Arc<AtomicU64>,
    progress: tokio::task::JoinHandle<()>,
}

impl Run {
    fn start(label: &'static str) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        let progress = {
            let done = done.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut last = 0;
                loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    let now = done.load(Ordering::Relaxed);
                    eprintln!(
                        "  [{label}] {:>5.1}s {now:>9} done, {:>9} msg/s",
                        started.elapsed().as_secs_f64(),
                        now - last
                    );
                    last = now;
                }
            })
        };
        Run {
            label,
            started: Instant::now(),
            cpu: cpu_time(),
            done,
            progress,
        }
    }

    fn finish(self, messages: u64, size: usize, latencies: Option<Vec<Duration>>) -> Figures {
        let wall = self.started.elapsed();
        let cpu = cpu_time().checked_sub(self.cpu).unwrap();
        self.progress.abort();
        let figures = Figures {
            msgs_per_sec: messages as f64 / wall.as_secs_f64(),
            mb_per_sec: (messages as f64 * size as f64) / wall.as_secs_f64() / 1e6,
            cpu_us_per_msg: cpu.as_secs_f64() * 1e6 / messages as f64,
        };
        if let Some(mut latencies) = latencies.filter(|l| !l.is_empty()) {
            latencies.sort();
            let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
            println!(
                "[{}] latency p50={:.2}ms p99={:.2}ms max={:.2}ms",
                self.label,
                at(0.5).as_secs_f64() * 1e3,
                at(0.99).as_secs_f64() * 1e3,
                latencies[latencies.len() - 1].as_secs_f64() * 1e3
            );
        }
        println!(
            "[{}] {} messages in {:.2}s",
            self.label,
            messages,
            wall.as_secs_f64()
        );
        figures
    }
}

struct Figures {
    msgs_per_sec: f64,
    mb_per_sec: f64,
    cpu_us_per_msg: f64,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "msgs_per_sec={:.0} mb_per_sec={:.2} cpu_us_per_msg={:.3}",
            self.msgs_per_sec, self.mb_per_sec, self.cpu_us_per_msg
        )
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = parse()?;
    if args.command == "broker" {
        return serve_broker();
    }
    let env_brokers = std::env::var("KAFKA_BOOTSTRAP_SERVERS").ok();
    let cluster = match (&args.brokers, env_brokers.as_ref()) {
        (Some(brokers), _) | (None, Some(brokers)) => TestCluster::external(brokers.clone()),
        (None, None) if args.in_process_broker => TestCluster::embedded(3)?,
        (None, None) => {
            // The embedded broker in a process of its own: the CPU measured is the client's.
            let child = ChildBroker::start()?;
            let cluster = TestCluster::external(child.bootstrap.clone());
            let _ = CHILD_BROKER.set(Mutex::new(child));
            cluster
        }
    };
    match CHILD_BROKER.get() {
        Some(_) => eprintln!(
            "cluster: the embedded broker (3 brokers) in a child process (`perf broker`) at {}",
            cluster.bootstrap_servers()
        ),
        None => eprintln!("cluster: {}", cluster.describe()),
    }
    let mut builder = cluster.config();
    if let Some(preset) = args.preset {
        builder = builder.preset(preset);
    }
    for (k, v) in &args.set {
        builder = builder.set(k, v);
    }
    let config = builder.build()?;
    let payload = vec![b'x'; args.size];
    let keys: Vec<String> = (0..args.keys).map(|i| format!("key-{i}")).collect();
    let topic = |who: &str| {
        args.topic
            .clone()
            .unwrap_or_else(|| format!("perf-{who}-{}", run_id()))
    };

    match args.command.as_str() {
        "produce" => {
            eprintln!(
                "produce: {} messages of {} bytes, {} keys, mode {}, {} run(s)",
                args.messages, args.size, args.keys, args.mode, args.runs
            );
            let settings = format!("client settings (every client of the run): {config:?}");
            let mut results = Results::default();
            for run in 1..=args.runs {
                eprintln!("--- run {run} of {}\n{settings}", args.runs);
                // The clients take turns going first: the broker holds every record sent so far,
                // and whatever that costs falls on each client alike.
                let mut clients: Vec<Option<RawKind>> =
                    if args.raw_only { vec![] } else { vec![None] };
                if args.raw {
                    clients.extend(RawKind::for_mode(&args.mode).iter().copied().map(Some));
                }
                let turn = (run - 1) % clients.len().max(1);
                clients.rotate_left(turn);
                for client in clients {
                    match client {
                        Some(kind) => {
                            let topic = topic(kind.slug());
                            create_topic(&cluster, &topic, args.partitions).await?;
                            let figures =
                                produce_raw(&args, kind, &config, &topic, &payload, &keys).await?;
                            results.add(kind.label(), figures);
                        }
                        None => {
                            let kit_topic = topic("kit");
                            create_topic(&cluster, &kit_topic, args.partitions).await?;
                            let kit =
                                produce_kit(&args, &config, &kit_topic, &payload, &keys).await?;
                            results.add(KIT, kit);
                            if let Some(other) = &args.also_partitioner {
                                let other_args = Args {
                                    partitioner: other.clone(),
                                    ..args.clone()
                                };
                                let other_topic = topic("kit-other");
                                create_topic(&cluster, &other_topic, args.partitions).await?;
                                let figures = produce_kit(
                                    &other_args,
                                    &config,
                                    &other_topic,
                                    &payload,
                                    &keys,
                                )
                                .await?;
                                results.add(&format!("kafka-kit, {other:?} partitioner"), figures);
                            }
                        }
                    }
                }
            }
            results.print();
        }
        "consume" if args.handler_ms.is_some() => {
            let topic = topic("process");
            fill(&args, &cluster, &config, &topic, &payload, &keys).await?;
            let handler_ms = args.handler_ms.unwrap_or_default();
            eprintln!(
                "consume: {} messages through AtLeastOnce, a {handler_ms} ms handler\n",
                args.messages
            );
            let per_partition = process(&args, &cluster, &topic, None).await?;
            let concurrent = process(&args, &cluster, &topic, Some(args.concurrency)).await?;
            println!(
                "\nconcurrency {} / per partition: throughput {:.1}x, cpu per message {:.2}x",
                args.concurrency,
                concurrent.msgs_per_sec / per_partition.msgs_per_sec,
                concurrent.cpu_us_per_msg / per_partition.cpu_us_per_msg
            );
            println!("{per_partition}\n{concurrent}");
        }
        "consume" => {
            let topic = topic("consume");
            fill(&args, &cluster, &config, &topic, &payload, &keys).await?;
            eprintln!("consume: {} messages, {} run(s)", args.messages, args.runs);
            let settings = format!(
                "client settings (both clients): {:?}",
                consumer_config(&args, &cluster)?
            );
            let mut results = Results::default();
            for run in 1..=args.runs {
                eprintln!("--- run {run} of {}\n{settings}", args.runs);
                // The clients take turns going first.
                if run % 2 == 0 && !args.raw_only {
                    results.add(KIT, consume_kit(&args, &cluster, &topic).await?);
                }
                if args.raw {
                    let raw = tokio::task::block_in_place(|| consume_raw(&args, &cluster, &topic))?;
                    results.add("raw BaseConsumer", raw);
                }
                if run % 2 == 1 && !args.raw_only {
                    results.add(KIT, consume_kit(&args, &cluster, &topic).await?);
                }
            }
            results.print();
        }
        "eos" => {
            if cluster.is_embedded() {
                eprintln!("note: the embedded broker acknowledges transactions without acting on them; use --brokers for real figures");
            }
            let input = topic("eos-in");
            fill(&args, &cluster, &config, &input, &payload, &keys).await?;
            eprintln!(
                "eos: {} messages, one output each, 100 ms commit interval\n",
                args.messages
            );
            let at_least_once =
                pipeline_at_least_once(&args, &cluster, &input, &topic("alo-out")).await?;
            let exactly_once =
                pipeline_exactly_once(&args, &cluster, &input, &topic("eos-out")).await?;
            println!(
                "\nexactly-once / at-least-once: throughput {:.3}, cpu per message {:.3}",
                exactly_once.msgs_per_sec / at_least_once.msgs_per_sec,
                exactly_once.cpu_us_per_msg / at_least_once.cpu_us_per_msg
            );
            println!("{exactly_once}");
        }
        _ => bail!(
            "usage: perf <produce|consume|eos> [flags] (see the doc comment of examples/perf.rs)"
        ),
    }
    println!("max_rss_mib={:.0}", max_rss_mib());
    Ok(())
}

/// kafka-kit's label in the results.
const KIT: &str = "kafka-kit";

/// Each client's figures, run after run.
#[derive(Default)]
struct Results(Vec<(String, Vec<Figures>)>);

impl Results {
    fn add(&mut self, label: &str, figures: Figures) {
        match self.0.iter_mut().find(|(l, _)| l == label) {
            Some((_, runs)) => runs.push(figures),
            None => self.0.push((label.to_owned(), vec![figures])),
        }
    }

    /// Each client's figures as min–max (median) over the runs, then kafka-kit's ratio to each
    /// other client, run by run, the same way.
    fn print(&self) {
        let range = |mut values: Vec<f64>, decimals: usize| {
            values.sort_by(f64::total_cmp);
            let (min, max) = (values[0], values[values.len() - 1]);
            let median = values[values.len() / 2];
            format!("{min:.decimals$}–{max:.decimals$} ({median:.decimals$})")
        };
        println!(
            "\nresults over {} run(s), min–max (median):",
            self.0.first().map_or(0, |r| r.1.len())
        );
        for (label, runs) in &self.0 {
            println!(
                "  {label:<40} msgs_per_sec={} cpu_us_per_msg={}",
                range(runs.iter().map(|f| f.msgs_per_sec).collect(), 0),
                range(runs.iter().map(|f| f.cpu_us_per_msg).collect(), 3),
            );
        }
        let Some((_, kit)) = self.0.iter().find(|(l, _)| l == KIT) else {
            return;
        };
        for (label, runs) in self.0.iter().filter(|(l, _)| l != KIT) {
            let pairs = || kit.iter().zip(runs);
            println!(
                "  kafka-kit / {label}: cpu per message {}, throughput {}",
                range(
                    pairs()
                        .map(|(k, r)| k.cpu_us_per_msg / r.cpu_us_per_msg)
                        .collect(),
                    3
                ),
                range(
                    pairs()
                        .map(|(k, r)| k.msgs_per_sec / r.msgs_per_sec)
                        .collect(),
                    3
                ),
            );
        }
    }
}

/// The broker child process of this run, when the embedded broker is served by one.
static CHILD_BROKER: std::sync::OnceLock<Mutex<ChildBroker>> = std::sync::OnceLock::new();

/// `perf broker`: serves the embedded broker (three brokers) from this process. Prints
/// `bootstrap=<servers>`, then answers each `create <topic> <partitions>` line on stdin with `ok`
/// or `error <reason>`, until stdin closes.
fn serve_broker() -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let broker = kafka_kit::testing::EmbeddedKafka::start(3)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "bootstrap={}", broker.bootstrap_servers())?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let reply = match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["create", topic, partitions] => match partitions.parse() {
                Ok(n) => match broker.create_topic(topic, n) {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("error {e}"),
                },
                Err(e) => format!("error {e}"),
            },
            _ => format!("error unknown command: {line}"),
        };
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    Ok(())
}

/// The embedded broker in a child process (`perf broker`), killed when the run ends.
struct ChildBroker {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    bootstrap: String,
}

impl ChildBroker {
    fn start() -> anyhow::Result<Self> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let mut child = Command::new(std::env::current_exe()?)
            .arg("broker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("could not start the broker process")?;
        let stdin = child.stdin.take().context("no stdin")?;
        let mut stdout = std::io::BufReader::new(child.stdout.take().context("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let bootstrap = line
            .trim()
            .strip_prefix("bootstrap=")
            .with_context(|| format!("the broker process said {line:?}"))?
            .to_owned();
        Ok(ChildBroker {
            child,
            stdin,
            stdout,
            bootstrap,
        })
    }

    fn create_topic(&mut self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        use std::io::{BufRead, Write};
        writeln!(self.stdin, "create {topic} {partitions}")?;
        self.stdin.flush()?;
        let mut reply = String::new();
        self.stdout.read_line(&mut reply)?;
        match reply.trim() {
            "ok" => Ok(()),
            other => bail!("the broker process could not create {topic}: {other}"),
        }
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a topic: through the broker process when there is one (the embedded broker has no
/// CreateTopics handler), else through the cluster.
async fn create_topic(cluster: &TestCluster, topic: &str, partitions: i32) -> anyhow::Result<()> {
    match CHILD_BROKER.get() {
        Some(child) => child
            .lock()
            .map_err(|_| anyhow::anyhow!("broker process lock poisoned"))?
            .create_topic(topic, partitions),
        None => Ok(cluster.create_topic(topic, partitions).await?),
    }
}

/// The configuration of the run's consumers: the cluster's consumer settings, and `--set`.
fn consumer_config(args: &Args, cluster: &TestCluster) -> anyhow::Result<KafkaConfig> {
    let mut builder = cluster.consumer_config();
    for (k, v) in &args.set {
        builder = builder.set(k, v);
    }
    Ok(builder.build()?)
}

/// Writes the input of a consume or eos run.
async fn fill(
    args: &Args,
    cluster: &TestCluster,
    config: &KafkaConfig,
    topic: &str,
    payload: &[u8],
    keys: &[String],
) -> anyhow::Result<()> {
    create_topic(cluster, topic, args.partitions).await?;
    eprintln!(
        "filling `{topic}` with {} messages of {} bytes…",
        args.messages, args.size
    );
    let filler: Producer = Producer::builder(config).build()?;
    for i in 0..args.messages {
        let mut record = Record::to(topic).payload(payload);
        if let Some(k) = key_of(keys, i) {
            record = record.key(k);
        }
        filler.send_and_forget(record).await?;
    }
    filler.close().await?;
    Ok(())
}

/// The at-least-once baseline of `eos`: the same transform, outputs awaited and offsets
/// committed every 100 ms (outputs first, so a crash repeats work but loses none).
async fn pipeline_at_least_once(
    args: &Args,
    cluster: &TestCluster,
    input: &str,
    output: &str,
) -> anyhow::Result<Figures> {
    use kafka_kit::rdkafka::consumer::CommitMode;
    create_topic(cluster, output, args.partitions).await?;
    let config = consumer_config(args, cluster)?;
    let mut consumer = Consumer::builder(&config)
        .group_id(format!("perf-alo-{}", run_id()))
        .topics([input])
        .offset_reset(OffsetReset::Earliest)
        .build()?;
    let producer: Producer = Producer::builder(&config)
        .partitioning(args.partitioning())
        .build()?;
    let run = Run::start("at-least-once pipeline");
    let mut deliveries = Vec::new();
    let mut last_commit = Instant::now();
    let mut count = 0;
    while count < args.messages {
        let record =
            tokio::time::timeout(Duration::from_secs(60), next_unless_fatal(&mut consumer))
                .await?
                .context("stream ended")??;
        let mut out = Record::to(output);
        if let Some(key) = record.key() {
            out = out.key(key);
        }
        if let Some(payload) = record.payload() {
            out = out.payload(payload);
        }
        deliveries.push(producer.enqueue(out).await?);
        consumer.mark_processed(&record);
        count += 1;
        if last_commit.elapsed() >= Duration::from_millis(100) || count == args.messages {
            for delivery in deliveries.drain(..) {
                delivery.await?;
            }
            consumer.commit_processed(CommitMode::Async).await?;
            run.done.store(count, Ordering::Relaxed);
            last_commit = Instant::now();
        }
    }
    consumer.commit_processed(CommitMode::Sync).await?;
    let figures = run.finish(args.messages, args.size, None);
    consumer.close().await?;
    Ok(figures)
}

/// `consume --handler-ms`: every record through `AtLeastOnce` with a handler that waits
/// `--handler-ms` (a database or HTTP call), one record per partition at a time
/// (`concurrency: None`) or key-ordered with that concurrency.
async fn process(
    args: &Args,
    cluster: &TestCluster,
    topic: &str,
    concurrency: Option<usize>,
) -> anyhow::Result<Figures> {
    use kafka_kit::consumer::processing::AtLeastOnce;
    let consumer = Consumer::builder(&consumer_config(args, cluster)?)
        .group_id(format!("perf-process-{}", run_id()))
        .topics([topic])
        .offset_reset(OffsetReset::Earliest)
        .build()?;
    // Measure the processing, not the group join.
    let joined = Instant::now();
    while consumer.assignment()?.is_empty() {
        anyhow::ensure!(
            joined.elapsed() < Duration::from_secs(60),
            "no partition assigned"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let looped = match concurrency {
        None => AtLeastOnce::new(consumer).parallel_partitions(true),
        Some(n) => AtLeastOnce::new(consumer).concurrency(n),
    };
    let label = match concurrency {
        None => "per partition",
        Some(_) => "key-ordered concurrency",
    };
    let wait = Duration::from_millis(args.handler_ms.unwrap_or_default());
    let all = args.messages;
    let finished = Arc::new(tokio::sync::Notify::new());
    let run = Run::start(label);
    let (done, last) = (run.done.clone(), finished.clone());
    let handler = move |_record| {
        let (done, last) = (done.clone(), last.clone());
        async move {
            tokio::time::sleep(wait).await;
            if done.fetch_add(1, Ordering::Relaxed) + 1 == all {
                last.notify_one();
            }
            anyhow::Ok(())
        }
    };
    looped
        .run(handler, async move { finished.notified().await })
        .await?;
    Ok(run.finish(args.messages, args.size, None))
}

/// The exactly-once pipeline of `eos`, until every input is committed.
async fn pipeline_exactly_once(
    args: &Args,
    cluster: &TestCluster,
    input: &str,
    output: &str,
) -> anyhow::Result<Figures> {
    create_topic(cluster, output, args.partitions).await?;
    let config = consumer_config(args, cluster)?;
    let partitioning = args.partitioning();
    let pipeline = ExactlyOnce::builder(&config)
        .group_id(format!("perf-eos-{}", run_id()))
        .topics([input])
        .transactional_id(format!("perf-eos-{}", run_id()))
        .consumer(|c| c.offset_reset(OffsetReset::Earliest))
        .producer(move |p| p.partitioning(partitioning))
        .build()?;
    let progress = pipeline.progress();
    let run = Run::start("exactly-once pipeline");
    let done = run.done.clone();
    let messages = args.messages;
    let all_committed = async move {
        progress
            .wait_for(|stats| {
                done.store(stats.records_in, Ordering::Relaxed);
                stats.records_in >= messages
            })
            .await
    };
    let output = output.to_owned();
    let stats = pipeline
        .run(
            move |record| {
                let mut out = OwnedRecord::to(output.as_str());
                out.key = record.key().map(<[u8]>::to_vec);
                out.payload = record.payload().map(<[u8]>::to_vec);
                std::future::ready(Ok::<_, std::convert::Infallible>(vec![out]))
            },
            all_committed,
        )
        .await?;
    let figures = run.finish(args.messages, args.size, None);
    println!(
        "[exactly-once pipeline] {} transactions committed, {} aborted",
        stats.transactions_committed, stats.transactions_aborted
    );
    Ok(figures)
}

async fn produce_kit(
    args: &Args,
    config: &KafkaConfig,
    topic: &str,
    payload: &[u8],
    keys: &[String],
) -> anyhow::Result<Figures> {
    let n = args.messages;
    match args.mode.as_str() {
        "fire" => {
            let producer: Producer = Producer::builder(config)
                .partitioning(args.partitioning())
                .build()?;
            let run = Run::start("kafka-kit fire");
            let done = run.done.clone();
            for i in 0..n {
                producer
                    .send_and_forget(record(topic, key_of(keys, i), payload))
                    .await?;
                done.store(producer.stats().delivered, Ordering::Relaxed);
            }
            producer.flush(Duration::from_secs(300)).await?;
            let failed = producer.stats().failed;
            anyhow::ensure!(failed == 0, "{failed} messages failed");
            Ok(run.finish(n, args.size, None))
        }
        "handler" => {
            let run = Run::start("kafka-kit handler");
            let failed = Arc::new(AtomicU64::new(0));
            let producer: Producer<u64> = Producer::builder(config)
                .partitioning(args.partitioning())
                .on_delivery({
                    let (done, failed) = (run.done.clone(), failed.clone());
                    move |result| {
                        if let Ok(delivered) = &result {
                            std::hint::black_box(delivered.context);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .build()?;
            for i in 0..n {
                producer
                    .send_to_handler(record(topic, key_of(keys, i), payload).context(i))
                    .await
                    .map_err(kafka_kit::Error::from)?;
            }
            producer.flush(Duration::from_secs(300)).await?;
            none_failed(&failed, "kafka-kit")?;
            Ok(run.finish(n, args.size, None))
        }
        "callback" => {
            let producer: Producer<u64> = Producer::builder(config)
                .partitioning(args.partitioning())
                .build()?;
            let run = Run::start("kafka-kit callback");
            let failed = Arc::new(AtomicU64::new(0));
            for i in 0..n {
                let (done, failed) = (run.done.clone(), failed.clone());
                producer
                    .send_with_callback(
                        record(topic, key_of(keys, i), payload).context(i),
                        move |result| {
                            if result.is_err() {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                            done.fetch_add(1, Ordering::Relaxed);
                        },
                    )
                    .await
                    .map_err(kafka_kit::Error::from)?;
            }
            producer.flush(Duration::from_secs(300)).await?;
            none_failed(&failed, "kafka-kit")?;
            Ok(run.finish(n, args.size, None))
        }
        _ => {
            let producer: Producer<Instant> = Producer::builder(config)
                .partitioning(args.partitioning())
                .build()?;
            let run = Run::start("kafka-kit await");
            let mut latencies = Vec::with_capacity(n as usize);
            let mut in_flight = FuturesUnordered::new();
            for i in 0..n {
                if in_flight.len() >= WINDOW {
                    let report: kafka_kit::producer::DeliveryReport<Instant> =
                        in_flight.next().await.context("no future")??;
                    latencies.push(report.context.elapsed());
                    run.done.fetch_add(1, Ordering::Relaxed);
                }
                in_flight.push(
                    producer
                        .enqueue(record(topic, key_of(keys, i), payload).context(Instant::now()))
                        .await
                        .map_err(kafka_kit::Error::from)?,
                );
            }
            while let Some(report) = in_flight.next().await {
                latencies.push(report.map_err(kafka_kit::Error::from)?.context.elapsed());
                run.done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(run.finish(n, args.size, Some(latencies)))
        }
    }
}

/// Fails the run if any of its messages failed.
fn none_failed(failed: &AtomicU64, client: &str) -> anyhow::Result<()> {
    let failed = failed.load(Ordering::Relaxed);
    anyhow::ensure!(failed == 0, "{client}: {failed} messages failed");
    Ok(())
}

/// A raw `FutureProducer` delivery: when it was sent, and how it ended.
type RawDelivery =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Instant, Result<(), KafkaError>)> + Send>>;

/// Futures in flight at once in await mode (both clients).
const WINDOW: usize = 50_000;

/// Message `i`'s key: the keys in turn, or none.
fn key_of(keys: &[String], i: u64) -> Option<&[u8]> {
    (!keys.is_empty()).then(|| keys[i as usize % keys.len()].as_bytes())
}

fn record<'a>(topic: &'a str, key: Option<&'a [u8]>, payload: &'a [u8]) -> Record<'a> {
    let record = Record::to(topic).payload(payload);
    match key {
        Some(k) => record.key(k),
        None => record,
    }
}

impl Args {
    fn partitioning(&self) -> Partitioning {
        self.partitioner.clone()
    }

    /// The raw client's configuration: the same properties, and librdkafka's partitioner that
    /// matches `--partitioner` (raw rdkafka has no MD5: it uses the built-in default there).
    fn raw_config(&self, config: &KafkaConfig) -> ClientConfig {
        let mut raw = config.to_client_config();
        if let Some(name) = self.partitioner.librdkafka_name() {
            raw.set("partitioner", name);
        }
        raw
    }
}

/// Raw rdkafka's per-message callback: a context whose opaque is the message's own context.
struct Counting {
    done: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, context: Box<u64>) {
        std::hint::black_box(context);
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        self.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// A raw rdkafka baseline.
#[derive(Clone, Copy, Debug)]
enum RawKind {
    /// `BaseProducer` with no per-message state, polled inline: the floor.
    Floor,
    /// `ThreadedProducer` with a boxed opaque per message and a counting delivery callback.
    ThreadedOpaque,
    /// `FutureProducer`, each delivery awaited.
    Future,
}

impl RawKind {
    /// The baselines of a produce mode.
    fn for_mode(mode: &str) -> &'static [RawKind] {
        match mode {
            "await" => &[RawKind::Future],
            _ => &[RawKind::Floor, RawKind::ThreadedOpaque],
        }
    }

    fn label(self) -> &'static str {
        match self {
            RawKind::Floor => "raw BaseProducer (floor)",
            RawKind::ThreadedOpaque => "raw ThreadedProducer + boxed opaque",
            RawKind::Future => "raw FutureProducer",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            RawKind::Floor => "raw-floor",
            RawKind::ThreadedOpaque => "raw-threaded",
            RawKind::Future => "raw-future",
        }
    }
}

/// The floor: `BaseProducer`, no per-message state, delivery reports served by polling inline.
fn produce_floor(
    args: &Args,
    raw_config: &ClientConfig,
    topic: &str,
    payload: &[u8],
    keys: &[String],
) -> anyhow::Result<Figures> {
    use kafka_kit::rdkafka::producer::BaseProducer;
    let n = args.messages;
    let producer: BaseProducer = raw_config.create()?;
    let run = Run::start(RawKind::Floor.label());
    for i in 0..n {
        loop {
            let mut r = BaseRecord::to(topic).payload(payload);
            if let Some(k) = key_of(keys, i) {
                r = r.key(k);
            }
            match producer.send::<[u8], [u8]>(r) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        if i % 64 == 0 {
            producer.poll(Duration::ZERO);
            run.done.store(
                i.saturating_sub(producer.in_flight_count().max(0) as u64),
                Ordering::Relaxed,
            );
        }
    }
    producer.flush(Duration::from_secs(300))?;
    Ok(run.finish(n, args.size, None))
}

async fn produce_raw(
    args: &Args,
    kind: RawKind,
    config: &KafkaConfig,
    topic: &str,
    payload: &[u8],
    keys: &[String],
) -> anyhow::Result<Figures> {
    let n = args.messages;
    let raw_config = args.raw_config(config);
    match kind {
        RawKind::Floor => produce_floor(args, &raw_config, topic, payload, keys),
        RawKind::ThreadedOpaque => {
            let run = Run::start(kind.label());
            let failed = Arc::new(AtomicU64::new(0));
            let counting = Counting {
                done: run.done.clone(),
                failed: failed.clone(),
            };
            let producer: ThreadedProducer<Counting> = raw_config.create_with_context(counting)?;
            for i in 0..n {
                loop {
                    let mut r = BaseRecord::with_opaque_to(topic, Box::new(i)).payload(payload);
                    if let Some(k) = key_of(keys, i) {
                        r = r.key(k);
                    }
                    match producer.send(r) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Err((e, _)) => return Err(e.into()),
                    }
                }
            }
            // Wait for every delivery report, as kafka-kit's flush does: nudge, then look again.
            let deadline = Instant::now() + Duration::from_secs(300);
            while producer.in_flight_count() > 0 && Instant::now() < deadline {
                let _ = producer.flush(Timeout::After(Duration::ZERO));
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            none_failed(&failed, "raw")?;
            Ok(run.finish(n, args.size, None))
        }
        RawKind::Future => {
            let producer: FutureProducer = raw_config.create()?;
            let run = Run::start(kind.label());
            let mut latencies = Vec::with_capacity(n as usize);
            let mut in_flight: FuturesUnordered<RawDelivery> = FuturesUnordered::new();
            let mut pending: VecDeque<u64> = VecDeque::new();
            for i in 0..n {
                pending.push_back(i);
                while let Some(i) = pending.pop_front() {
                    if in_flight.len() >= WINDOW {
                        let (sent, result) = in_flight.next().await.context("no future")?;
                        result?;
                        latencies.push(sent.elapsed());
                        run.done.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut r = FutureRecord::to(topic).payload(payload);
                    if let Some(k) = key_of(keys, i) {
                        r = r.key(k);
                    }
                    let sent = Instant::now();
                    match producer.send_result(r) {
                        Ok(delivery) => in_flight.push(Box::pin(async move {
                            let result = match delivery.await {
                                Ok(Ok(_)) => Ok(()),
                                Ok(Err((e, _))) => Err(e),
                                Err(_) => Err(KafkaError::Canceled),
                            };
                            (sent, result)
                        })),
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                            pending.push_front(i);
                            match in_flight.next().await {
                                Some((sent, result)) => {
                                    result?;
                                    latencies.push(sent.elapsed());
                                    run.done.fetch_add(1, Ordering::Relaxed);
                                }
                                None => tokio::time::sleep(Duration::from_millis(1)).await,
                            }
                        }
                        Err((e, _)) => return Err(e.into()),
                    }
                }
            }
            while let Some((sent, result)) = in_flight.next().await {
                result?;
                latencies.push(sent.elapsed());
                run.done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(run.finish(n, args.size, Some(latencies)))
        }
    }
}

async fn consume_kit(args: &Args, cluster: &TestCluster, topic: &str) -> anyhow::Result<Figures> {
    let consumer = Consumer::builder(&consumer_config(args, cluster)?)
        .assign(topic, 0..args.partitions)
        .start_at(StartAt::Beginning)
        .build()?;
    let mut consumer = consumer;
    let run = Run::start("kafka-kit consume");
    let mut bytes = 0usize;
    // One deadline for the whole run, as the raw loop has: a timer per record would be the
    // tool's cost, not the consumer's.
    tokio::time::timeout(Duration::from_secs(300), async {
        for _ in 0..args.messages {
            let record = next_unless_fatal(&mut consumer)
                .await
                .context("stream ended")??;
            bytes += record.payload().map_or(0, <[u8]>::len);
            run.done.fetch_add(1, Ordering::Relaxed);
        }
        anyhow::Ok(())
    })
    .await
    .context("consuming took more than 300 s")??;
    std::hint::black_box(bytes);
    let figures = run.finish(args.messages, args.size, None);
    consumer.close().await?;
    Ok(figures)
}

/// The raw consumer runs with the settings kafka-kit's consumer runs with (the cluster's consumer
/// settings, manual commits and offset store, no end-of-partition events, `read_committed`, a
/// 100 ms fetch queue backoff), so that the two runs differ in the client only.
fn consume_raw(args: &Args, cluster: &TestCluster, topic: &str) -> anyhow::Result<Figures> {
    let mut raw = consumer_config(args, cluster)?.to_client_config();
    raw.set("group.id", format!("perf-raw-{}", run_id()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "latest")
        .set("isolation.level", "read_committed");
    if !args.set.iter().any(|(k, _)| k == "fetch.queue.backoff.ms") {
        raw.set("fetch.queue.backoff.ms", "100");
    }

    let consumer: BaseConsumer = raw.create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..args.partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let run = Run::start("raw BaseConsumer consume");
    let mut bytes = 0usize;
    let mut count = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while count < args.messages && Instant::now() < deadline {
        let Some(polled) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        // Errors the consumer recovers from are logged and skipped; a fatal one ends the run.
        if let Some(message) = unless_fatal(polled.map_err(kafka_kit::Error::from))? {
            bytes += message.payload().map_or(0, <[u8]>::len);
            count += 1;
            run.done.store(count, Ordering::Relaxed);
        }
    }
    anyhow::ensure!(
        count == args.messages,
        "raw consumer read {count} of {}",
        args.messages
    );
    std::hint::black_box(bytes);
    Ok(run.finish(args.messages, args.size, None))
}
