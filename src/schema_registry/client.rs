//! The registry's REST API: register, look up, check, with caches.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde_json::{json, Value};

use super::SchemaRegistryError;
use crate::lock;

/// The content type of the registry's API.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// What a schema is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SchemaType {
    /// Apache Avro (the registry's default).
    Avro,
    /// JSON Schema.
    Json,
    /// Protocol Buffers (kafka-kit looks these up, but has no serde for them).
    Protobuf,
}

impl SchemaType {
    /// The name the registry uses (`AVRO`, `JSON`, `PROTOBUF`).
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
            SchemaType::Protobuf => "PROTOBUF",
        }
    }

    fn parse(name: Option<&str>) -> Option<Self> {
        match name {
            None | Some("AVRO") => Some(SchemaType::Avro),
            Some("JSON") => Some(SchemaType::Json),
            Some("PROTOBUF") => Some(SchemaType::Protobuf),
            Some(_) => None,
        }
    }
}

impl fmt::Display for SchemaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A schema as the registry stores it: its type and its text. (Schema references are not
/// supported.)
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Schema {
    /// Avro, JSON Schema...
    pub schema_type: SchemaType,
    /// The schema's text.
    pub schema: String,
}

impl Schema {
    /// An Avro schema.
    pub fn avro(schema: impl Into<String>) -> Self {
        Schema {
            schema_type: SchemaType::Avro,
            schema: schema.into(),
        }
    }

    /// A JSON Schema.
    pub fn json(schema: impl Into<String>) -> Self {
        Schema {
            schema_type: SchemaType::Json,
            schema: schema.into(),
        }
    }

    fn request_body(&self) -> Value {
        match self.schema_type {
            SchemaType::Avro => json!({ "schema": self.schema }),
            other => json!({ "schema": self.schema, "schemaType": other.as_str() }),
        }
    }
}

/// A version of a subject, as [`SchemaRegistry::latest_version`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// The subject.
    pub subject: String,
    /// The schema's global id (what framed values carry).
    pub id: u32,
    /// Its version within the subject, from 1.
    pub version: i32,
    /// The schema.
    pub schema: Arc<Schema>,
}

/// Which registry call failed: errors name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryCall {
    /// `POST /subjects/{subject}/versions`.
    Register,
    /// `GET /schemas/ids/{id}`.
    SchemaById,
    /// `GET /subjects/{subject}/versions/latest`.
    LatestVersion,
    /// `POST /compatibility/subjects/{subject}/versions/latest`.
    CheckCompatibility,
}

impl fmt::Display for RegistryCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RegistryCall::Register => "register",
            RegistryCall::SchemaById => "schema by id",
            RegistryCall::LatestVersion => "latest version",
            RegistryCall::CheckCompatibility => "compatibility check",
        })
    }
}

/// Settings of a [`SchemaRegistry`]. `Debug` never shows the password.
#[derive(Clone)]
pub struct SchemaRegistryBuilder {
    url: String,
    basic_auth: Option<(String, String)>,
    ca_pem: Option<PathBuf>,
    identity_pem: Option<(PathBuf, PathBuf)>,
    timeout: Duration,
    connect_timeout: Duration,
    retries: u32,
    retry_backoff: Duration,
}

impl fmt::Debug for SchemaRegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistryBuilder")
            .field("url", &self.url)
            .field(
                "basic_auth",
                &self
                    .basic_auth
                    .as_ref()
                    .map(|(user, _)| (user, crate::config::REDACTED)),
            )
            .field("ca_pem", &self.ca_pem)
            .field("identity_pem", &self.identity_pem)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retries", &self.retries)
            .field("retry_backoff", &self.retry_backoff)
            .finish()
    }
}

impl SchemaRegistryBuilder {
    /// HTTP basic authentication (Confluent Cloud: the API key and secret).
    pub fn basic_auth(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.basic_auth = Some((username.into(), password.into()));
        self
    }

    /// Trusts the CA certificate(s) in this PEM file, besides the usual web roots.
    pub fn ca_certificate(mut self, pem: impl Into<PathBuf>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Mutual TLS: the client's certificate and private key, PEM files.
    pub fn client_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity_pem = Some((cert.into(), key.into()));
        self
    }

