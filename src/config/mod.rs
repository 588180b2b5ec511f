//! Typed client configuration, checked before a client exists and safe to print.
//!
//! [`KafkaConfig::builder`] gives a [`ConfigBuilder`]: its setters never fail, and
//! [`ConfigBuilder::build`] checks everything at once and reports *every* problem in one
//! [`ConfigError`], each naming the property it is about. librdkafka itself judges each property
//! (unknown names and bad values), and kafka-kit adds the cross-property rules librdkafka would only
//! enforce later, or not at all (idempotence needs `acks=all`, SASL needs credentials, SSL files
//! must exist).
//!
//! # Presets
//!
//! The tutorials' recipes are [`Preset`]s, applied in the order given; later settings win:
//!
//! ```
//! use kafka_kit::config::{KafkaConfig, Preset};
//!
//! let config = KafkaConfig::builder()
//!     .bootstrap_servers("localhost:9092")
//!     .preset(Preset::Reliable)    // acks=all, idempotence, unlimited retries
//!     .preset(Preset::Throughput)  // linger 100 ms, batches up to 1 MB, lz4
//!     .set("linger.ms", "20")      // any librdkafka property, as an escape hatch
//!     .build()?;
//! assert_eq!(config.get("acks"), Some("all"));
//! assert_eq!(config.get("linger.ms"), Some("20"));
//! # Ok::<(), kafka_kit::config::ConfigError>(())
//! ```
//!
//! # Problems are reported together, by property
//!
//! ```
//! use kafka_kit::config::{KafkaConfig, Preset};
//!
//! let err = KafkaConfig::builder()
//!     .bootstrap_servers("localhost:9092")
//!     .preset(Preset::Reliable)
//!     .set("acks", "1")               // contradicts idempotence
//!     .set("linger.ms", "soon")       // not a number
//!     .set("no.such.property", "x")   // unknown to librdkafka
//!     .build()
//!     .unwrap_err();
//! let properties: Vec<&str> = err.problems().iter().map(|p| p.property()).collect();
//! assert_eq!(properties, ["linger.ms", "no.such.property", "acks"]);
//! ```
//!
//! # Durations and numbers
//!
//! The typed duration setters ([`linger`](ConfigBuilder::linger),
//! [`delivery_timeout`](ConfigBuilder::delivery_timeout),
//! [`statistics_interval`](ConfigBuilder::statistics_interval)) never panic: a duration librdkafka
//! cannot take (`Duration::MAX`, anything above `i32::MAX` milliseconds) is a problem of `build`,
//! and so is a zero where librdkafka would read 0 as something else ("no limit", "off"). Any
//! number librdkafka would read differently from what was written (it reads integers into a
//! 32-bit `int`, so `4294967301` would silently become 5) is refused too, whichever setter wrote
//! it.
//!
//! ```
//! use std::time::Duration;
//! use kafka_kit::config::KafkaConfig;
//!
//! let err = KafkaConfig::builder()
//!     .bootstrap_servers("localhost:9092")
//!     .delivery_timeout(Duration::MAX)          // more than librdkafka takes
//!     .statistics_interval(Duration::ZERO)      // 0 would turn statistics off
//!     .build()
//!     .unwrap_err();
//! let properties: Vec<&str> = err.problems().iter().map(|p| p.property()).collect();
//! assert_eq!(properties, ["message.timeout.ms", "statistics.interval.ms"]);
//! ```
//!
//! # Security, and secrets that stay secret
//!
//! [`Ssl`] and [`Sasl`] set the `security.protocol` that matches them. `Debug` of a builder, a
//! config or an error never shows a password or a private key:
//!
//! ```
//! use kafka_kit::config::{KafkaConfig, Sasl};
//!
//! let config = KafkaConfig::builder()
//!     .bootstrap_servers("broker:9094")
//!     .sasl(Sasl::scram_sha_512("app", "hunter2"))
//!     .build()?;
//! assert_eq!(config.get("security.protocol"), Some("SASL_PLAINTEXT"));
//! assert!(!format!("{config:?}").contains("hunter2"));
//! # Ok::<(), kafka_kit::config::ConfigError>(())
//! ```

mod security;

pub use security::{is_secret, Sasl, Ssl};

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaConfRes;
use rdkafka::ClientConfig;

use security::shown;
pub(crate) use security::REDACTED;

