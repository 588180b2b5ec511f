//! Standard typed Kafka headers: a builder for producers, a typed reader for consumers.
//!
//! Header names and formats follow the project's Python tutorial (see [`names`]):
//! values are UTF-8 text, and the timestamp is decimal milliseconds since the
//! Unix epoch.
//!
//! Kafka allows a header name to appear more than once. Setting the same header
//! twice on a [`Headers`] builder appends a second entry, and [`HeaderReader`]
//! always reads the **last** occurrence, like Java's `Headers::lastHeader`.
//!
//! # Writing headers
//!
//! ```
//! use kafka_kit::headers::Headers;
//! use rdkafka::message::OwnedHeaders;
//!
//! let headers: OwnedHeaders = Headers::new()
//!     .new_trace_id()
//!     .schema_version("v1.0")
//!     .event_type("order_created")
//!     .source("checkout")
//!     .timestamp_now()
//!     .insert("tenant", "acme")
//!     .into();
//! // Pass `headers` to `BaseRecord::headers` / `FutureRecord::headers`.
//! # let _ = headers;
//! ```
//!
//! # Reading headers
//!
//! ```
//! use kafka_kit::headers::{HeaderReader, Headers};
//!
//! # fn main() -> Result<(), kafka_kit::headers::HeaderError> {
//! let owned = Headers::new().schema_version("v1.0").timestamp_millis(1736937000123).into_inner();
//! // With a consumed message: `HeaderReader::new(msg.headers())`.
//! let reader = HeaderReader::new(Some(&owned));
//! assert_eq!(reader.schema_version()?, Some("v1.0"));
//! assert_eq!(reader.timestamp_millis()?, Some(1736937000123));
//! assert_eq!(reader.event_type()?, None);
//! # Ok(())
//! # }
//! ```
//!
//! # W3C trace context
//!
//! ```
//! use kafka_kit::headers::{HeaderReader, Headers, TraceParent};
//!
//! # fn main() -> Result<(), kafka_kit::headers::HeaderError> {
//! let incoming: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".parse()?;
//! // Continue the same trace under a new span.
//! let owned = Headers::new().traceparent(&incoming.child()).into_inner();
//!
//! let read = HeaderReader::new(Some(&owned)).traceparent()?.unwrap();
//! assert_eq!(read.trace_id(), incoming.trace_id());
//! assert!(read.is_sampled());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::message::{BorrowedHeaders, Header, Headers as KafkaHeaders, OwnedHeaders};
use uuid::Uuid;

/// Names of the standard headers, as used by the project's Python tutorial.
pub mod names {
    /// Trace identifier, e.g. a hyphenated UUID v4.
    pub const TRACE_ID: &str = "trace_id";
    /// Span identifier.
    pub const SPAN_ID: &str = "span_id";
    /// Version of the payload schema, e.g. `"v1.0"`.
    pub const SCHEMA_VERSION: &str = "schema_ver";
    /// Kind of event carried by the message, e.g. `"order_created"`.
    pub const EVENT_TYPE: &str = "event_type";
    /// Name of the producing service.
    pub const SOURCE: &str = "source";
    /// Milliseconds since the Unix epoch as decimal ASCII text, e.g. `"1736937000123"`.
    pub const TIMESTAMP: &str = "timestamp";
    /// W3C Trace Context `traceparent`, see [`TraceParent`](super::TraceParent).
    pub const TRACEPARENT: &str = "traceparent";
}

/// Error reading a header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The header value is not valid UTF-8.
    #[error("header `{name}` is not valid UTF-8")]
    NotUtf8 {
        /// Header name.
        name: String,
    },
    /// The header value is UTF-8 but not in the expected format.
    #[error("header `{name}` is invalid: {reason}")]
    Invalid {
        /// Header name.
        name: String,
        /// What is wrong with the value.
        reason: String,
    },
}

