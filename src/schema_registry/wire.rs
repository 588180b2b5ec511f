//! The Confluent wire format: how a schema-registry client frames a value.
//!
//! Every value written through a Confluent-compatible serializer (Java, Python, Go, .NET, and
//! kafka-kit) starts with five bytes:
//!
//! | byte | meaning |
//! |---|---|
//! | 0 | magic byte, always `0` |
//! | 1..5 | the schema id the registry gave the writer's schema, big-endian `u32` |
//! | 5.. | the payload: Avro binary, or JSON text |
//!
//! A reader takes the id, asks the registry (once: ids are cached) for that schema, and decodes the
//! payload with it. Anything else (fewer than five bytes, another magic byte) is not a
//! registry-framed value, and is refused with a [`SchemaRegistryError`].
//!
//! ```
//! use kafka_kit::schema_registry::wire::{self, Framed};
//!
//! let bytes = wire::encode(42, b"payload");
//! assert_eq!(&bytes[..5], &[0, 0, 0, 0, 42]);
//! let framed = Framed::decode(&bytes)?;
//! assert_eq!((framed.schema_id, framed.payload), (42, &b"payload"[..]));
//!
//! assert!(Framed::decode(b"{\"plain\":\"json\"}").is_err()); // wrong magic byte
//! # Ok::<(), kafka_kit::schema_registry::SchemaRegistryError>(())
//! ```

use super::SchemaRegistryError;

/// The first byte of every framed value.
pub const MAGIC_BYTE: u8 = 0;

/// Magic byte and schema id: what comes before the payload.
pub const HEADER_LEN: usize = 5;

/// Frames `payload` as written with schema `schema_id`.
pub fn encode(schema_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + payload.len());
    write_header(&mut bytes, schema_id);
    bytes.extend_from_slice(payload);
    bytes
}

/// Appends the five header bytes for `schema_id` to `out` (write the payload after them).
pub fn write_header(out: &mut Vec<u8>, schema_id: u32) {
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// A framed value, split into its schema id and its payload (borrowed, not copied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framed<'a> {
    /// The id of the schema the value was written with.
    pub schema_id: u32,
    /// The encoded value.
    pub payload: &'a [u8],
}

impl<'a> Framed<'a> {
    /// Splits `bytes`, or says why they are not a framed value.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, SchemaRegistryError> {
        let Some((header, payload)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(SchemaRegistryError::TooShort { len: bytes.len() });
        };
        if header[0] != MAGIC_BYTE {
            return Err(SchemaRegistryError::UnknownMagicByte { byte: header[0] });
        }
        let schema_id = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        Ok(Framed { schema_id, payload })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for id in [0, 1, 255, 256, 0x0102_0304, u32::MAX] {
            let bytes = encode(id, b"abc");
            assert_eq!(bytes.len(), 8);
            let framed = Framed::decode(&bytes).unwrap();
            assert_eq!(framed.schema_id, id);
            assert_eq!(framed.payload, b"abc");
        }
    }

    #[test]
    fn big_endian_id() {
        assert_eq!(encode(0x0102_0304, b""), [0, 1, 2, 3, 4]);
        let mut out = vec![9];
        write_header(&mut out, 7);
        assert_eq!(out, [9, 0, 0, 0, 0, 7]);
    }

    #[test]
    fn empty_payload_is_allowed() {
        let framed = Framed::decode(&[0, 0, 0, 0, 1]).unwrap();
        assert_eq!(framed.schema_id, 1);
        assert!(framed.payload.is_empty());
    }

    #[test]
    fn too_short() {
        for len in 0..HEADER_LEN {
            let bytes = vec![0; len];
            match Framed::decode(&bytes) {
                Err(SchemaRegistryError::TooShort { len: l }) => assert_eq!(l, len),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn wrong_magic() {
        let err = Framed::decode(b"{\"a\":1}").unwrap_err();
        assert!(
            matches!(err, SchemaRegistryError::UnknownMagicByte { byte: b'{' }),
            "{err:?}"
        );
        assert!(err.to_string().contains("magic byte"), "{err}");
        let err = Framed::decode(&[1, 0, 0, 0, 1, 2]).unwrap_err();
        assert!(matches!(
            err,
            SchemaRegistryError::UnknownMagicByte { byte: 1 }
        ));
    }
}