/// The environment variable that names the brokers when none are set explicitly.
pub const BOOTSTRAP_ENV: &str = "KAFKA_BOOTSTRAP_SERVERS";

/// A recipe of settings taught by the tutorials, in librdkafka's terms (its `CONFIGURATION.md`;
/// some names match the Java client's but not their meaning, e.g. `batch.size`).
///
/// librdkafka's producer defaults, for comparison: `acks=all`, `enable.idempotence=false`,
/// `retries` unlimited (bounded by `message.timeout.ms`, 300 s), `linger.ms=5`,
/// `batch.num.messages=10000`, `batch.size=1000000` bytes, `compression.type=none`,
/// `queue.buffering.max.messages=100000`, `queue.buffering.max.kbytes=1048576` (1 GiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Preset {
    /// No loss, no duplicates from retries, order kept per partition: `enable.idempotence=true`,
    /// and, written out so that a preset or setting given earlier cannot weaken them, what
    /// idempotence needs: `acks=all`, at most 5 requests in flight
    /// (`max.in.flight.requests.per.connection=5`), unlimited `retries`.
    Reliable,
    /// Strict order without idempotence (for brokers or ACLs that refuse it): `acks=all`, one request
    /// in flight per connection (`max.in.flight.requests.per.connection=1`: a retried batch cannot
    /// be overtaken), unlimited `retries`. Slower than [`Preset::Reliable`], which also keeps order.
    Ordered,
    /// Throughput over latency, in librdkafka's terms:
    ///
    /// - `linger.ms=100`: wait up to 100 ms for batches to fill. librdkafka's default of 5 ms "is
    ///   not suitable for high throughput"; its guide recommends more than 50 ms, with throughput
    ///   levelling out around 100–1000 ms.
    /// - `batch.num.messages=1000000` (its maximum; default 10,000): batches are bounded by bytes,
    ///   not by count, so small messages fill them too.
    /// - `batch.size` is left at librdkafka's 1,000,000 bytes. (The Java client's `batch.size` of
    ///   64 KiB would make librdkafka's batches about 15× smaller.)
    /// - `compression.type=lz4`: cheap on CPU, fewer bytes on the wire and on disk.
    /// - `queue.buffering.max.messages=1000000` (default 100,000): 100 ms of lingering at a million
    ///   messages a second is 100,000 messages, so the default queue would make senders wait for
    ///   room. `queue.buffering.max.kbytes` (1 GiB) still bounds the memory.
    ///
    /// The price: up to 100 ms more latency per message, and more memory in the local queue.
    Throughput,
    /// Fastest, may lose messages: `acks=0` (the broker sends no answer, so a lost message is never
    /// reported) and `enable.idempotence=false` (which needs acknowledgements).
    FireAndForget,
}

impl Preset {
    /// The librdkafka properties this preset sets.
    pub fn properties(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Preset::Reliable => &[
                ("acks", "all"),
                ("enable.idempotence", "true"),
                ("max.in.flight.requests.per.connection", "5"),
                ("retries", "2147483647"),
            ],
            Preset::Ordered => &[
                ("acks", "all"),
                ("max.in.flight.requests.per.connection", "1"),
                ("retries", "2147483647"),
            ],
            Preset::Throughput => &[
                ("linger.ms", "100"),
                ("batch.num.messages", "1000000"),
                ("compression.type", "lz4"),
                ("queue.buffering.max.messages", "1000000"),
            ],
            Preset::FireAndForget => &[("acks", "0"), ("enable.idempotence", "false")],
        }
    }
}

/// How many broker acknowledgements a produce request waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Acks {
    /// Don't wait: fastest, messages may be lost.
    None,
    /// The partition leader only.
    Leader,
    /// All in-sync replicas: required for idempotence and transactions.
    All,
}

/// Compression codec of produced batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

/// Builds a [`KafkaConfig`]. Setters never fail; [`build`](ConfigBuilder::build) reports every
/// problem at once.
#[must_use = "a builder does nothing until `build()` is called"]
#[derive(Clone, Default)]
pub struct ConfigBuilder {
    bootstrap_servers: Option<String>,
    /// Settings in the order they were given; a later one overrides an earlier one.
    settings: Vec<(String, String)>,
    ssl: Option<Ssl>,
    sasl: Option<Sasl>,
    log_level: Option<RDKafkaLogLevel>,
    /// Problems the typed setters found (a zero or too long duration), reported by `build` unless
    /// a later setting of the same property replaced them.
    refused: Vec<Problem>,
}