impl HeaderError {
    fn invalid(name: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Builder of message headers, producing an rdkafka [`OwnedHeaders`].
///
/// Setters never fail. Setting a header twice appends a second entry (Kafka
/// allows duplicates); [`HeaderReader`] reads the last one.
#[must_use = "headers do nothing until they are set on a record"]
#[derive(Clone, Default)]
pub struct Headers {
    inner: OwnedHeaders,
}

impl Headers {
    /// Creates an empty set of headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates an empty set of headers with room for `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: OwnedHeaders::new_with_capacity(capacity),
        }
    }

    /// Appends a header with any name and value.
    pub fn insert(self, name: &str, value: impl AsRef<[u8]>) -> Self {
        let header = Header {
            key: name,
            value: Some(value.as_ref()),
        };
        Self {
            inner: self.inner.insert(header),
        }
    }

    /// Appends a header with no value (a Kafka `null` header).
    pub fn insert_null(self, name: &str) -> Self {
        let header = Header::<&[u8]> {
            key: name,
            value: None,
        };
        Self {
            inner: self.inner.insert(header),
        }
    }

    /// Sets [`names::TRACE_ID`].
    pub fn trace_id(self, trace_id: impl AsRef<str>) -> Self {
        self.insert(names::TRACE_ID, trace_id.as_ref())
    }

    /// Sets [`names::TRACE_ID`] to a fresh UUID v4, hyphenated lowercase
    /// (like Python's `str(uuid.uuid4())`).
    pub fn new_trace_id(self) -> Self {
        self.trace_id(Uuid::new_v4().to_string())
    }

    /// Sets [`names::SPAN_ID`].
    pub fn span_id(self, span_id: impl AsRef<str>) -> Self {
        self.insert(names::SPAN_ID, span_id.as_ref())
    }

    /// Sets [`names::SCHEMA_VERSION`].
    pub fn schema_version(self, version: impl AsRef<str>) -> Self {
        self.insert(names::SCHEMA_VERSION, version.as_ref())
    }

    /// Sets [`names::EVENT_TYPE`].
    pub fn event_type(self, event_type: impl AsRef<str>) -> Self {
        self.insert(names::EVENT_TYPE, event_type.as_ref())
    }

    /// Sets [`names::SOURCE`].
    pub fn source(self, source: impl AsRef<str>) -> Self {
        self.insert(names::SOURCE, source.as_ref())
    }

    /// Sets [`names::TIMESTAMP`] from a [`SystemTime`], in whole milliseconds
    /// (rounded down; times before the epoch are negative, far times saturate).
    pub fn timestamp(self, time: SystemTime) -> Self {
        self.timestamp_millis(crate::unix_millis(time))
    }

    /// Sets [`names::TIMESTAMP`] to `millis` since the Unix epoch.
    pub fn timestamp_millis(self, millis: i64) -> Self {
        self.insert(names::TIMESTAMP, millis.to_string())
    }

    /// Sets [`names::TIMESTAMP`] to the current time.
    pub fn timestamp_now(self) -> Self {
        self.timestamp(SystemTime::now())
    }

    /// Sets [`names::TRACEPARENT`].
    pub fn traceparent(self, traceparent: &TraceParent) -> Self {
        self.insert(names::TRACEPARENT, traceparent.to_string())
    }

    /// Number of entries, duplicates included.
    pub fn len(&self) -> usize {
        self.inner.count()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the rdkafka headers.
    pub fn into_inner(self) -> OwnedHeaders {
        self.inner
    }

    /// Borrows the rdkafka headers.
    pub fn as_inner(&self) -> &OwnedHeaders {
        &self.inner
    }
}

impl From<Headers> for OwnedHeaders {
    fn from(headers: Headers) -> Self {
        headers.inner
    }
}

impl From<OwnedHeaders> for Headers {
    fn from(inner: OwnedHeaders) -> Self {
        Self { inner }
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_entries(f, "Headers", HeaderReader::new(Some(&self.inner)).iter())
    }
}

/// Typed, read-only view of a message's headers.
///
/// Construction does not allocate. Lookups scan from the end, so the last
/// occurrence of a name wins. Headers whose name is not UTF-8 are skipped.
pub struct HeaderReader<'a, H: ?Sized = BorrowedHeaders> {
    headers: Option<&'a H>,
}

