//! Against a real Kafka broker: the producer scenarios, the consumer's replay from a timestamp
//! (which the embedded broker cannot look up), and exactly-once (the transactional producer, real
//! fencing, and a pipeline crashed mid-transaction then restarted, read back with
//! `read_committed`: the embedded broker shows aborted records and drops transactional offsets).
//! The broker is `KAFKA_BOOTSTRAP_SERVERS` if set, else an `apache/kafka` container
//! (testcontainers) when Docker answers. Without either, each test prints `SKIPPED …: <reason>`
//! and passes.

mod common;

macro_rules! on_real_broker {
    ($($scenario:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $scenario() -> anyhow::Result<()> {
            common::init_tracing();
            let broker = real_broker_or_skip!(stringify!($scenario));
            common::$scenario(&broker.cluster).await
        }
    )*};
}

on_real_broker!(
    every_send_mode_delivers,
    headers_round_trip,
    oversized_message_comes_back,
    missing_topic_fails_with_key_and_context,
    murmur2_matches_java,
    keyless_messages_spread,
    json_values,
    backpressure_and_flush_on_drop,
    replay_from_a_timestamp,
    transactional_producer_flow,
    fenced_producer_is_unusable,
    exactly_once_survives_a_crash,
);
