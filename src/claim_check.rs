//! Large messages by reference (the claim-check pattern): the payload goes to a blob store, and
//! Kafka carries a small, verifiable reference to it.
//!
//! Kafka is built for messages of kilobytes; brokers refuse those above `message.max.bytes` (1 MB
//! by default). [`ClaimCheck::prepare`] sends payloads above a threshold to a [`BlobStore`] and
//! gives the message a [`BlobRef`] instead: location, size, SHA-256 and content type, as JSON,
//! marked by the [`HEADER`] header. [`ClaimCheck::resolve`] turns a consumed record back into its
//! payload, transparently: inline payloads pass through, references are fetched and checked. A
//! missing blob, or one whose size or checksum differs, is an error ([`ClaimCheckError`]), never
//! garbage handed on; in an [`AtLeastOnce`](crate::consumer::processing::AtLeastOnce) loop it
//! sends the record to the dead-letter topic.
//!
//! # Example
//!
//! ```no_run
//! use kafka_kit::claim_check::{ClaimCheck, FsBlobStore};
//! use kafka_kit::headers::Headers;
//! use kafka_kit::producer::{Producer, Record};
//!
//! # async fn run(producer: Producer, record: kafka_kit::consumer::ConsumerRecord) -> anyhow::Result<()> {
//! let claims = ClaimCheck::new(FsBlobStore::new("/var/lib/reports")?).threshold(512 * 1024);
//! let report = vec![b'x'; 5_000_000];
//!
//! // Producing: 5 MB go to the store; the message holds ~200 bytes of JSON.
//! let outgoing = claims.prepare("reports", &report, "application/json").await?;
//! let headers = outgoing.mark(Headers::new().event_type("report_ready"));
//! producer.send(Record::to("reports").key("1001").payload(outgoing.payload()).headers(headers)).await?;
//!
//! // Consuming: the payload, checked, whichever way it travelled.
//! let payload = claims.resolve(&record).await?;
//! # Ok(()) }
//! ```
//!
//! The reference is this JSON object (`content_type` as given to `prepare`):
//!
//! ```json
//! {"location":"file:///var/lib/reports/reports/6f1c…","size":5000000,
//!  "sha256":"<64 lowercase hex digits>","content_type":"application/json"}
//! ```
//!
//! [`FsBlobStore`] keeps blobs in a local directory. With the `object-store` cargo feature,
//! `ObjectStoreBlobs` keeps them in anything the `object_store` crate reaches (S3, GCS, Azure,
//! local, memory).

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::consumer::ConsumerRecord;
use crate::headers::Headers;

/// The header that marks a message whose payload is a [`BlobRef`]; its value is `v1`.
pub const HEADER: &str = "kafka_kit.claim_check";
const VERSION: &[u8] = b"v1";

/// Where a large payload is, and how to know it is the right one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// The blob's location in its store (a `file://` URL for [`FsBlobStore`]).
    pub location: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, as 64 lowercase hex digits.
    pub sha256: String,
    /// Its media type.
    pub content_type: String,
}

pub use crate::error::ClaimCheckError;

/// A place for large payloads. Implementations must be cheap to share across tasks.
pub trait BlobStore: Send + Sync + 'static {
    /// Stores `bytes` under `key` (a relative, `/`-separated name) and returns its location.
    fn put<'a>(
        &'a self,
        key: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<String, ClaimCheckError>>;
    /// The blob at `location`; [`ClaimCheckError::Missing`] when there is none.
    fn get<'a>(&'a self, location: &'a str) -> BoxFuture<'a, Result<Vec<u8>, ClaimCheckError>>;
}

/// Blobs in a local directory, as files; locations are `file://` URLs.
#[derive(Clone, Debug)]
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// A store in `root`, created if missing.
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(FsBlobStore {
            root: root.canonicalize()?,
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file behind a location, if it is one of this store's.
    fn path_of(&self, location: &str) -> Result<PathBuf, ClaimCheckError> {
        let outside = || ClaimCheckError::Store {
            location: location.to_owned(),
            reason: format!("not a location in {}", self.root.display()),
        };
        let path = PathBuf::from(location.strip_prefix("file://").ok_or_else(outside)?);
        // A reference comes from a message: never follow it out of the store's directory.
        if path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
            || !path.starts_with(&self.root)
        {
            return Err(outside());
        }
        Ok(path)
    }
}

impl BlobStore for FsBlobStore {
    fn put<'a>(
        &'a self,
        key: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<String, ClaimCheckError>> {
        Box::pin(async move {
            let path = self.root.join(key);
            let location = format!("file://{}", path.display());
            let fail = |e: std::io::Error| ClaimCheckError::Store {
                location: location.clone(),
                reason: e.to_string(),
            };
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await.map_err(fail)?;
            }
            // Written whole, then renamed: a reader never sees half a blob.
            let partial = path.with_extension("partial");
            tokio::fs::write(&partial, bytes).await.map_err(fail)?;
            tokio::fs::rename(&partial, &path).await.map_err(fail)?;
            Ok(location)
        })
    }

    fn get<'a>(&'a self, location: &'a str) -> BoxFuture<'a, Result<Vec<u8>, ClaimCheckError>> {
        Box::pin(async move {
            let path = self.path_of(location)?;
            match tokio::fs::read(&path).await {
                Ok(bytes) => Ok(bytes),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(ClaimCheckError::Missing {
                        location: location.to_owned(),
                    })
                }
                Err(e) => Err(ClaimCheckError::Store {
                    location: location.to_owned(),
                    reason: e.to_string(),
                }),
            }
        })
    }
}