/// Shorthand for [`HeaderReader::new`].
pub fn read<H: KafkaHeaders + ?Sized>(headers: Option<&H>) -> HeaderReader<'_, H> {
    HeaderReader::new(headers)
}

impl<'a, H: KafkaHeaders + ?Sized> HeaderReader<'a, H> {
    /// Wraps the headers of a message, e.g. `HeaderReader::new(msg.headers())`.
    pub fn new(headers: Option<&'a H>) -> Self {
        Self { headers }
    }

    /// Iterates over `(name, value)` pairs in order; `None` is a null value.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        let headers = self.headers;
        let count = headers.map_or(0, rdkafka::message::Headers::count);
        (0..count).filter_map(move |idx| entry(headers?, idx))
    }

    /// Raw value of the last `name` header; `None` if missing or null.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.last(name).flatten()
    }

    /// Whether a `name` header is present (even with a null value).
    pub fn contains(&self, name: &str) -> bool {
        self.last(name).is_some()
    }

    /// Value of the last `name` header as text.
    pub fn get_str(&self, name: &str) -> Result<Option<&'a str>, HeaderError> {
        self.get(name)
            .map(|value| {
                std::str::from_utf8(value).map_err(|_| HeaderError::NotUtf8 {
                    name: name.to_owned(),
                })
            })
            .transpose()
    }

    /// Reads [`names::TRACE_ID`].
    pub fn trace_id(&self) -> Result<Option<&'a str>, HeaderError> {
        self.get_str(names::TRACE_ID)
    }

    /// Reads [`names::SPAN_ID`].
    pub fn span_id(&self) -> Result<Option<&'a str>, HeaderError> {
        self.get_str(names::SPAN_ID)
    }

    /// Reads [`names::SCHEMA_VERSION`].
    pub fn schema_version(&self) -> Result<Option<&'a str>, HeaderError> {
        self.get_str(names::SCHEMA_VERSION)
    }

    /// Reads [`names::EVENT_TYPE`].
    pub fn event_type(&self) -> Result<Option<&'a str>, HeaderError> {
        self.get_str(names::EVENT_TYPE)
    }

    /// Reads [`names::SOURCE`].
    pub fn source(&self) -> Result<Option<&'a str>, HeaderError> {
        self.get_str(names::SOURCE)
    }

    /// Reads [`names::TIMESTAMP`] as milliseconds since the Unix epoch.
    pub fn timestamp_millis(&self) -> Result<Option<i64>, HeaderError> {
        let Some(text) = self.get_str(names::TIMESTAMP)? else {
            return Ok(None);
        };
        text.parse().map(Some).map_err(|err| {
            HeaderError::invalid(
                names::TIMESTAMP,
                format!("expected decimal milliseconds since the Unix epoch: {err}"),
            )
        })
    }

    /// Reads [`names::TIMESTAMP`] as a [`SystemTime`].
    pub fn timestamp(&self) -> Result<Option<SystemTime>, HeaderError> {
        let Some(millis) = self.timestamp_millis()? else {
            return Ok(None);
        };
        let offset = Duration::from_millis(millis.unsigned_abs());
        let time = if millis >= 0 {
            UNIX_EPOCH.checked_add(offset)
        } else {
            UNIX_EPOCH.checked_sub(offset)
        };
        time.map(Some)
            .ok_or_else(|| HeaderError::invalid(names::TIMESTAMP, "out of range for SystemTime"))
    }

    /// Reads and parses [`names::TRACEPARENT`].
    pub fn traceparent(&self) -> Result<Option<TraceParent>, HeaderError> {
        self.get_str(names::TRACEPARENT)?
            .map(str::parse)
            .transpose()
    }

    /// The last `name` header: `Some(value)` if present, where `value` may be null.
    fn last(&self, name: &str) -> Option<Option<&'a [u8]>> {
        self.iter()
            .rev()
            .find(|&(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

impl<H: ?Sized> Clone for HeaderReader<'_, H> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<H: ?Sized> Copy for HeaderReader<'_, H> {}

impl<H: KafkaHeaders + ?Sized> fmt::Debug for HeaderReader<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_entries(f, "HeaderReader", self.iter())
    }
}