/// The most milliseconds librdkafka takes: it reads integer properties into a C `int`, and a
/// larger number wraps silently (`4294967301` becomes 5).
const MAX_MILLIS: u128 = i32::MAX as u128;

/// How librdkafka reads a property in milliseconds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Millis {
    /// A double: fractions of a millisecond are kept, and zero means zero (`linger.ms`).
    Fractional,
    /// An integer where 0 means something else (no limit, turned off): zero is refused, and a
    /// fraction of a millisecond rounds up, never down to 0.
    NonZeroInteger,
}

impl ConfigBuilder {
    /// The brokers to bootstrap from, `host:port` separated by commas. Defaults to the
    /// `KAFKA_BOOTSTRAP_SERVERS` environment variable.
    pub fn bootstrap_servers(mut self, servers: impl Into<String>) -> Self {
        self.bootstrap_servers = Some(servers.into());
        self
    }

    /// The client id brokers see in their logs and quotas (`client.id`).
    pub fn client_id(self, id: impl Into<String>) -> Self {
        self.set("client.id", id)
    }

    /// Applies a [`Preset`]. Presets and settings apply in the order given.
    pub fn preset(mut self, preset: Preset) -> Self {
        for (key, value) in preset.properties() {
            self = self.set(*key, *value);
        }
        self
    }

