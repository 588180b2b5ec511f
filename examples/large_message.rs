//! A 5 MB report sent by reference and read back intact (seed 001, large messages).
//!
//! The tutorial uploads the report to S3 and sends `{s3_location, size_bytes, checksum}`. kafka-kit's
//! `ClaimCheck` does the same through a `BlobStore` (a local directory here; S3, GCS or Azure
//! with the `object-store` feature), marks the message with a header, and on the consuming side
//! fetches the blob and checks its size and SHA-256 before handing it over. Small payloads travel
//! inline, unchanged.
//!
//! ```text
//! cargo run --example large_message
//! ```

use std::time::Duration;

use kafka_kit::claim_check::{BlobRef, ClaimCheck, FsBlobStore};
use kafka_kit::consumer::{Consumer, StartAt};
use kafka_kit::headers::Headers;
use kafka_kit::producer::{Producer, Record};
use kafka_kit::testing::{next_unless_fatal, run_id, TestCluster};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cluster = TestCluster::from_env_or_embedded()?;
    println!("cluster: {}", cluster.describe());
    let run = run_id();
    let topic = format!("reports-{run}");
    cluster.create_topic(&topic, 1).await?;

    let blobs = std::env::temp_dir().join(format!("kafka-kit-blobs-{run}"));
    let claims = ClaimCheck::new(FsBlobStore::new(&blobs)?).threshold(256 * 1024);
    println!(
        "blob store: {} (payloads above 256 KiB go there)\n",
        blobs.display()
    );

    // A 5 MB JSON report for user 1001, and a small one for user 1002.
    let rows: Vec<String> = (0..60_000)
        .map(|i| format!(r#"{{"day":{i},"points":{}}}"#, i % 97))
        .collect();
    let big = format!(r#"{{"user_id":1001,"rows":[{}]}}"#, rows.join(",")).into_bytes();
    let big = [
        big.as_slice(),
        &vec![b' '; 5_000_000usize.saturating_sub(big.len())],
    ]
    .concat();
    let small = br#"{"user_id":1002,"rows":[]}"#.to_vec();

    let producer: Producer = Producer::builder(&cluster.config().build()?).build()?;
    for (user, report) in [("1001", &big), ("1002", &small)] {
        let outgoing = claims.prepare(&topic, report, "application/json").await?;
        let headers = outgoing.mark(
            Headers::new()
                .event_type("report_ready")
                .source("report-service"),
        );
        let delivery = producer
            .send(
                Record::to(&topic)
                    .key(user)
                    .payload(outgoing.payload())
                    .headers(headers),
            )
            .await?;
        match outgoing.reference() {
            Some(r) => println!(
                "user {user}: {} bytes stored at {}\n           sent a {}-byte reference, sha256 {}…, offset {}",
                r.size, r.location, outgoing.payload().len(), &r.sha256[..16], delivery.offset
            ),
            None => println!("user {user}: {} bytes sent inline, offset {}", report.len(), delivery.offset),
        }
    }
    producer.close().await?;

    println!("\nreading `{topic}` back:");
    let mut consumer = Consumer::builder(&cluster.consumer_config().build()?)
        .assign(&topic, [0])
        .start_at(StartAt::Beginning)
        .build()?;
    for expected in [&big, &small] {
        // Errors that are not fatal are logged and skipped; a fatal one (or a caught panic) ends the read.
        let record =
            tokio::time::timeout(Duration::from_secs(30), next_unless_fatal(&mut consumer))
                .await?
                .ok_or_else(|| anyhow::anyhow!("stream ended"))??;
        let in_kafka = record.payload().map_or(0, <[u8]>::len);
        let by_reference = record.json::<BlobRef>().is_ok() && in_kafka < 1024;
        let payload = claims.resolve(&record).await?;
        let value: serde_json::Value = serde_json::from_slice(&payload)?;
        println!(
            "  user {:?}: {} bytes in Kafka{}, {} bytes resolved, {} rows, identical to what was sent: {}",
            record.key_str(),
            in_kafka,
            if by_reference { " (a reference)" } else { "" },
            payload.len(),
            value["rows"].as_array().map_or(0, Vec::len),
            payload.as_ref() == expected.as_slice()
        );
        anyhow::ensure!(
            payload.as_ref() == expected.as_slice(),
            "the report came back different"
        );
    }
    consumer.close().await?;
    let _ = std::fs::remove_dir_all(&blobs);
    Ok(())
}