/// The header at `idx`, or `None` if out of range or its name is not UTF-8.
fn entry<H: KafkaHeaders + ?Sized>(headers: &H, idx: usize) -> Option<(&str, Option<&[u8]>)> {
    // rdkafka 0.39's `BorrowedHeaders::try_get` (which `get`, `iter` and
    // `OwnedHeaders` all go through) unwraps `CStr::to_str` on the name, and
    // there is no non-panicking accessor short of unsafe FFI. Contain that
    // panic here; the default panic hook still prints it to stderr, and a
    // binary built with `panic = "abort"` still aborts.
    panic::catch_unwind(AssertUnwindSafe(move || headers.try_get(idx)))
        .ok()
        .flatten()
        .map(|header| (header.key, header.value))
}

/// Writes `Name { key: "value", .. }`, values as lossy UTF-8 cut after 64 bytes.
fn debug_entries<'a>(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    entries: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> fmt::Result {
    struct Value<'a>(Option<&'a [u8]>);

    impl fmt::Debug for Value<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            const MAX: usize = 64;
            let Some(bytes) = self.0 else {
                return f.write_str("null");
            };
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]);
            if bytes.len() > MAX {
                fmt::Debug::fmt(&format!("{text}…"), f)
            } else {
                fmt::Debug::fmt(&text, f)
            }
        }
    }

    let mut out = f.debug_struct(name);
    for (key, value) in entries {
        out.field(key, &Value(value));
    }
    out.finish()
}

/// W3C Trace Context `traceparent` header, version `00`.
///
/// Canonical form: `00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>`,
/// lowercase. Parsing accepts higher versions for forward compatibility;
/// [`Display`](fmt::Display) always writes version `00`.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug)]
pub struct TraceParent {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

impl TraceParent {
    /// Builds a trace parent; `None` if `trace_id` or `parent_id` is all zeros.
    pub fn new(trace_id: [u8; 16], parent_id: [u8; 8], flags: u8) -> Option<Self> {
        let valid = trace_id != [0; 16] && parent_id != [0; 8];
        valid.then_some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// Starts a new trace with random ids.
    pub fn random(sampled: bool) -> Self {
        Self {
            // A UUID v4 has fixed version bits, so it is never all zeros.
            trace_id: Uuid::new_v4().into_bytes(),
            parent_id: random_parent_id(),
            flags: u8::from(sampled),
        }
    }

    /// A child span: same trace id and flags, new random parent id.
    pub fn child(&self) -> Self {
        Self {
            parent_id: random_parent_id(),
            ..*self
        }
    }

    /// The 16-byte trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        self.trace_id
    }

    /// The 8-byte parent (span) id.
    pub fn parent_id(&self) -> [u8; 8] {
        self.parent_id
    }