    /// Sets any librdkafka property (see librdkafka's CONFIGURATION.md). Checked by `build`.
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        self.refused.retain(|p| p.property() != key);
        self.settings.push((key, value.into()));
        self
    }

    /// Sets a property in milliseconds from a typed duration, or records why it cannot be: zero
    /// where librdkafka reads 0 as something else, or more milliseconds than librdkafka takes.
    fn set_millis(mut self, property: &'static str, duration: Duration, kind: Millis) -> Self {
        let problem = match kind {
            Millis::NonZeroInteger => Problem::zero_duration(property, duration),
            Millis::Fractional => None,
        };
        let problem = problem.or_else(|| {
            (duration.as_millis() > MAX_MILLIS).then(|| Problem::InvalidValue {
                property: property.to_owned(),
                value: format!("{duration:?}"),
                reason: format!(
                    "more than librdkafka's limit of {MAX_MILLIS} ms (about 24.8 days)"
                ),
            })
        });
        match problem {
            Some(problem) => {
                self.refused.retain(|p| p.property() != property);
                self.refused.push(problem);
                self
            }
            None if kind == Millis::NonZeroInteger => {
                let millis = duration.as_nanos().div_ceil(1_000_000);
                self.set(property, millis.to_string())
            }
            None => {
                let nanos = duration.as_nanos();
                let (millis, fraction) = (nanos / 1_000_000, nanos % 1_000_000);
                let value = if fraction == 0 {
                    millis.to_string()
                } else {
                    let value = format!("{millis}.{fraction:06}");
                    value.trim_end_matches('0').to_owned()
                };
                self.set(property, value)
            }
        }
    }

    /// Broker acknowledgements per produce request (`acks`).
    pub fn acks(self, acks: Acks) -> Self {
        let value = match acks {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        };
        self.set("acks", value)
    }

    /// Idempotent production: no duplicates from retries, order kept (`enable.idempotence`).
    pub fn idempotence(self, enabled: bool) -> Self {
        self.set("enable.idempotence", enabled.to_string())
    }

    /// How long to wait for more messages before sending a batch (`linger.ms`, fractions of a
    /// millisecond kept). Zero sends at once. librdkafka takes at most 900 s; a longer linger is a
    /// [`ConfigError`] from [`build`](Self::build).
    pub fn linger(self, linger: Duration) -> Self {
        self.set_millis("linger.ms", linger, Millis::Fractional)
    }

    /// The largest batch, in bytes (`batch.size`, librdkafka's default 1,000,000; not the Java
    /// client's 16 KiB). Batches are also bounded by `batch.num.messages` and `message.max.bytes`.
    pub fn batch_size(self, bytes: usize) -> Self {
        self.set("batch.size", bytes.to_string())
    }

    /// The compression codec of produced batches (`compression.type`).
    pub fn compression(self, codec: Compression) -> Self {
        let value = match codec {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        };
        self.set("compression.type", value)
    }

    /// Requests in flight per broker connection (`max.in.flight.requests.per.connection`).
    pub fn max_in_flight(self, requests: u32) -> Self {
        self.set(
            "max.in.flight.requests.per.connection",
            requests.to_string(),
        )
    }

    /// How long a message may take to be delivered, retries included (`message.timeout.ms`,
    /// rounded up to a whole millisecond).
    ///
    /// [`build`](Self::build) refuses zero, which librdkafka would read as "no limit", and anything
    /// above librdkafka's limit of `i32::MAX` milliseconds (about 24.8 days), `Duration::MAX`
    /// included, naming `message.timeout.ms`. To wait with no limit, say so:
    /// `set("message.timeout.ms", "0")`.
    pub fn delivery_timeout(self, timeout: Duration) -> Self {
        self.set_millis("message.timeout.ms", timeout, Millis::NonZeroInteger)
    }

    /// Reports librdkafka's statistics every `interval` (`statistics.interval.ms`, rounded up to a
    /// whole millisecond): see [`monitoring`](crate::monitoring).
    ///
    /// [`build`](Self::build) refuses zero, which librdkafka would read as "no statistics" (to
    /// have none, don't call this), and more than librdkafka's limit of 86,400 s, naming
    /// `statistics.interval.ms`.
    pub fn statistics_interval(self, interval: Duration) -> Self {
        self.set_millis("statistics.interval.ms", interval, Millis::NonZeroInteger)
    }

    /// Connects over TLS.
    pub fn ssl(mut self, ssl: Ssl) -> Self {
        self.ssl = Some(ssl);
        self
    }

    /// Authenticates with SASL (over TLS too if [`ssl`](Self::ssl) is set).
    pub fn sasl(mut self, sasl: Sasl) -> Self {
        self.sasl = Some(sasl);
        self
    }

    /// The most verbose librdkafka log level forwarded to `tracing`.
    pub fn log_level(mut self, level: RDKafkaLogLevel) -> Self {
        self.log_level = Some(level);
        self
    }

    /// Checks every setting and returns the configuration, or every problem found.
    pub fn build(self) -> Result<KafkaConfig, ConfigError> {
        let mut problems = Vec::new();
        let mut map = BTreeMap::new();

        let bootstrap = self
            .bootstrap_servers
            .or_else(|| std::env::var(BOOTSTRAP_ENV).ok())
            .filter(|servers| !servers.trim().is_empty());
        match bootstrap {
            Some(servers) => {
                map.insert("bootstrap.servers".to_string(), servers);
            }
            None => problems.push(Problem::Missing {
                property: "bootstrap.servers".into(),
                reason: format!(
                    "set it with bootstrap_servers() or the {BOOTSTRAP_ENV} environment variable"
                ),
            }),
        }
        if let Some(ssl) = &self.ssl {
            map.insert("security.protocol".into(), "SSL".into());
            for (property, path) in ssl.files() {
                if !path.is_file() {
                    problems.push(Problem::InvalidValue {
                        property: property.into(),
                        value: path.display().to_string(),
                        reason: "no such file".into(),
                    });
                }
                map.insert(property.into(), path.display().to_string());
            }
            if let Some(password) = &ssl.key_password {
                map.insert("ssl.key.password".into(), password.clone());
            }
        }
        if let Some(sasl) = &self.sasl {
            let protocol = if self.ssl.is_some() {
                "SASL_SSL"
            } else {
                "SASL_PLAINTEXT"
            };
            map.insert("security.protocol".into(), protocol.into());
            map.insert("sasl.mechanism".into(), sasl.mechanism.into());
            map.insert("sasl.username".into(), sasl.username.clone());
            map.insert("sasl.password".into(), sasl.password.clone());
            if sasl.username.is_empty() {
                problems.push(Problem::Missing {
                    property: "sasl.username".into(),
                    reason: "SASL needs a user name".into(),
                });
            }
        }
        map.extend(self.settings);

        problems.extend(map.iter().filter_map(|(k, v)| check_with_librdkafka(k, v)));
        problems.extend(self.refused);
        problems.extend(check_consistency(&map));

        if problems.is_empty() {
            Ok(KafkaConfig {
                map,
                log_level: self.log_level,
            })
        } else {
            Err(ConfigError { problems })
        }
    }
}