    /// How long one request may take in all (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long connecting may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many times a call is retried when the registry is unreachable, times out or answers
    /// 5xx (default 2), the first after `backoff` (default 100 ms), doubling.
    pub fn retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.retry_backoff = backoff;
        self
    }

    /// The client. Fails on a URL that is not `http(s)://...` or an unreadable certificate file.
    pub fn build(self) -> Result<SchemaRegistry, SchemaRegistryError> {
        let client_error =
            |what: &str, e: &dyn fmt::Display| SchemaRegistryError::Client(format!("{what}: {e}"));
        let url = Url::parse(&self.url).map_err(|e| client_error(&self.url, &e))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(SchemaRegistryError::Client(format!(
                "{}: not an http(s) URL",
                self.url
            )));
        }
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| client_error(&path.display().to_string(), &e))
        };
        let mut http = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("kafka-kit/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &self.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(&read(path)?)
                .map_err(|e| client_error(&path.display().to_string(), &e))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = &self.identity_pem {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| client_error("client certificate", &e))?;
            http = http.identity(identity);
        }
        let http = http.build().map_err(|e| client_error("HTTP client", &e))?;
        Ok(SchemaRegistry {
            inner: Arc::new(Inner {
                url,
                http,
                basic_auth: self.basic_auth,
                retries: self.retries,
                retry_backoff: self.retry_backoff,
                requests: AtomicU64::new(0),
                by_id: Mutex::default(),
                ids: Mutex::default(),
                avro: Mutex::default(),
                json: Mutex::default(),
            }),
        })
    }
}

/// A Schema Registry client. Cheap to clone (clones share the connection pool and the caches).
///
/// Ids by schema and schemas by id never change once given, so both are cached: a schema is
/// registered, or fetched, once per client. The latest version of a subject can change, so
/// [`latest_version`](Self::latest_version) asks every time (the serializers keep what it
/// answered).
///
/// ```no_run
/// use std::time::Duration;
/// use kafka_kit::schema_registry::{Schema, SchemaRegistry};
///
/// # async fn run() -> anyhow::Result<()> {
/// let registry = SchemaRegistry::builder("https://psrc-123.eu-west-1.aws.confluent.cloud")
///     .basic_auth("API_KEY", "API_SECRET") // never shown by Debug
///     .timeout(Duration::from_secs(5))
///     .build()?;
/// let id = registry.register("user-events-value", &Schema::avro(r#""string""#)).await?;
/// let schema = registry.schema_by_id(id).await?; // from the cache: no second request
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SchemaRegistry {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    url: Url,
    http: reqwest::Client,
    basic_auth: Option<(String, String)>,
    retries: u32,
    retry_backoff: Duration,
    requests: AtomicU64,
    by_id: Mutex<HashMap<u32, Arc<Schema>>>,
    ids: Mutex<HashMap<(String, Schema), u32>>,
    /// Parsed Avro schemas by id (see `avro.rs`).
    pub(super) avro: Mutex<HashMap<u32, Arc<apache_avro::Schema>>>,
    /// Compiled JSON Schemas by id (see `json.rs`).
    pub(super) json: Mutex<HashMap<u32, Arc<jsonschema::Validator>>>,
}

impl SchemaRegistry {
    /// The schema with id `id`, of type `expected`, parsed by `parse` once and cached by id in
    /// `cache`.
    pub(super) async fn parsed_schema<T>(
        &self,
        cache: &Mutex<HashMap<u32, Arc<T>>>,
        id: u32,
        expected: SchemaType,
        parse: impl FnOnce(&str) -> Result<T, SchemaRegistryError>,
    ) -> Result<Arc<T>, SchemaRegistryError> {
        if let Some(parsed) = lock(cache).get(&id) {
            return Ok(parsed.clone());
        }
        let schema = self.schema_by_id(id).await?;
        if schema.schema_type != expected {
            return Err(SchemaRegistryError::WrongSchemaType {
                id,
                expected,
                found: schema.schema_type,
            });
        }
        let parsed = Arc::new(parse(&schema.schema)?);
        Ok(lock(cache).entry(id).or_insert(parsed).clone())
    }
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.inner.url.as_str())
            .field(
                "basic_auth",
                &self
                    .inner
                    .basic_auth
                    .as_ref()
                    .map(|(user, _)| (user, crate::config::REDACTED)),
            )
            .field("retries", &self.inner.retries)
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