/// Blobs in an [`object_store::ObjectStore`] (S3, GCS, Azure, local, memory); locations are
/// `<prefix>/<key>` paths in that store.
#[cfg(feature = "object-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "object-store")))]
#[derive(Clone, Debug)]
pub struct ObjectStoreBlobs {
    store: Arc<dyn object_store::ObjectStore>,
}

#[cfg(feature = "object-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "object-store")))]
impl ObjectStoreBlobs {
    /// Blobs in `store`.
    pub fn new(store: Arc<dyn object_store::ObjectStore>) -> Self {
        ObjectStoreBlobs { store }
    }
}

#[cfg(feature = "object-store")]
use object_store::ObjectStoreExt as _;

#[cfg(feature = "object-store")]
#[cfg_attr(docsrs, doc(cfg(feature = "object-store")))]
impl BlobStore for ObjectStoreBlobs {
    // `put` and `get` come from object_store's extension trait.
    fn put<'a>(
        &'a self,
        key: &'a str,
        bytes: &'a [u8],
    ) -> BoxFuture<'a, Result<String, ClaimCheckError>> {
        Box::pin(async move {
            let path = object_store::path::Path::from(key);
            self.store
                .put(&path, object_store::PutPayload::from(bytes.to_vec()))
                .await
                .map_err(|e| ClaimCheckError::Store {
                    location: path.to_string(),
                    reason: e.to_string(),
                })?;
            Ok(path.to_string())
        })
    }

    fn get<'a>(&'a self, location: &'a str) -> BoxFuture<'a, Result<Vec<u8>, ClaimCheckError>> {
        Box::pin(async move {
            let path = object_store::path::Path::from(location);
            let fail = |e: object_store::Error| match e {
                object_store::Error::NotFound { .. } => ClaimCheckError::Missing {
                    location: location.to_owned(),
                },
                e => ClaimCheckError::Store {
                    location: location.to_owned(),
                    reason: e.to_string(),
                },
            };
            let result = self.store.get(&path).await.map_err(fail)?;
            Ok(result.bytes().await.map_err(fail)?.to_vec())
        })
    }
}

/// Sends large payloads by reference and resolves references back. Cheap to clone.
#[derive(Clone)]
pub struct ClaimCheck {
    store: Arc<dyn BlobStore>,
    threshold: usize,
}

impl fmt::Debug for ClaimCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimCheck")
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

/// A payload ready to send: the original, or a reference to where it was stored.
#[derive(Debug)]
pub struct Outgoing<'a> {
    payload: Cow<'a, [u8]>,
    reference: Option<BlobRef>,
}

impl Outgoing<'_> {
    /// The message payload to send.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The reference, when the payload went to the store.
    pub fn reference(&self) -> Option<&BlobRef> {
        self.reference.as_ref()
    }

    /// Adds the claim-check marker to `headers` when the payload is a reference (consumers need
    /// it); leaves them as they are otherwise.
    pub fn mark(&self, headers: Headers) -> Headers {
        match self.reference {
            Some(_) => headers.insert(HEADER, VERSION),
            None => headers,
        }
    }
}

impl ClaimCheck {
    /// Payloads above 256 KiB go to `store`.
    pub fn new(store: impl BlobStore) -> Self {
        ClaimCheck {
            store: Arc::new(store),
            threshold: 256 * 1024,
        }
    }

