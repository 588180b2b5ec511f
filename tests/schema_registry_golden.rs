//! Compatibility with confluent-kafka-python: golden bytes made by its AvroSerializer (fastavro)
//! and JSONSerializer, committed in `tests/data/schema_registry_golden.json` by
//! `scripts/schema_registry_golden.py generate`, decode here to the same values; kafka-kit's
//! Avro encoding of those values is byte for byte the same; and kafka-kit's encodings, written to
//! `<target dir>/tmp/schema_registry_kafka_kit.json`, decode back in Python with
//!
//! ```sh
//! python scripts/schema_registry_golden.py decode <that file>
//! ```
//!
//! which this test runs itself when `KAFKA_KIT_PYTHON` names a Python with confluent-kafka,
//! fastavro and jsonschema installed (see the script's docstring). Needs
//! `--features schema-registry`.
#![cfg(feature = "schema-registry")]

use anyhow::{ensure, Context as _};
use kafka_kit::schema_registry::{
    AvroDeserializer, AvroSerializer, JsonSchemaDeserializer, JsonSchemaSerializer,
    MockSchemaRegistry, Schema, SchemaRegistry,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct UserEventV1 {
    user_id: i64,
    event_type: String,
    amount: Option<f64>,
    tags: Vec<String>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct UserEventV2 {
    user_id: i64,
    event_type: String,
    amount: Option<f64>,
    tags: Vec<String>,
    source: String,
}

#[derive(Debug, PartialEq, Deserialize)]
struct JsonEvent {
    user_id: i64,
    event_type: String,
    amount: Option<f64>,
    #[serde(default)]
    tags: Vec<String>,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

fn unhex(text: &str) -> anyhow::Result<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| Ok(u8::from_str_radix(&text[i..i + 2], 16)?))
        .collect()
}

#[tokio::test]
async fn confluent_kafka_python_golden_bytes_both_ways() -> anyhow::Result<()> {
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/schema_registry_golden.json"
    ))?)?;
    println!("golden bytes by {}", golden["generator"]);
    let mock = MockSchemaRegistry::start()?;
    let registry = SchemaRegistry::builder(mock.url()).build()?;
    // Registered in the same order, the schemas get the same ids as in Python's mock registry.
    let schemas = golden["schemas"].as_array().context("schemas")?;
    let mut by_id = std::collections::HashMap::new();
    for entry in schemas {
        let text = entry["schema"].as_str().context("schema")?;
        let schema = match entry["schema_type"].as_str() {
            Some("AVRO") => Schema::avro(text),
            Some("JSON") => Schema::json(text),
            other => anyhow::bail!("schema type {other:?}"),
        };
        let id = registry
            .register(entry["subject"].as_str().context("subject")?, &schema)
            .await?;
        ensure!(Some(u64::from(id)) == entry["id"].as_u64(), "{entry}");
        by_id.insert(id, text.to_owned());
    }

    let avro = AvroDeserializer::new(&registry);
    let json_reader = JsonSchemaDeserializer::new(&registry);
    let mut ours = Vec::new();
    let (mut avro_same_bytes, mut json_same_bytes, mut count) = (0, 0, 0);
    for record in golden["records"].as_array().context("records")? {
        let python = unhex(record["hex"].as_str().context("hex")?)?;
        let expected = &record["value"];
        let topic = record["topic"].as_str().context("topic")?;
        let id = record["schema_id"].as_u64().context("id")? as u32;
        let schema = &by_id[&id];
        let encoded = match record["format"].as_str() {
            Some("avro") if id == 1 => {
                let value: UserEventV1 = avro.deserialize(&python).await?;
                ensure!(
                    serde_json::to_value(&value)? == *expected,
                    "{value:?} != {expected}"
                );
                // v1 read as v2: the default fills the new field.
                let v2 = AvroDeserializer::new(&registry).reader_schema(&by_id[&2])?;
                let as_v2: UserEventV2 = v2.deserialize(&python).await?;
                ensure!(as_v2.source == "unknown" && as_v2.user_id == value.user_id);
                AvroSerializer::new(&registry, schema)?
                    .serialize(topic, &value)
                    .await?
            }
            Some("avro") => {
                let value: UserEventV2 = avro.deserialize(&python).await?;
                ensure!(
                    serde_json::to_value(&value)? == *expected,
                    "{value:?} != {expected}"
                );
                // v2 read as v1: the new field is dropped.
                let v1 = AvroDeserializer::new(&registry).reader_schema(&by_id[&1])?;
                let as_v1: UserEventV1 = v1.deserialize(&python).await?;
                ensure!(as_v1.event_type == value.event_type);
                AvroSerializer::new(&registry, schema)?
                    .serialize(topic, &value)
                    .await?
            }
            Some("json") => {
                // As JSON (an absent field and a null one stay apart), and typed.
                let value: Value = json_reader.deserialize(&python).await?;
                ensure!(value == *expected, "{value} != {expected}");
                let typed: JsonEvent = json_reader.deserialize(&python).await?;
                ensure!(Some(typed.user_id) == expected["user_id"].as_i64());
                ensure!(typed.amount == expected["amount"].as_f64());
                ensure!(typed.tags.len() == expected["tags"].as_array().map_or(0, Vec::len));
                JsonSchemaSerializer::new(&registry, schema)?
                    .serialize(topic, &value)
                    .await?
            }
            other => anyhow::bail!("format {other:?}"),
        };
        ensure!(encoded[..5] == python[..5], "same framing and schema id");
        if record["format"] == "avro" {
            // Avro's binary encoding is canonical: kafka-kit's bytes are Python's.
            ensure!(encoded == python, "{} != {}", hex(&encoded), hex(&python));
            avro_same_bytes += 1;
        } else if encoded == python {
            json_same_bytes += 1;
        }
        count += 1;
        ours.push(json!({
            "format": record["format"], "topic": topic, "schema_id": id,
            "value": expected, "hex": hex(&encoded),
        }));
    }
    println!(
        "{count} golden records decoded to the same values; {avro_same_bytes} Avro encodings byte-identical; \
         {json_same_bytes} JSON encodings byte-identical"
    );

    let path =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("schema_registry_kafka_kit.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json!({
            "generator": concat!("kafka-kit ", env!("CARGO_PKG_VERSION")),
            "schemas": golden["schemas"],
            "records": ours,
        }))?,
    )?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/schema_registry_golden.py"
    );
    match std::env::var_os("KAFKA_KIT_PYTHON") {
        Some(python) => {
            let out = std::process::Command::new(python)
                .args([script, "decode"])
                .arg(&path)
                .output()?;
            println!("{}", String::from_utf8_lossy(&out.stdout));
            ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        // Straight to stderr: the harness captures the output of passing tests.
        None => eprintln_uncaptured(&format!(
            "SKIPPED the Python decode of {}: set KAFKA_KIT_PYTHON to a Python with confluent-kafka, \
             fastavro and jsonschema, or run `python {script} decode {}`",
            path.display(),
            path.display()
        )),
    }
    Ok(())
}

fn eprintln_uncaptured(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}