impl fmt::Debug for ConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings: Vec<(&str, &str)> = self
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), shown(k, v)))
            .collect();
        f.debug_struct("ConfigBuilder")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("settings", &settings)
            .field("ssl", &self.ssl)
            .field("sasl", &self.sasl)
            .finish()
    }
}

/// Asks librdkafka whether it knows `key` and accepts `value` for it, and whether it reads the
/// number it was given: librdkafka reads integer properties into a C `int`, so a larger number
/// wraps silently (`message.timeout.ms=4294967301` would mean 5 ms).
fn check_with_librdkafka(key: &str, value: &str) -> Option<Problem> {
    match ClientConfig::new().set(key, value).create_native_config() {
        Ok(native) => {
            let given = value.trim().parse::<i128>().ok()?;
            let read = native.get(key).ok()?.trim().parse::<f64>().ok()?;
            if read == given as f64 {
                return None;
            }
            let mut reason = if is_secret(key) {
                "librdkafka would read it as another number".to_owned()
            } else {
                format!("librdkafka would read it as {read}")
            };
            if i32::try_from(given).is_err() {
                use std::fmt::Write as _;
                let _ = write!(reason, " (its integers are 32-bit: at most {})", i32::MAX);
            }
            Some(Problem::InvalidValue {
                property: key.into(),
                value: shown(key, value).into(),
                reason,
            })
        }
        Err(KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, ..)) => {
            Some(Problem::UnknownProperty {
                property: key.into(),
            })
        }
        Err(KafkaError::ClientConfig(_, reason, ..)) => Some(Problem::InvalidValue {
            property: key.into(),
            value: shown(key, value).into(),
            // librdkafka's reason quotes the value: scrub it for secrets.
            reason: if is_secret(key) && !value.is_empty() {
                reason.replace(value, REDACTED)
            } else {
                reason
            },
        }),
        Err(other) => Some(Problem::InvalidValue {
            property: key.into(),
            value: shown(key, value).into(),
            reason: other.to_string(),
        }),
    }
}

/// Rules that span properties: librdkafka enforces some only when the client starts, others never.
/// The value of `acks` (or of its alias `request.required.acks`) when it is set to anything but
/// all, which idempotence and transactions need.
pub(crate) fn acks_not_all<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    get("acks")
        .or_else(|| get("request.required.acks"))
        .filter(|acks| !matches!(*acks, "all" | "-1"))
}

fn check_consistency(map: &BTreeMap<String, String>) -> Vec<Problem> {
    let get = |key: &str| map.get(key).map(String::as_str);
    let mut problems = Vec::new();
    let idempotent = get("enable.idempotence") == Some("true") || get("transactional.id").is_some();
    if idempotent {
        let why = if get("transactional.id").is_some() {
            "transactions"
        } else {
            "enable.idempotence=true"
        };
        if let Some(acks) = acks_not_all(get) {
            problems.push(Problem::Conflict {
                property: "acks".into(),
                reason: format!("{why} needs acks=all, not acks={acks}"),
            });
        }
        let in_flight = get("max.in.flight.requests.per.connection").or(get("max.in.flight"));
        if let Some(n) = in_flight
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|&n| n > 5)
        {
            problems.push(Problem::Conflict {
                property: "max.in.flight.requests.per.connection".into(),
                reason: format!("{why} allows at most 5 requests in flight, not {n}"),
            });
        }
        let retries = get("retries").or(get("message.send.max.retries"));
        if retries == Some("0") {
            problems.push(Problem::Conflict {
                property: "retries".into(),
                reason: format!("{why} needs retries, not retries=0"),
            });
        }
    }
    if let Some(mechanism) = get("sasl.mechanism").or(get("sasl.mechanisms")) {
        const KNOWN: [&str; 5] = [
            "GSSAPI",
            "PLAIN",
            "SCRAM-SHA-256",
            "SCRAM-SHA-512",
            "OAUTHBEARER",
        ];
        if !KNOWN.contains(&mechanism) {
            problems.push(Problem::InvalidValue {
                property: "sasl.mechanism".into(),
                value: mechanism.into(),
                reason: format!("expected one of {}", KNOWN.join(", ")),
            });
        }
        if matches!(mechanism, "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512")
            && get("sasl.password").is_none_or(str::is_empty)
        {
            problems.push(Problem::Missing {
                property: "sasl.password".into(),
                reason: format!("SASL/{mechanism} needs a password"),
            });
        }
    }
    problems
}

