//! A Schema Registry in-process: the REST subset kafka-kit uses, for tests and examples.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::client::{Schema, SchemaType};
use crate::error::{Error, Result};
use crate::lock;

/// A Schema Registry in this process, on `127.0.0.1` and a free port, speaking the REST subset
/// kafka-kit's [`SchemaRegistry`](super::SchemaRegistry) uses: register a version, a schema by
/// id, a subject's latest version, and the compatibility check. What the embedded broker is for
/// Kafka, this is for the registry: examples and tests run without a server.
///
/// Like a real registry it gives one global id per distinct schema, refuses (409) an Avro schema
/// that cannot read the subject's latest version (BACKWARD compatibility; JSON Schemas are
/// accepted as they are), and answers errors with the registry's `error_code`s (40401 unknown
/// subject, 40403 unknown schema, 42201 invalid schema). For tests it counts requests, can
/// require basic auth, and can fail or delay the next requests.
///
/// ```
/// use kafka_kit::schema_registry::{MockSchemaRegistry, Schema, SchemaRegistry};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> anyhow::Result<()> {
/// let mock = MockSchemaRegistry::start()?;
/// let registry = SchemaRegistry::builder(mock.url()).build()?;
/// let id = registry.register("greetings-value", &Schema::avro(r#""string""#)).await?;
/// assert_eq!(registry.schema_by_id(id).await?.schema, r#""string""#);
/// assert_eq!(mock.requests(), 1); // the id lookup came from the client's cache
/// # Ok(()) }
/// ```
pub struct MockSchemaRegistry {
    url: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
}

#[derive(Default)]
struct State {
    /// Schemas by id - 1.
    schemas: Vec<Schema>,
    /// Subjects' versions: ids, oldest first.
    subjects: HashMap<String, Vec<u32>>,
    log: Vec<String>,
    fail: VecDeque<u16>,
    delay: Option<Duration>,
    auth: Option<String>,
}

impl std::fmt::Debug for MockSchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockSchemaRegistry")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl MockSchemaRegistry {
    /// Starts a registry on a free local port. It stops when dropped.
    pub fn start() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| Error::Testing(format!("mock schema registry: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Testing(format!("mock schema registry: {e}")))?;
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (accept_state, accept_stop) = (state.clone(), stop.clone());
        std::thread::Builder::new()
            .name("mock-schema-registry".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let (state, stop) = (accept_state.clone(), accept_stop.clone());
                    let _ = std::thread::Builder::new()
                        .name("mock-schema-registry-conn".into())
                        .spawn(move || serve(stream, &state, &stop));
                }
            })
            .map_err(|e| Error::Testing(format!("mock schema registry: {e}")))?;
        Ok(MockSchemaRegistry {
            url: format!("http://{addr}"),
            state,
            stop,
            addr,
        })
    }

    /// Its URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests received so far (failed and delayed ones included).
    pub fn requests(&self) -> usize {
        lock(&self.state).log.len()
    }

    /// The requests received so far, as `METHOD /path`.
    pub fn request_log(&self) -> Vec<String> {
        lock(&self.state).log.clone()
    }

    /// Answers the next `count` requests with HTTP `status` (error code `status * 100 + 1`).
    pub fn fail_next(&self, count: usize, status: u16) {
        lock(&self.state)
            .fail
            .extend(std::iter::repeat_n(status, count));
    }

    /// Waits this long before answering each request (`None`: answer at once).
    pub fn delay(&self, delay: Option<Duration>) {
        lock(&self.state).delay = delay;
    }

    /// Answers 401 to requests without these basic-auth credentials.
    pub fn require_basic_auth(&self, username: &str, password: &str) {
        lock(&self.state).auth = Some(format!(
            "Basic {}",
            base64(format!("{username}:{password}").as_bytes())
        ));
    }

    /// The versions of `subject`, oldest first, as schema ids.
    pub fn versions(&self, subject: &str) -> Vec<u32> {
        lock(&self.state)
            .subjects
            .get(subject)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for MockSchemaRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop up so that it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(100));
    }
}

/// Serves one connection's requests (HTTP/1.1, keep-alive) until it closes or the registry stops.
fn serve(stream: TcpStream, state: &Mutex<State>, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while !stop.load(Ordering::Relaxed) {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) && request_line.is_empty() =>
            {
                continue
            }
            Err(_) => return,
        }
        let _ = reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(5)));
        let mut content_length = 0;
        let mut authorization = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("authorization") {
                    authorization = Some(value.to_owned());
                }
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let _ = reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(200)));
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let delay = {
            let mut state = lock(state);
            state.log.push(format!("{method} {path}"));
            state.delay
        };
        if let Some(delay) = delay {
            // The mock registry's own connection thread: a slow registry, for timeout tests.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(delay);
        }
        let (status, answer) = handle(
            &mut lock(state),
            method,
            path,
            &body,
            authorization.as_deref(),
        );
        let answer = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\n\r\n{answer}",
            if status < 300 { "OK" } else { "Error" },
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

fn error(status: u16, code: u32, message: &str) -> (u16, Value) {
    (status, json!({ "error_code": code, "message": message }))
}