    /// Payloads above `bytes` go to the store; smaller ones travel inline.
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// Stores `payload` if it is above the threshold, under `<topic>/<random id>`, and returns
    /// what to send.
    pub async fn prepare<'a>(
        &self,
        topic: &str,
        payload: &'a [u8],
        content_type: &str,
    ) -> Result<Outgoing<'a>, ClaimCheckError> {
        if payload.len() <= self.threshold {
            return Ok(Outgoing {
                payload: Cow::Borrowed(payload),
                reference: None,
            });
        }
        let key = format!("{}/{}", topic, uuid::Uuid::new_v4().simple());
        let location = self.store.put(&key, payload).await?;
        let reference = BlobRef {
            location,
            size: payload.len() as u64,
            sha256: sha256_hex(payload),
            content_type: content_type.to_owned(),
        };
        let json = serde_json::to_vec(&reference)
            .map_err(|e| ClaimCheckError::BadReference(e.to_string()))?;
        tracing::debug!(topic, location = %reference.location, size = reference.size, "kafka_kit: payload stored by reference");
        Ok(Outgoing {
            payload: Cow::Owned(json),
            reference: Some(reference),
        })
    }

    /// The payload of `record`: as it is when it travelled inline, fetched from the store and
    /// checked (size, SHA-256) when it travelled by reference.
    pub async fn resolve<'a>(
        &self,
        record: &'a ConsumerRecord,
    ) -> Result<Cow<'a, [u8]>, ClaimCheckError> {
        let payload = record.payload().unwrap_or_default();
        if record.headers().get(HEADER) != Some(VERSION) {
            return Ok(Cow::Borrowed(payload));
        }
        let reference: BlobRef = serde_json::from_slice(payload)
            .map_err(|e| ClaimCheckError::BadReference(e.to_string()))?;
        Ok(Cow::Owned(self.fetch(&reference).await?))
    }

    /// Fetches the blob a reference names and checks it.
    pub async fn fetch(&self, reference: &BlobRef) -> Result<Vec<u8>, ClaimCheckError> {
        let bytes = self.store.get(&reference.location).await?;
        let location = || reference.location.clone();
        if bytes.len() as u64 != reference.size {
            return Err(ClaimCheckError::SizeMismatch {
                location: location(),
                expected: reference.size,
                actual: bytes.len() as u64,
            });
        }
        let actual = sha256_hex(&bytes);
        if actual != reference.sha256 {
            return Err(ClaimCheckError::ChecksumMismatch {
                location: location(),
                expected: reference.sha256.clone(),
                actual,
            });
        }
        Ok(bytes)
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let mut hex = String::with_capacity(64);
    let _ = crate::write_hex(&mut hex, &Sha256::digest(bytes)); // a String takes every write
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> FsBlobStore {
        FsBlobStore::new(
            std::env::temp_dir().join(format!("kafka-kit-blobs-{}", uuid::Uuid::new_v4().simple())),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn small_payloads_stay_inline_and_large_ones_round_trip() {
        let claims = ClaimCheck::new(store()).threshold(10);
        let small = claims.prepare("t", b"tiny", "text/plain").await.unwrap();
        assert_eq!(small.payload(), b"tiny");
        assert!(small.reference().is_none());
        assert_eq!(small.mark(Headers::new()).len(), 0);

        let big = vec![7u8; 1000];
        let out = claims
            .prepare("t", &big, "application/octet-stream")
            .await
            .unwrap();
        let reference = out.reference().unwrap().clone();
        assert_eq!(reference.size, 1000);
        assert_eq!(reference.sha256, sha256_hex(&big));
        assert_eq!(
            serde_json::from_slice::<BlobRef>(out.payload()).unwrap(),
            reference
        );
        assert_eq!(out.mark(Headers::new()).len(), 1);
        assert_eq!(claims.fetch(&reference).await.unwrap(), big);
    }

    #[cfg(feature = "object-store")]
    #[tokio::test]
    async fn object_store_blobs_round_trip_and_report_missing_ones() {
        let claims = ClaimCheck::new(ObjectStoreBlobs::new(Arc::new(
            object_store::memory::InMemory::new(),
        )))
        .threshold(0);
        let out = claims
            .prepare("t", b"in memory", "text/plain")
            .await
            .unwrap();
        let reference = out.reference().unwrap().clone();
        assert_eq!(claims.fetch(&reference).await.unwrap(), b"in memory");
        let gone = BlobRef {
            location: "t/nothing-here".into(),
            ..reference
        };
        assert!(matches!(
            claims.fetch(&gone).await,
            Err(ClaimCheckError::Missing { .. })
        ));
    }

    #[tokio::test]
    async fn corrupt_missing_and_foreign_blobs_are_refused() {
        let store = store();
        let claims = ClaimCheck::new(store.clone()).threshold(0);
        let out = claims
            .prepare("t", b"original bytes", "text/plain")
            .await
            .unwrap();
        let reference = out.reference().unwrap().clone();
        let path = store.path_of(&reference.location).unwrap();

        std::fs::write(&path, b"original bytez").unwrap(); // same size, other content
        assert!(matches!(
            claims.fetch(&reference).await,
            Err(ClaimCheckError::ChecksumMismatch { .. })
        ));
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            claims.fetch(&reference).await,
            Err(ClaimCheckError::SizeMismatch {
                expected: 14,
                actual: 5,
                ..
            })
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            claims.fetch(&reference).await,
            Err(ClaimCheckError::Missing { .. })
        ));

        for foreign in [
            "file:///etc/passwd",
            "s3://bucket/key",
            &format!("file://{}/../x", store.root().display()),
        ] {
            let reference = BlobRef {
                location: foreign.to_owned(),
                ..reference.clone()
            };
            assert!(
                matches!(
                    claims.fetch(&reference).await,
                    Err(ClaimCheckError::Store { .. })
                ),
                "{foreign}"
            );
        }
        let _ = std::fs::remove_dir_all(store.root());
    }
}