/// A checked configuration. Cheap to clone; `Debug` hides secrets.
#[derive(Clone)]
pub struct KafkaConfig {
    map: BTreeMap<String, String>,
    log_level: Option<RDKafkaLogLevel>,
}

impl KafkaConfig {
    /// Starts a configuration.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// A property's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(String::as_str)
    }

    /// The brokers this configuration bootstraps from.
    pub fn bootstrap_servers(&self) -> &str {
        self.get("bootstrap.servers").unwrap_or_default()
    }

    /// A copy with more properties set, checked like [`ConfigBuilder::build`]. Clients use it to add
    /// what they need (a group id, a partitioner) to a shared configuration.
    pub fn with<K, V>(
        &self,
        extra: impl IntoIterator<Item = (K, V)>,
    ) -> Result<KafkaConfig, ConfigError>
    where
        K: Into<String>,
        V: Into<String>,
    {
        let mut map = self.map.clone();
        let mut problems = Vec::new();
        for (key, value) in extra {
            let (key, value) = (key.into(), value.into());
            problems.extend(check_with_librdkafka(&key, &value));
            map.insert(key, value);
        }
        problems.extend(check_consistency(&map));
        if problems.is_empty() {
            Ok(KafkaConfig {
                map,
                log_level: self.log_level,
            })
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The rdkafka configuration, for anything kafka-kit doesn't wrap.
    pub fn to_client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in &self.map {
            config.set(key, value);
        }
        if let Some(level) = self.log_level {
            config.set_log_level(level);
        }
        config
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let map: BTreeMap<&str, &str> = self
            .map
            .iter()
            .map(|(k, v)| (k.as_str(), shown(k, v)))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("properties", &map)
            .finish()
    }
}

/// One thing wrong with a configuration, naming its property.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// librdkafka has no such property.
    UnknownProperty {
        /// The property.
        property: String,
    },
    /// librdkafka refused the value. A secret's value shows as `[redacted]`.
    InvalidValue {
        /// The property.
        property: String,
        /// The value given (redacted for secrets).
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// The value contradicts another setting.
    Conflict {
        /// The property to change.
        property: String,
        /// What it contradicts.
        reason: String,
    },
    /// A required property is missing.
    Missing {
        /// The property.
        property: String,
        /// How to provide it.
        reason: String,
    },
}

impl Problem {
    /// A zero interval or timeout where only a positive one makes sense, named by its setting.
    pub(crate) fn zero_duration(setting: &str, duration: std::time::Duration) -> Option<Problem> {
        duration.is_zero().then(|| Problem::InvalidValue {
            property: setting.to_owned(),
            value: "0s".to_owned(),
            reason: "must be more than zero".to_owned(),
        })
    }

    /// The property this problem is about.
    pub fn property(&self) -> &str {
        match self {
            Problem::UnknownProperty { property }
            | Problem::InvalidValue { property, .. }
            | Problem::Conflict { property, .. }
            | Problem::Missing { property, .. } => property,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::UnknownProperty { property } => write!(f, "`{property}`: unknown property"),
            Problem::InvalidValue {
                property,
                value,
                reason,
            } => {
                write!(f, "`{property}`: invalid value `{value}`: {reason}")
            }
            Problem::Conflict { property, reason } => write!(f, "`{property}`: {reason}"),
            Problem::Missing { property, reason } => write!(f, "`{property}` is missing: {reason}"),
        }
    }
}

/// A configuration was refused: every [`Problem`] found, in property order.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    problems: Vec<Problem>,
}

impl ConfigError {
    /// Every problem found.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// A single problem, as an error: clients use it for settings they check themselves.
    pub fn single(problem: Problem) -> Self {
        ConfigError {
            problems: vec![problem],
        }
    }

