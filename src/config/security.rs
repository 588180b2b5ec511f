//! Security settings, [`Ssl`] and [`Sasl`], and the secrets no `Debug` or error ever shows.

use std::fmt;
use std::path::{Path, PathBuf};

pub(crate) const REDACTED: &str = "[redacted]";

/// Whether a property holds a secret: its value is never printed.
pub fn is_secret(property: &str) -> bool {
    const MARKERS: [&str; 6] = [
        "password",
        "secret",
        "passphrase",
        "key.pem",
        "private.key",
        "sasl.oauthbearer.config",
    ];
    MARKERS.iter().any(|m| property.contains(m))
}

pub(super) fn shown<'a>(property: &str, value: &'a str) -> &'a str {
    if is_secret(property) {
        REDACTED
    } else {
        value
    }
}

/// SASL authentication. The password is never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Sasl {
    pub(super) mechanism: &'static str,
    pub(super) username: String,
    pub(super) password: String,
}

impl Sasl {
    /// SASL/PLAIN: use it only over SSL, the password travels as is.
    pub fn plain(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::new("PLAIN", username, password)
    }

    /// SASL/SCRAM-SHA-256.
    pub fn scram_sha_256(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::new("SCRAM-SHA-256", username, password)
    }

    /// SASL/SCRAM-SHA-512.
    pub fn scram_sha_512(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::new("SCRAM-SHA-512", username, password)
    }

    fn new(
        mechanism: &'static str,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Sasl {
            mechanism,
            username: username.into(),
            password: password.into(),
        }
    }

    /// The mechanism name, as librdkafka spells it (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`).
    pub fn mechanism(&self) -> &str {
        self.mechanism
    }
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &REDACTED)
            .finish()
    }
}

/// TLS settings: files in PEM format. The key password is never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Ssl {
    ca_location: Option<PathBuf>,
    certificate_location: Option<PathBuf>,
    key_location: Option<PathBuf>,
    pub(super) key_password: Option<String>,
}

impl Ssl {
    /// TLS with the system's trusted CAs and no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// The CA certificate(s) that sign the brokers' certificates (`ssl.ca.location`).
    pub fn ca_location(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_location = Some(path.into());
        self
    }

    /// The client's certificate, for mutual TLS (`ssl.certificate.location`).
    pub fn certificate_location(mut self, path: impl Into<PathBuf>) -> Self {
        self.certificate_location = Some(path.into());
        self
    }

    /// The client's private key, for mutual TLS (`ssl.key.location`).
    pub fn key_location(mut self, path: impl Into<PathBuf>) -> Self {
        self.key_location = Some(path.into());
        self
    }

    /// The password of the private key (`ssl.key.password`).
    pub fn key_password(mut self, password: impl Into<String>) -> Self {
        self.key_password = Some(password.into());
        self
    }

    pub(super) fn files(&self) -> impl Iterator<Item = (&'static str, &Path)> {
        [
            ("ssl.ca.location", &self.ca_location),
            ("ssl.certificate.location", &self.certificate_location),
            ("ssl.key.location", &self.key_location),
        ]
        .into_iter()
        .filter_map(|(property, path)| path.as_deref().map(|p| (property, p)))
    }
}

impl fmt::Debug for Ssl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ssl")
            .field("ca_location", &self.ca_location)
            .field("certificate_location", &self.certificate_location)
            .field("key_location", &self.key_location)
            .field(
                "key_password",
                &self.key_password.as_ref().map(|_| REDACTED),
            )
            .finish()
    }
}
