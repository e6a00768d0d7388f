//! The Confluent wire format: a serialized key or value starts with the magic byte 0x00 and the
//! schema's global ID as a 4-byte **big-endian** integer, then the payload. This is the only place
//! in kar that reads or writes big-endian: everything in the archive format is little-endian.

/// The magic byte that starts a wire-format key or value.
pub const MAGIC: u8 = 0x00;
/// Length of the magic byte plus the schema ID.
pub const HEADER_LEN: usize = 5;
/// The magic byte of a schema GUID (Confluent 8): 0x01, then the GUID's 16 bytes.
pub const GUID_MAGIC: u8 = 0x01;
/// Record headers in which Confluent 8 serializers put the schema ID or GUID instead of the
/// payload prefix (`header_schema_id_serializer`); the same ID form (0x00 + 4-byte ID) or GUID
/// form (0x01 + 16 bytes), then Protobuf message indexes where present.
pub const KEY_SCHEMA_ID_HEADER: &str = "__key_schema_id";
pub const VALUE_SCHEMA_ID_HEADER: &str = "__value_schema_id";

/// A GUID as the registry names it (`GET /schemas/guids/{guid}`): 8-4-4-4-12 lower-case hex.
pub fn guid_text(g: &[u8; 16]) -> String {
    let h: String = g.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The GUID of a GUID-form schema ID header value.
pub fn schema_guid(bytes: &[u8]) -> Option<[u8; 16]> {
    match bytes {
        [GUID_MAGIC, rest @ ..] if rest.len() >= 16 => rest[..16].try_into().ok(),
        _ => None,
    }
}

/// The schema ID of a wire-format key or value, or `None` when the bytes do not start with the
/// magic byte or are too short to hold an ID.
pub fn schema_id(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [MAGIC, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

/// The 5-byte header that announces `id`.
pub fn header(id: u32) -> [u8; HEADER_LEN] {
    let [a, b, c, d] = id.to_be_bytes();
    [MAGIC, a, b, c, d]
}

/// Overwrites the schema ID of a wire-format key or value in place. Returns the old ID, or `None`
/// (and leaves the bytes alone) when they are not in the wire format.
pub fn replace_schema_id(bytes: &mut [u8], id: u32) -> Option<u32> {
    let old = schema_id(bytes)?;
    bytes[1..HEADER_LEN].copy_from_slice(&id.to_be_bytes());
    Some(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_big_endian_id_after_the_magic_byte() {
        assert_eq!(schema_id(&[0, 0, 0, 1, 2, 0xaa]), Some(258));
        assert_eq!(schema_id(&[0, 0x80, 0, 0, 0]), Some(0x8000_0000));
        assert_eq!(schema_id(&header(0xdead_beef)), Some(0xdead_beef));
    }

    #[test]
    fn ignores_bytes_that_are_not_wire_format() {
        assert_eq!(schema_id(b""), None);
        assert_eq!(
            schema_id(&[0, 0, 0, 1]),
            None,
            "4 bytes cannot hold magic + id"
        );
        assert_eq!(schema_id(b"{\"json\":1}"), None);
        assert_eq!(schema_id(&[1, 0, 0, 0, 1]), None);
    }

    #[test]
    fn replaces_only_the_id() {
        let mut v = [0, 0, 0, 0, 7, 9, 8, 7];
        assert_eq!(replace_schema_id(&mut v, 0x0102_0304), Some(7));
        assert_eq!(v, [0, 1, 2, 3, 4, 9, 8, 7]);
        let mut not_wire = *b"plain";
        assert_eq!(replace_schema_id(&mut not_wire, 5), None);
        assert_eq!(&not_wire, b"plain");
    }
}
