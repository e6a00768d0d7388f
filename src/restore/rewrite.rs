//! Schema ID rewriting: where the target registry gave a schema another ID, the 4-byte ID after
//! the 0x00 magic byte of every wire-format key and value, and of every `__key_schema_id` and
//! `__value_schema_id` header in the ID form (Confluent 8 serializers that put the ID in a
//! header), is rewritten in place, in the decompressed chunk, before the record is produced.
//! GUID-form headers name the schema by content, which a restore does not change: they are
//! counted. Nothing else in the record changes.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::format::FormatError;
use crate::format::chunk::{RecordAt, RecordPositions};
use crate::registry::wire;

/// Source schema ID → target schema ID, and the set of IDs the archive knows.
#[derive(Debug, Clone, Default)]
pub struct IdMap {
    map: HashMap<u32, u32>,
    known: HashSet<u32>,
}

impl IdMap {
    pub fn new(
        map: impl IntoIterator<Item = (u32, u32)>,
        known: impl IntoIterator<Item = u32>,
    ) -> Self {
        IdMap {
            map: map.into_iter().collect(),
            known: known.into_iter().collect(),
        }
    }

    pub fn get(&self, source: u32) -> Option<u32> {
        self.map.get(&source).copied()
    }

    /// Whether any ID changes: without changes, chunks are produced as they are.
    pub fn changes_anything(&self) -> bool {
        self.map.iter().any(|(s, t)| s != t)
    }

    pub fn pairs(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.map.iter().map(|(s, t)| (*s, *t))
    }
}

/// At most this many distinct GUIDs are kept per partition for the check on the target.
pub const GUIDS_KEPT: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewriteStats {
    /// Keys and values whose schema ID was rewritten.
    pub rewritten: u64,
    /// Keys, values and ID headers that look like wire format but name an ID the archive does
    /// not hold; they are left as they are.
    pub unknown_ids: u64,
    /// Schema ID headers (ID form) whose ID was rewritten.
    pub header_rewritten: u64,
    /// Schema ID headers in the GUID form, left as they are.
    pub header_guids: u64,
    /// The distinct GUIDs they name (the first [`GUIDS_KEPT`]), to check on the target.
    pub guids: BTreeSet<[u8; 16]>,
}

/// Rewrites, in place in the decompressed chunk `buf`, the schema IDs of one record's key and
/// value, and of its schema ID headers, where the mapping changes them.
pub fn rewrite_record(buf: &mut [u8], at: &RecordAt, ids: &IdMap, stats: &mut RewriteStats) {
    for range in [&at.key, &at.value].into_iter().flatten() {
        if rewrite_field(&mut buf[range.clone()], ids, stats) {
            stats.rewritten += 1;
        }
    }
    let names = [wire::KEY_SCHEMA_ID_HEADER, wire::VALUE_SCHEMA_ID_HEADER];
    for range in at.header_values(buf, &names) {
        let field = &mut buf[range];
        if let Some(g) = wire::schema_guid(field) {
            stats.header_guids += 1;
            if stats.guids.len() < GUIDS_KEPT {
                stats.guids.insert(g);
            }
        } else if rewrite_field(field, ids, stats) {
            stats.header_rewritten += 1;
        }
    }
}

/// Rewrites one wire-format field's ID where the mapping changes it; true if it did.
fn rewrite_field(field: &mut [u8], ids: &IdMap, stats: &mut RewriteStats) -> bool {
    let Some(id) = wire::schema_id(field) else {
        return false;
    };
    match ids.get(id) {
        Some(new) if new != id => {
            wire::replace_schema_id(field, new);
            return true;
        }
        Some(_) => {}
        None if !ids.known.contains(&id) => stats.unknown_ids += 1,
        None => {}
    }
    false
}