    pub(crate) fn from_problems(problems: Vec<Problem>) -> Self {
        ConfigError { problems }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid Kafka configuration: ")?;
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ConfigBuilder {
        KafkaConfig::builder().bootstrap_servers("localhost:9092")
    }

    #[test]
    fn presets_apply_in_order_and_set_overrides() {
        let config = base()
            .preset(Preset::Throughput)
            .linger(Duration::from_millis(5))
            .build()
            .unwrap();
        assert_eq!(config.get("linger.ms"), Some("5"));
        assert_eq!(config.get("compression.type"), Some("lz4"));
        assert_eq!(config.get("batch.num.messages"), Some("1000000"));
        assert_eq!(config.get("batch.size"), None); // librdkafka's 1,000,000 bytes
    }

    #[test]
    fn every_preset_is_valid_alone() {
        for preset in [
            Preset::Reliable,
            Preset::Ordered,
            Preset::Throughput,
            Preset::FireAndForget,
        ] {
            base()
                .preset(preset)
                .build()
                .unwrap_or_else(|e| panic!("{preset:?}: {e}"));
        }
    }

    #[test]
    fn reliable_and_fire_and_forget_contradict_unless_idempotence_is_turned_off() {
        let err = base()
            .preset(Preset::Reliable)
            .acks(Acks::Leader)
            .build()
            .unwrap_err();
        assert_eq!(err.problems().len(), 1);
        assert!(
            matches!(&err.problems()[0], Problem::Conflict { property, .. } if property == "acks")
        );
        // FireAndForget after Reliable turns idempotence off, so acks=0 is consistent.
        base()
            .preset(Preset::Reliable)
            .preset(Preset::FireAndForget)
            .build()
            .unwrap();
    }

    #[test]
    fn idempotence_limits_in_flight_and_needs_retries() {
        let err = base()
            .idempotence(true)
            .max_in_flight(6)
            .set("retries", "0")
            .build()
            .unwrap_err();
        let props: Vec<_> = err.problems().iter().map(Problem::property).collect();
        assert_eq!(props, ["max.in.flight.requests.per.connection", "retries"]);
    }

    #[test]
    fn unknown_and_invalid_properties_are_named() {
        let err = base()
            .set("linger.ms", "soon")
            .set("bogus.prop", "1")
            .build()
            .unwrap_err();
        // Problems come in property order.
        assert_eq!(
            err.problems()[0],
            Problem::UnknownProperty {
                property: "bogus.prop".into()
            }
        );
        assert!(
            matches!(&err.problems()[1], Problem::InvalidValue { property, value, .. }
            if property == "linger.ms" && value == "soon")
        );
        let text = err.to_string();
        assert!(
            text.contains("`linger.ms`") && text.contains("`bogus.prop`"),
            "{text}"
        );
    }

    #[test]
    fn missing_bootstrap_is_reported() {
        // An explicit empty value counts as missing, whatever the environment says.
        let err = KafkaConfig::builder()
            .bootstrap_servers(" ")
            .build()
            .unwrap_err();
        assert_eq!(err.problems()[0].property(), "bootstrap.servers");
    }

    #[test]
    fn security_settings_and_redaction() {
        let dir = std::env::temp_dir();
        let ca = dir.join("kafka-kit-test-ca.pem");
        std::fs::write(&ca, "not really a CA").unwrap();
        let builder = base()
            .ssl(Ssl::new().ca_location(&ca).key_password("key-secret-1"))
            .sasl(Sasl::scram_sha_256("alice", "pw-secret-2"))
            .set("ssl.keystore.password", "keystore-secret-3");
        let builder_debug = format!("{builder:?}");
        let config = builder.build().unwrap();
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(config.get("sasl.password"), Some("pw-secret-2"));
        let config_debug = format!("{config:?}");
        for debug in [&builder_debug, &config_debug] {
            for secret in ["key-secret-1", "pw-secret-2", "keystore-secret-3"] {
                assert!(!debug.contains(secret), "{secret} leaked in {debug}");
            }
            assert!(debug.contains("[redacted]"), "{debug}");
        }
        assert!(config_debug.contains("alice"));
    }

    #[test]
    fn bad_secret_values_are_not_echoed_in_errors() {
        // librdkafka (built without curl) refuses this property, quoting its value in the reason.
        let err = base()
            .set("sasl.password", "s3cret")
            .set("sasl.oauthbearer.client.secret", "oauth-s3cret")
            .set("sasl.mechanism", "NOPE")
            .build()
            .unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(
            err.problems()
                .iter()
                .any(|p| p.property() == "sasl.mechanism"),
            "{text}"
        );
    }

    #[test]
    fn missing_ssl_file_and_sasl_password() {
        let err = base()
            .ssl(Ssl::new().ca_location("/nonexistent/ca.pem"))
            .sasl(Sasl::plain("bob", ""))
            .build()
            .unwrap_err();
        let props: Vec<_> = err.problems().iter().map(Problem::property).collect();
        assert_eq!(props, ["ssl.ca.location", "sasl.password"]);
    }

    fn problem_of(err: &ConfigError, property: &str) -> Problem {
        let found = err.problems().iter().find(|p| p.property() == property);
        found
            .unwrap_or_else(|| panic!("no problem about {property}: {err}"))
            .clone()
    }

    #[test]
    fn durations_become_milliseconds() {
        let config = base()
            .linger(Duration::from_micros(2500))
            .delivery_timeout(Duration::from_micros(1500))
            .statistics_interval(Duration::from_secs(5))
            .build()
            .unwrap();
        assert_eq!(config.get("linger.ms"), Some("2.5"));
        // Rounded up, never down to a 0 that would mean "no limit".
        assert_eq!(config.get("message.timeout.ms"), Some("2"));
        assert_eq!(config.get("statistics.interval.ms"), Some("5000"));
        let config = base()
            .linger(Duration::ZERO)
            .delivery_timeout(Duration::from_nanos(1))
            .build()
            .unwrap();
        assert_eq!(config.get("linger.ms"), Some("0"));
        assert_eq!(config.get("message.timeout.ms"), Some("1"));
    }

    #[test]
    fn zero_durations_that_would_mean_something_else_are_refused() {
        let err = base()
            .delivery_timeout(Duration::ZERO)
            .statistics_interval(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.problems().len(), 2, "{err}");
        for property in ["message.timeout.ms", "statistics.interval.ms"] {
            assert_eq!(
                problem_of(&err, property),
                Problem::zero_duration(property, Duration::ZERO).unwrap()
            );
        }
        // Saying it with a property is allowed, and a later setting replaces a refused one.
        let config = base()
            .statistics_interval(Duration::ZERO)
            .set("statistics.interval.ms", "0")
            .delivery_timeout(Duration::ZERO)
            .delivery_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        assert_eq!(config.get("statistics.interval.ms"), Some("0"));
        assert_eq!(config.get("message.timeout.ms"), Some("5000"));
    }

    #[test]
    fn oversized_durations_are_refused_without_panic_or_wrap() {
        // Duration::MAX, and a value that librdkafka's `int` would wrap to 5 ms.
        for duration in [Duration::MAX, Duration::from_millis(4_294_967_301)] {
            let err = base()
                .linger(duration)
                .delivery_timeout(duration)
                .statistics_interval(duration)
                .build()
                .unwrap_err();
            assert_eq!(err.problems().len(), 3, "{err}");
            for property in ["linger.ms", "message.timeout.ms", "statistics.interval.ms"] {
                let Problem::InvalidValue { reason, .. } = problem_of(&err, property) else {
                    panic!("{err}")
                };
                assert!(reason.contains("2147483647"), "{reason}");
            }
        }
        // Within i32 but beyond the property's own range: librdkafka says so.
        let err = base()
            .linger(Duration::from_secs(901))
            .statistics_interval(Duration::from_secs(86_401))
            .delivery_timeout(Duration::from_millis(i32::MAX as u64))
            .build()
            .unwrap_err();
        let properties: Vec<_> = err.problems().iter().map(Problem::property).collect();
        assert_eq!(properties, ["linger.ms", "statistics.interval.ms"], "{err}");
    }

    #[test]
    fn numbers_librdkafka_would_read_differently_are_refused() {
        let err = base()
            .set("message.timeout.ms", "4294967301") // an `int`: 5
            .set("batch.size", "4294967296") // 0
            .set("client.id", "4294967301") // a string: fine
            .build()
            .unwrap_err();
        let properties: Vec<_> = err.problems().iter().map(Problem::property).collect();
        assert_eq!(properties, ["batch.size", "message.timeout.ms"], "{err}");
        assert!(err.to_string().contains("would read it as 5"), "{err}");
        // Settings that read back as written, or as a name, are fine.
        base()
            .set("acks", "-1")
            .set("enable.idempotence", "1")
            .set("linger.ms", "0.5")
            .build()
            .unwrap();
    }

    #[test]
    fn with_adds_and_checks() {
        let config = base().preset(Preset::Reliable).build().unwrap();
        let more = config.with([("client.id", "x")]).unwrap();
        assert_eq!(more.get("client.id"), Some("x"));
        let err = config.with([("acks", "0")]).unwrap_err();
        assert_eq!(err.problems()[0].property(), "acks");
    }
}
