//! Schema ID rewriting: where the target registry gave a schema another ID, the 4-byte ID after
//! the 0x00 magic byte of every wire-format key and value is rewritten in place, in the
//! decompressed chunk, before the record is produced. Nothing else in the record changes.

use std::collections::{HashMap, HashSet};

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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteStats {
    /// Keys and values whose schema ID was rewritten.
    pub rewritten: u64,
    /// Keys and values that look like wire format but name an ID the archive does not hold; they
    /// are left as they are.
    pub unknown_ids: u64,
}

/// Rewrites, in place in the decompressed chunk `buf`, the schema IDs of one record's key and
/// value where the mapping changes them.
pub fn rewrite_record(buf: &mut [u8], at: &RecordAt, ids: &IdMap, stats: &mut RewriteStats) {
    for range in [&at.key, &at.value].into_iter().flatten() {
        let field = &mut buf[range.clone()];
        let Some(id) = wire::schema_id(field) else {
            continue;
        };
        match ids.get(id) {
            Some(new) if new != id => {
                wire::replace_schema_id(field, new);
                stats.rewritten += 1;
            }
            Some(_) => {}
            None if !ids.known.contains(&id) => stats.unknown_ids += 1,
            None => {}
        }
    }
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
                unknown_ids: 1
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
            "headers are not rewritten"
        );
        assert_eq!(recs[1].value.unwrap(), unknown);
        assert_eq!(recs[2].value.unwrap(), b"plain");
    }
}