    /// The trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the `sampled` flag (bit 0) is set.
    pub fn is_sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// The last 8 bytes of a UUID v4: 62 random bits, never all zeros (variant bits).
fn random_parent_id() -> [u8; 8] {
    let bytes = Uuid::new_v4().into_bytes();
    let mut id = [0; 8];
    id.copy_from_slice(&bytes[8..]);
    id
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        crate::write_hex(f, &self.trace_id)?;
        f.write_str("-")?;
        crate::write_hex(f, &self.parent_id)?;
        f.write_str("-")?;
        crate::write_hex(f, &[self.flags])
    }
}

impl FromStr for TraceParent {
    type Err = HeaderError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| HeaderError::invalid(names::TRACEPARENT, reason);
        let s = s.as_bytes();
        if s.len() < 55 {
            return Err(invalid("expected 55 characters"));
        }
        let [version] = hex(&s[0..2]).ok_or_else(|| invalid("bad version"))?;
        match version {
            0xff => return Err(invalid("version ff is forbidden")),
            0 if s.len() != 55 => return Err(invalid("expected 55 characters")),
            // Forward compatibility: later versions only append `-...` fields.
            _ if s.len() > 55 && s[55] != b'-' => return Err(invalid("bad field separator")),
            _ => {}
        }
        if [s[2], s[35], s[52]] != [b'-'; 3] {
            return Err(invalid("bad field separator"));
        }
        let trace_id =
            hex(&s[3..35]).ok_or_else(|| invalid("trace-id is not 32 lowercase hex digits"))?;
        let parent_id =
            hex(&s[36..52]).ok_or_else(|| invalid("parent-id is not 16 lowercase hex digits"))?;
        let [flags] =
            hex(&s[53..55]).ok_or_else(|| invalid("flags are not 2 lowercase hex digits"))?;
        Self::new(trace_id, parent_id, flags)
            .ok_or_else(|| invalid("all-zero trace-id or parent-id"))
    }
}