/// What a failed call was about, to say so in its error.
struct Ctx<'a> {
    call: RegistryCall,
    subject: Option<&'a str>,
    id: Option<u32>,
}

impl SchemaRegistry {
    /// Settings for the registry at `url` (e.g. `http://localhost:8081`): no authentication, 10 s
    /// timeout, two retries.
    pub fn builder(url: impl Into<String>) -> SchemaRegistryBuilder {
        SchemaRegistryBuilder {
            url: url.into(),
            basic_auth: None,
            ca_pem: None,
            identity_pem: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            retries: 2,
            retry_backoff: Duration::from_millis(100),
        }
    }

    /// The registry's base URL.
    pub fn url(&self) -> &str {
        self.inner.url.as_str()
    }

    /// HTTP requests sent so far (retries included): shows what the caches save.
    pub fn requests(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Registers `schema` under `subject` (a new version if it is new to the subject, after the
    /// registry checked it is compatible) and returns its id. Cached: once per subject and schema.
    pub async fn register(
        &self,
        subject: &str,
        schema: &Schema,
    ) -> Result<u32, SchemaRegistryError> {
        let key = (subject.to_owned(), schema.clone());
        if let Some(id) = lock(&self.inner.ids).get(&key) {
            return Ok(*id);
        }
        let ctx = Ctx {
            call: RegistryCall::Register,
            subject: Some(subject),
            id: None,
        };
        let answer = self
            .call(
                &ctx,
                Method::POST,
                &["subjects", subject, "versions"],
                Some(schema.request_body()),
            )
            .await?;
        let id = field_u32(&ctx, &answer, "id")?;
        lock(&self.inner.ids).insert(key, id);
        lock(&self.inner.by_id)
            .entry(id)
            .or_insert_with(|| Arc::new(schema.clone()));
        Ok(id)
    }

    /// The schema with global id `id`. Cached: once per id.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, SchemaRegistryError> {
        if let Some(schema) = lock(&self.inner.by_id).get(&id) {
            return Ok(schema.clone());
        }
        let ctx = Ctx {
            call: RegistryCall::SchemaById,
            subject: None,
            id: Some(id),
        };
        let answer = self
            .call(
                &ctx,
                Method::GET,
                &["schemas", "ids", &id.to_string()],
                None,
            )
            .await?;
        let schema = Arc::new(parse_schema(&ctx, &answer)?);
        Ok(lock(&self.inner.by_id).entry(id).or_insert(schema).clone())
    }

    /// The latest version of `subject`. Not cached (it changes when a version is registered);
    /// its schema is, by id.
    pub async fn latest_version(
        &self,
        subject: &str,
    ) -> Result<RegisteredSchema, SchemaRegistryError> {
        let ctx = Ctx {
            call: RegistryCall::LatestVersion,
            subject: Some(subject),
            id: None,
        };
        let answer = self
            .call(
                &ctx,
                Method::GET,
                &["subjects", subject, "versions", "latest"],
                None,
            )
            .await?;
        let id = field_u32(&ctx, &answer, "id")?;
        let version = answer
            .get("version")
            .and_then(Value::as_i64)
            .and_then(|v| i32::try_from(v).ok())
            .ok_or_else(|| invalid(&ctx, "no `version`"))?;
        let schema = Arc::new(parse_schema(&ctx, &answer)?);
        let schema = lock(&self.inner.by_id).entry(id).or_insert(schema).clone();
        Ok(RegisteredSchema {
            subject: subject.to_owned(),
            id,
            version,
            schema,
        })
    }

    /// Whether `schema` could be registered as the next version of `subject`, under the
    /// subject's compatibility rule (BACKWARD by default: readers of the new schema can read
    /// values written with the latest one). An unknown subject is
    /// [`SubjectNotFound`](SchemaRegistryError::SubjectNotFound).
    pub async fn is_compatible(
        &self,
        subject: &str,
        schema: &Schema,
    ) -> Result<bool, SchemaRegistryError> {
        let ctx = Ctx {
            call: RegistryCall::CheckCompatibility,
            subject: Some(subject),
            id: None,
        };
        let answer = self
            .call(
                &ctx,
                Method::POST,
                &["compatibility", "subjects", subject, "versions", "latest"],
                Some(schema.request_body()),
            )
            .await?;
        answer
            .get("is_compatible")
            .and_then(Value::as_bool)
            .ok_or_else(|| invalid(&ctx, "no `is_compatible`"))
    }

    /// One call, retried while the registry is unreachable or answers 5xx.
    async fn call(
        &self,
        ctx: &Ctx<'_>,
        method: Method,
        path: &[&str],
        body: Option<Value>,
    ) -> Result<Value, SchemaRegistryError> {
        let mut url = self.inner.url.clone();
        url.path_segments_mut()
            .expect("checked when built: a base URL")
            .pop_if_empty()
            .extend(path);
        let mut retry = 0;
        loop {
            let result = self.send(ctx, method.clone(), &url, body.as_ref()).await;
            match result {
                Err(e) if e.is_retriable() && retry < self.inner.retries => {
                    let wait = self.inner.retry_backoff.saturating_mul(1 << retry.min(16));
                    tracing::warn!(call = %ctx.call, error = %e, ?wait, "kafka_kit: schema registry call failed; retrying");
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
                result => return result,
            }
        }
    }

    async fn send(
        &self,
        ctx: &Ctx<'_>,
        method: Method,
        url: &Url,
        body: Option<&Value>,
    ) -> Result<Value, SchemaRegistryError> {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let mut request = self
            .inner
            .http
            .request(method, url.clone())
            .header(reqwest::header::ACCEPT, CONTENT_TYPE);
        if let Some((user, password)) = &self.inner.basic_auth {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                .body(body.to_string());
        }
        let unreachable = |e: reqwest::Error| SchemaRegistryError::Unreachable {
            call: ctx.call,
            url: url.to_string(),
            reason: error_chain(&e),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let text = response.text().await.map_err(unreachable)?;
        let answer: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return answer.ok_or_else(|| invalid(ctx, &format!("not JSON: {text:.200}")));
        }
        let code = answer
            .as_ref()
            .and_then(|a| a.get("error_code"))
            .and_then(Value::as_i64);
        let message = answer
            .as_ref()
            .and_then(|a| a.get("message"))
            .and_then(Value::as_str)
            .map_or_else(|| format!("{text:.200}"), str::to_owned);
        Err(match (status, code, ctx.subject, ctx.id) {
            (StatusCode::NOT_FOUND, Some(40401), Some(subject), _) => {
                SchemaRegistryError::SubjectNotFound {
                    call: ctx.call,
                    subject: subject.to_owned(),
                }
            }
            (StatusCode::NOT_FOUND, Some(40403) | None, _, Some(id)) => {
                SchemaRegistryError::SchemaNotFound { call: ctx.call, id }
            }
            (StatusCode::CONFLICT, _, Some(subject), _) => SchemaRegistryError::Incompatible {
                call: ctx.call,
                subject: subject.to_owned(),
                message,
            },
            _ => SchemaRegistryError::Http {
                call: ctx.call,
                status: status.as_u16(),
                code,
                message,
            },
        })
    }
}

/// An error with its causes (reqwest's own message is often just "error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn invalid(ctx: &Ctx<'_>, reason: &str) -> SchemaRegistryError {
    SchemaRegistryError::InvalidResponse {
        call: ctx.call,
        reason: reason.to_owned(),
    }
}

fn field_u32(ctx: &Ctx<'_>, answer: &Value, name: &str) -> Result<u32, SchemaRegistryError> {
    answer
        .get(name)
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| invalid(ctx, &format!("no `{name}`")))
}

fn parse_schema(ctx: &Ctx<'_>, answer: &Value) -> Result<Schema, SchemaRegistryError> {
    let schema = answer
        .get("schema")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(ctx, "no `schema`"))?;
    let type_name = answer.get("schemaType").and_then(Value::as_str);
    let schema_type = SchemaType::parse(type_name)
        .ok_or_else(|| invalid(ctx, &format!("unknown schemaType {type_name:?}")))?;
    Ok(Schema {
        schema_type,
        schema: schema.to_owned(),
    })
}