fn handle(
    state: &mut State,
    method: &str,
    path: &str,
    body: &[u8],
    authorization: Option<&str>,
) -> (u16, Value) {
    if let Some(status) = state.fail.pop_front() {
        return error(status, u32::from(status) * 100 + 1, "injected failure");
    }
    if state.auth.is_some() && state.auth.as_deref() != authorization {
        return error(401, 40101, "Unauthorized");
    }
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (method, segments.as_slice()) {
        ("POST", ["subjects", subject, "versions"]) => match request_schema(body) {
            Ok(schema) => register(state, subject, schema),
            Err(answer) => answer,
        },
        ("GET", ["schemas", "ids", id]) => {
            let schema = id
                .parse::<usize>()
                .ok()
                .and_then(|id| state.schemas.get(id.checked_sub(1)?));
            match schema {
                Some(schema) => (200, schema_json(schema)),
                None => error(404, 40403, &format!("Schema {id} not found")),
            }
        }
        ("GET", ["subjects", subject, "versions", "latest"]) => {
            match state.subjects.get(*subject) {
                Some(versions) if !versions.is_empty() => {
                    let id = *versions.last().expect("not empty");
                    let mut answer = schema_json(&state.schemas[id as usize - 1]);
                    answer["subject"] = json!(subject);
                    answer["id"] = json!(id);
                    answer["version"] = json!(versions.len());
                    (200, answer)
                }
                _ => error(404, 40401, &format!("Subject '{subject}' not found.")),
            }
        }
        ("POST", ["compatibility", "subjects", subject, "versions", "latest"]) => {
            let schema = match request_schema(body) {
                Ok(schema) => schema,
                Err(answer) => return answer,
            };
            let Some(&latest) = state.subjects.get(*subject).and_then(|v| v.last()) else {
                return error(404, 40401, &format!("Subject '{subject}' not found."));
            };
            match incompatibility(&state.schemas[latest as usize - 1], &schema) {
                Ok(None) => (200, json!({ "is_compatible": true })),
                Ok(Some(why)) => (200, json!({ "is_compatible": false, "messages": [why] })),
                Err(answer) => answer,
            }
        }
        _ => error(
            404,
            404,
            &format!("{method} {path}: not served by the mock registry"),
        ),
    }
}

fn register(state: &mut State, subject: &str, schema: Schema) -> (u16, Value) {
    let existing = state.schemas.iter().position(|s| *s == schema);
    let versions = state.subjects.get(subject).cloned().unwrap_or_default();
    if let Some(index) = existing {
        let id = index as u32 + 1;
        if versions.contains(&id) {
            return (200, json!({ "id": id }));
        }
    }
    if let Some(&latest) = versions.last() {
        match incompatibility(&state.schemas[latest as usize - 1], &schema) {
            Ok(None) => {}
            Ok(Some(why)) => {
                return error(
                    409,
                    409,
                    &format!("Schema being registered is incompatible with an earlier schema for subject \"{subject}\": {why}"),
                )
            }
            Err(answer) => return answer,
        }
    }
    let id = match existing {
        Some(index) => index as u32 + 1,
        None => {
            state.schemas.push(schema);
            state.schemas.len() as u32
        }
    };
    state
        .subjects
        .entry(subject.to_owned())
        .or_default()
        .push(id);
    (200, json!({ "id": id }))
}

/// Why `new` cannot read values written with `latest` (BACKWARD), or `None`.
fn incompatibility(latest: &Schema, new: &Schema) -> Result<Option<String>, (u16, Value)> {
    if latest.schema_type != new.schema_type {
        return Ok(Some(format!(
            "schema type {} instead of {}",
            new.schema_type, latest.schema_type
        )));
    }
    if new.schema_type != SchemaType::Avro {
        return Ok(None);
    }
    let parse = |s: &Schema| {
        apache_avro::Schema::parse_str(&s.schema)
            .map_err(|e| error(422, 42201, &format!("Invalid schema: {e}")))
    };
    let (writer, reader) = (parse(latest)?, parse(new)?);
    Ok(
        apache_avro::schema_compatibility::SchemaCompatibility::can_read(&writer, &reader)
            .err()
            .map(|e| e.to_string()),
    )
}

fn request_schema(body: &[u8]) -> Result<Schema, (u16, Value)> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| error(422, 42201, &format!("Invalid request: {e}")))?;
    let text = request
        .get("schema")
        .and_then(Value::as_str)
        .ok_or_else(|| error(422, 42201, "Invalid request: no schema"))?;
    let schema_type = match request.get("schemaType").and_then(Value::as_str) {
        None | Some("AVRO") => SchemaType::Avro,
        Some("JSON") => SchemaType::Json,
        Some("PROTOBUF") => SchemaType::Protobuf,
        Some(other) => return Err(error(422, 42201, &format!("Unknown schema type {other}"))),
    };
    let valid = match schema_type {
        SchemaType::Avro => apache_avro::Schema::parse_str(text)
            .map(drop)
            .map_err(|e| e.to_string()),
        SchemaType::Json => serde_json::from_str::<Value>(text)
            .map_err(|e| e.to_string())
            .and_then(|v| {
                jsonschema::validator_for(&v)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
        _ => Ok(()),
    };
    valid.map_err(|e| error(422, 42201, &format!("Invalid schema: {e}")))?;
    Ok(Schema {
        schema_type,
        schema: text.to_owned(),
    })
}

fn schema_json(schema: &Schema) -> Value {
    match schema.schema_type {
        SchemaType::Avro => json!({ "schema": schema.schema }),
        other => json!({ "schema": schema.schema, "schemaType": other.as_str() }),
    }
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64() {
        assert_eq!(super::base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(super::base64(b"a"), "YQ==");
        assert_eq!(super::base64(b"ab"), "YWI=");
    }

    #[test]
    fn percent_decode() {
        assert_eq!(super::percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(super::percent_decode("plain-value"), "plain-value");
    }
}