/// Decodes exactly `2 * N` lowercase hex digits.
fn hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC_EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn reader(headers: &OwnedHeaders) -> HeaderReader<'_, OwnedHeaders> {
        HeaderReader::new(Some(headers))
    }

    #[test]
    fn standard_headers_round_trip() {
        let tp: TraceParent = SPEC_EXAMPLE.parse().unwrap();
        let owned: OwnedHeaders = Headers::new()
            .trace_id("t-1")
            .span_id("s-1")
            .schema_version("v1.0")
            .event_type("order_created")
            .source("checkout")
            .timestamp_millis(1736937000123)
            .traceparent(&tp)
            .into();
        assert_eq!(owned.count(), 7);

        let r = reader(&owned);
        assert_eq!(r.trace_id(), Ok(Some("t-1")));
        assert_eq!(r.span_id(), Ok(Some("s-1")));
        assert_eq!(r.schema_version(), Ok(Some("v1.0")));
        assert_eq!(r.event_type(), Ok(Some("order_created")));
        assert_eq!(r.source(), Ok(Some("checkout")));
        assert_eq!(r.timestamp_millis(), Ok(Some(1736937000123)));
        assert_eq!(
            r.timestamp(),
            Ok(Some(UNIX_EPOCH + Duration::from_millis(1736937000123)))
        );
        assert_eq!(r.traceparent(), Ok(Some(tp)));
        assert_eq!(r.get(names::TIMESTAMP), Some(&b"1736937000123"[..]));

        // Wire format matches the Python tutorial.
        let wire: Vec<_> = r.iter().collect();
        assert_eq!(wire[2], ("schema_ver", Some(&b"v1.0"[..])));
        assert_eq!(wire[6], ("traceparent", Some(SPEC_EXAMPLE.as_bytes())));
    }

    #[test]
    fn borrowed_headers_and_free_fn() {
        let owned = Headers::new().source("a").into_inner();
        let borrowed: &BorrowedHeaders = owned.as_borrowed();
        assert_eq!(HeaderReader::new(Some(borrowed)).source(), Ok(Some("a")));
        assert_eq!(read(Some(&owned)).source(), Ok(Some("a")));
        assert_eq!(read::<BorrowedHeaders>(None).source(), Ok(None));
    }

    #[test]
    fn last_occurrence_wins() {
        let owned = Headers::new()
            .event_type("first")
            .source("x")
            .event_type("second")
            .into_inner();
        assert_eq!(owned.count(), 3);
        assert_eq!(reader(&owned).event_type(), Ok(Some("second")));

        // A trailing null entry hides earlier values.
        let owned = Headers::new()
            .source("x")
            .insert_null(names::SOURCE)
            .into_inner();
        let r = reader(&owned);
        assert_eq!(r.get(names::SOURCE), None);
        assert!(r.contains(names::SOURCE));
    }

    #[test]
    fn missing_headers_are_none() {
        let owned = Headers::new().insert("other", "x").into_inner();
        let r = reader(&owned);
        assert_eq!(r.trace_id(), Ok(None));
        assert_eq!(r.timestamp(), Ok(None));
        assert_eq!(r.traceparent(), Ok(None));
        assert!(!r.contains(names::TRACE_ID));
        assert!(r.contains("other"));

        let none = HeaderReader::<OwnedHeaders>::new(None);
        assert_eq!(none.schema_version(), Ok(None));
        assert_eq!(none.iter().count(), 0);
    }

    #[test]
    fn non_utf8_value_is_an_error() {
        let owned = Headers::new()
            .insert(names::SOURCE, [0xffu8, 0xfe])
            .into_inner();
        let r = reader(&owned);
        assert_eq!(
            r.source(),
            Err(HeaderError::NotUtf8 {
                name: "source".into()
            })
        );
        assert_eq!(r.get(names::SOURCE), Some(&[0xff, 0xfe][..]));
        assert_eq!(
            r.source().unwrap_err().to_string(),
            "header `source` is not valid UTF-8"
        );
    }

    #[test]
    fn bad_timestamp_is_invalid() {
        for bad in ["", "12.5", "soon", "99999999999999999999"] {
            let owned = Headers::new().insert(names::TIMESTAMP, bad).into_inner();
            let err = reader(&owned).timestamp().unwrap_err();
            assert!(
                matches!(&err, HeaderError::Invalid { name, .. } if name == "timestamp"),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn timestamps_before_epoch_round_trip() {
        let before = UNIX_EPOCH - Duration::from_millis(1500);
        let owned = Headers::new().timestamp(before).into_inner();
        assert_eq!(reader(&owned).timestamp_millis(), Ok(Some(-1500)));
        assert_eq!(reader(&owned).timestamp(), Ok(Some(before)));

        // Sub-millisecond parts round down, also before the epoch.
        let owned = Headers::new()
            .timestamp(UNIX_EPOCH - Duration::from_micros(1500))
            .into_inner();
        assert_eq!(reader(&owned).timestamp_millis(), Ok(Some(-2)));
        let owned = Headers::new()
            .timestamp(UNIX_EPOCH + Duration::from_micros(1500))
            .into_inner();
        assert_eq!(reader(&owned).timestamp_millis(), Ok(Some(1)));
    }

    #[test]
    fn timestamp_now_is_recent() {
        let start = SystemTime::now() - Duration::from_millis(1);
        let owned = Headers::new().timestamp_now().into_inner();
        let read = reader(&owned).timestamp().unwrap().unwrap();
        assert!(read >= start && read <= SystemTime::now());
    }

    #[test]
    fn traceparent_parses_spec_example() {
        let tp: TraceParent = SPEC_EXAMPLE.parse().unwrap();
        assert_eq!(
            tp.trace_id(),
            [
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36
            ]
        );
        assert_eq!(
            tp.parent_id(),
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(tp.flags(), 1);
        assert!(tp.is_sampled());
        assert_eq!(tp.to_string(), SPEC_EXAMPLE);
    }

    #[test]
    fn traceparent_rejects_invalid_input() {
        let rejected = [
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", // uppercase
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A", // uppercase flags
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace-id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent-id
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",  // too short
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", // too long for 00
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7001", // missing dash
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01", // wrong separators
            "004bf92f3577b34da6a3ce929d0e0e473600f067aa0ba902b701",    // no dashes
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // bad version
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", // bad extension
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01", // non-ASCII
            "",
        ];
        for s in rejected {
            let err = s.parse::<TraceParent>().unwrap_err();
            assert!(
                matches!(&err, HeaderError::Invalid { name, .. } if name == "traceparent"),
                "{s:?}: {err:?}"
            );
        }
    }

    #[test]
    fn traceparent_accepts_future_versions() {
        let tp: TraceParent = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
            .parse()
            .unwrap();
        assert_eq!(tp.to_string(), SPEC_EXAMPLE);
        assert!("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
            .parse::<TraceParent>()
            .is_ok());
    }

    #[test]
    fn traceparent_constructors() {
        assert_eq!(TraceParent::new([0; 16], [1; 8], 0), None);
        assert_eq!(TraceParent::new([1; 16], [0; 8], 0), None);
        let tp = TraceParent::new([0xab; 16], [0x01; 8], 0).unwrap();
        assert!(!tp.is_sampled());
        assert_eq!(tp.to_string().parse(), Ok(tp));

        let random = TraceParent::random(true);
        assert!(random.is_sampled());
        assert!(!TraceParent::random(false).is_sampled());
        assert_ne!(random, TraceParent::random(true));
        assert_eq!(random.to_string().parse(), Ok(random));

        let child = random.child();
        assert_eq!(child.trace_id(), random.trace_id());
        assert_eq!(child.flags(), random.flags());
        assert_ne!(child.parent_id(), random.parent_id());
    }

    #[test]
    fn new_trace_id_is_a_hyphenated_uuid() {
        let owned = Headers::new().new_trace_id().into_inner();
        let id = reader(&owned).trace_id().unwrap().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(id, id.to_lowercase());
        let uuid = Uuid::parse_str(id).unwrap();
        assert_eq!(uuid.get_version_num(), 4);
        assert_eq!(uuid.hyphenated().to_string(), id);
    }

    #[test]
    fn debug_shows_values_and_truncates() {
        let headers = Headers::new()
            .source("checkout")
            .insert("blob", "x".repeat(100))
            .insert_null("empty");
        let debug = format!("{headers:?}");
        let expected = format!(
            "Headers {{ source: \"checkout\", blob: \"{}…\", empty: null }}",
            "x".repeat(64)
        );
        assert_eq!(debug, expected);
        assert_eq!(
            format!("{:?}", reader(headers.as_inner())),
            expected.replacen("Headers", "HeaderReader", 1)
        );
        assert_eq!(format!("{:?}", Headers::new()), "Headers");
    }

    #[test]
    fn builder_conversions_and_len() {
        let headers = Headers::with_capacity(2);
        assert!(headers.is_empty());
        let headers = headers.source("a").insert_null("b");
        assert_eq!(headers.len(), 2);
        let back = Headers::from(OwnedHeaders::from(headers.clone()));
        assert_eq!(format!("{back:?}"), format!("{headers:?}"));
    }

    /// Mimics rdkafka's `BorrowedHeaders::try_get`, which panics when a
    /// header name received from the broker is not UTF-8.
    struct BadNameHeaders;

    impl KafkaHeaders for BadNameHeaders {
        fn count(&self) -> usize {
            3
        }

        fn try_get(&self, idx: usize) -> Option<Header<'_, &[u8]>> {
            match idx {
                0 => Some(Header {
                    key: "source",
                    value: Some(b"ok"),
                }),
                1 => Some(Header {
                    key: c"bad\xff".to_str().unwrap(),
                    value: Some(b"x"),
                }),
                2 => Some(Header {
                    key: "event_type",
                    value: Some(b"e"),
                }),
                _ => None,
            }
        }
    }

    #[test]
    fn non_utf8_header_name_does_not_panic() {
        let r = HeaderReader::new(Some(&BadNameHeaders));
        assert_eq!(r.source(), Ok(Some("ok")));
        assert_eq!(r.event_type(), Ok(Some("e")));
        assert!(!r.contains("bad"));
        let names: Vec<_> = r.iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["source", "event_type"]);
        assert_eq!(
            format!("{r:?}"),
            r#"HeaderReader { source: "ok", event_type: "e" }"#
        );
    }
}
