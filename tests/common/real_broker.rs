//! A real Kafka broker for the tests the embedded mock cluster cannot answer: the cluster in
//! `KAFKA_BOOTSTRAP_SERVERS` if set, else an `apache/kafka` container started by testcontainers
//! when a Docker engine answers, else none (the test prints why and passes as skipped).

use std::path::PathBuf;
use std::time::Duration;

use kafka_kit::config::BOOTSTRAP_ENV;
use kafka_kit::testing::TestCluster;
use testcontainers_modules::kafka::apache::{Kafka, KAFKA_PORT};
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{ContainerAsync, ImageExt};

/// A real broker, and the container that runs it if testcontainers started one (dropping it
/// stops the container).
pub struct RealBroker {
    pub cluster: TestCluster,
    _container: Option<ContainerAsync<Kafka>>,
}

/// Gets a real broker or returns from the calling test after printing why it is skipped.
#[macro_export]
macro_rules! real_broker_or_skip {
    ($test:expr) => {
        match $crate::common::real_broker::real_broker().await {
            Ok(broker) => broker,
            Err(reason) => {
                // Straight to the stderr handle: the test harness captures `eprintln!` of
                // passing tests, and a skip must be seen.
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "SKIPPED {}: {reason}", $test);
                return Ok(());
            }
        }
    };
}

/// The real broker to test against, or the reason there is none.
pub async fn real_broker() -> Result<RealBroker, String> {
    if let Ok(servers) = std::env::var(BOOTSTRAP_ENV) {
        if !servers.trim().is_empty() {
            return Ok(RealBroker {
                cluster: TestCluster::external(servers),
                _container: None,
            });
        }
    }
    if let Err(why) = docker_answers() {
        return Err(format!(
            "needs a real Kafka broker: {BOOTSTRAP_ENV} is not set and no Docker engine answers ({why})"
        ));
    }
    // Docker answers: from here on, a failure is a test failure, not a skip.
    let container = Kafka::default()
        .with_jvm_image()
        // The image drops its own defaults as soon as any setting comes from the environment (the
        // module sets a few), and Kafka's defaults want three replicas of the transaction log: on
        // one broker no transaction could ever begin (InitProducerId would wait for a coordinator
        // forever).
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        // A group's first member gets its partitions at once, not after 3 s.
        .with_env_var("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .start()
        .await
        .unwrap_or_else(|e| {
            panic!("Docker answered, but the apache/kafka container did not start: {e}")
        });
    let port = container
        .get_host_port_ipv4(KAFKA_PORT)
        .await
        .unwrap_or_else(|e| panic!("the Kafka container has no mapped port: {e}"));
    let cluster = TestCluster::external(format!("127.0.0.1:{port}"));
    wait_until_ready(&cluster).await;
    Ok(RealBroker {
        cluster,
        _container: Some(container),
    })
}

/// Whether a Docker engine answers on `DOCKER_HOST` or the default socket.
fn docker_answers() -> Result<(), String> {
    let host =
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    if let Some(path) = host.strip_prefix("unix://") {
        let path = PathBuf::from(path);
        #[cfg(unix)]
        return std::os::unix::net::UnixStream::connect(&path)
            .map(drop)
            .map_err(|e| format!("{}: {e}", path.display()));
        #[cfg(not(unix))]
        return Err(format!("{} is a unix socket", path.display()));
    }
    let address = host.trim_start_matches("tcp://").trim_end_matches('/');
    std::net::TcpStream::connect(address)
        .map(drop)
        .map_err(|e| format!("{address}: {e}"))
}

/// A fresh container accepts connections a little before it serves metadata.
async fn wait_until_ready(cluster: &TestCluster) {
    let probe = "kafka-kit-readiness-probe";
    for _ in 0..60 {
        if cluster.create_topic(probe, 1).await.is_ok()
            && cluster.partition_count(probe).await.is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the Kafka container did not serve metadata within 30 s");
}