/// Rewrites the schema IDs of every record in a decompressed chunk in place.
pub fn rewrite_chunk(buf: &mut [u8], ids: &IdMap) -> Result<RewriteStats, FormatError> {
    let mut stats = RewriteStats::default();
    let mut positions = RecordPositions::new(buf, 0)?;
    while let Some(at) = positions.next_in(buf) {
        rewrite_record(buf, &at?, ids, &mut stats);
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::chunk::{ChunkEncoder, ChunkRecords, TimestampType};

    #[test]
    fn rewrites_only_mapped_ids_in_keys_and_values() {
        let mut e = ChunkEncoder::new("t", 0).unwrap();
        let v1 = [&wire::header(5)[..], b"payload-5"].concat();
        let k1 = [&wire::header(6)[..], b"key-6"].concat();
        let unknown = [&wire::header(99)[..], b"?"].concat();
        e.push(
            0,
            1,
            TimestampType::CreateTime,
            Some(&k1),
            Some(&v1),
            [("h", Some(&wire::header(5)[..]))],
        )
        .unwrap();
        e.push(1, 2, TimestampType::CreateTime, None, Some(&unknown), [])
            .unwrap();
        e.push(
            2,
            3,
            TimestampType::CreateTime,
            Some(b"\x00\x00"),
            Some(b"plain"),
            [],
        )
        .unwrap();
        let (_, mut raw) = e.finish(0..3).unwrap();
        let ids = IdMap::new([(5, 500), (6, 6)], [5, 6]);
        let stats = rewrite_chunk(&mut raw, &ids).unwrap();
        assert_eq!(
            stats,
            RewriteStats {
                rewritten: 1,
                unknown_ids: 1,
                ..Default::default()
            }
        );
        let recs: Vec<_> = ChunkRecords::new(&raw, 0)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            recs[0].value.unwrap(),
            [&wire::header(500)[..], b"payload-5"].concat()
        );
        assert_eq!(
            recs[0].key.unwrap(),
            k1,
            "an ID that maps to itself is left alone"
        );
        assert_eq!(
            recs[0].headers.iter().next().unwrap().1.unwrap(),
            wire::header(5),
            "other headers are not rewritten"
        );
        assert_eq!(recs[1].value.unwrap(), unknown);
        assert_eq!(recs[2].value.unwrap(), b"plain");
    }

    #[test]
    fn rewrites_id_headers_and_counts_guid_headers() {
        let mut e = ChunkEncoder::new("t", 0).unwrap();
        let guid = [&[wire::GUID_MAGIC][..], &[0xab; 16], &[0x02, 0x04]].concat();
        let id_form = [&wire::header(5)[..], &[0x00]].concat(); // then a Protobuf index
        e.push(
            0,
            1,
            TimestampType::CreateTime,
            Some(b"plain key"),
            Some(b"raw avro"),
            [
                ("__value_schema_id", Some(&id_form[..])),
                ("other", Some(&wire::header(5)[..])),
                ("__key_schema_id", Some(&guid[..])),
                ("__value_schema_id", None),
                ("__value_schema_id", Some(&wire::header(77)[..])),
            ],
        )
        .unwrap();
        let (_, mut raw) = e.finish(0..1).unwrap();
        let stats = rewrite_chunk(&mut raw, &IdMap::new([(5, 500)], [5])).unwrap();
        assert_eq!(
            stats,
            RewriteStats {
                rewritten: 0,
                unknown_ids: 1,
                header_rewritten: 1,
                header_guids: 1,
                guids: [[0xab; 16]].into(),
            }
        );
        let recs: Vec<_> = ChunkRecords::new(&raw, 0)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let h: Vec<(&str, Option<&[u8]>)> = recs[0].headers.iter().collect();
        assert_eq!(h[0].1.unwrap(), [&wire::header(500)[..], &[0x00]].concat());
        assert_eq!(h[1].1.unwrap(), wire::header(5), "only schema ID headers");
        assert_eq!(h[2].1.unwrap(), guid, "a GUID is left as it is");
        assert_eq!(h[3].1, None);
        assert_eq!(h[4].1.unwrap(), wire::header(77), "an unknown ID is left");
        assert_eq!(recs[0].value.unwrap(), b"raw avro");
    }
}
