//! Which offsets of a partition's snapshot range the archive accounts for. Each chunk states the
//! source offsets it covers (`covers_from..covers_to`, records and Kafka gaps alike), and the
//! chunks of a partition tile its snapshot range `start..end`. An offset no chunk covers is a
//! hole: a chunk that is not there. Verify reports holes, repair keeps only what continues without
//! one from the snapshot start (unless asked), and restore refuses a partition with a hole
//! (unless asked).

use std::ops::Range;

use serde::Serialize;

/// What the chunks of one partition cover, measured against its snapshot range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// Offset ranges inside the snapshot range that no chunk covers, in offset order: missing
    /// chunks. Only a complete partition's tail counts (an incomplete one ends where it ends).
    pub holes: Vec<Range<i64>>,
    /// Chunk coverages that overlap an earlier chunk's or reach outside the snapshot range: two
    /// chunks claim the same offsets, which no writer does.
    pub overlaps: Vec<Range<i64>>,
    /// Where coverage without a hole from the start ends (the start when nothing covers it).
    pub contiguous_to: Option<i64>,
}

impl Coverage {
    pub fn is_whole(&self) -> bool {
        self.holes.is_empty() && self.overlaps.is_empty()
    }
}

/// Checks the chunk coverages of one partition (in any order) against its snapshot range:
/// `start`/`end` as the manifest declares them (`None` when unknown: coverage then starts at the
/// first chunk and the tail is not checked), `complete` when the whole range is claimed. A
/// partition without chunks is not checked: a range with no record has none to chunk (whether
/// records are missing is for the manifest's record count to say).
pub fn check(
    covers: impl IntoIterator<Item = Range<i64>>,
    start: Option<i64>,
    end: Option<i64>,
    complete: bool,
) -> Coverage {
    let mut covers: Vec<Range<i64>> = covers.into_iter().collect();
    covers.sort_by_key(|r| (r.start, r.end));
    let mut out = Coverage::default();
    if covers.is_empty() {
        out.contiguous_to = start;
        return out;
    }
    let mut at = start.or(covers.first().map(|r| r.start));
    let mut contiguous = true;
    for r in covers {
        let Some(pos) = at else { break };
        if r.start < pos || end.is_some_and(|e| r.end > e) {
            out.overlaps.push(r.clone());
        } else if r.start > pos {
            out.holes.push(pos..r.start);
            if contiguous {
                out.contiguous_to = Some(pos);
                contiguous = false;
            }
        }
        at = Some(pos.max(r.end));
    }
    if let (Some(pos), Some(e), true) = (at, end, complete)
        && pos < e
    {
        out.holes.push(pos..e);
        if contiguous {
            out.contiguous_to = Some(pos);
            contiguous = false;
        }
    }
    if contiguous {
        out.contiguous_to = at;
    }
    out
}

/// Offset ranges as `a..b, c..d` for messages.
pub fn describe(ranges: &[Range<i64>]) -> String {
    ranges
        .iter()
        .map(|r| format!("{}..{}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_that_tile_the_range_are_whole() {
        let c = check([20..35, 0..20, 35..50], Some(0), Some(50), true);
        assert!(c.is_whole(), "{c:?}");
        assert_eq!(c.contiguous_to, Some(50));
        // Incomplete: the tail is open, not a hole.
        let c = check(std::iter::once(0..20), Some(0), Some(50), false);
        assert!(c.is_whole());
        assert_eq!(c.contiguous_to, Some(20));
    }

    #[test]
    fn a_missing_chunk_is_a_hole_wherever_it_was() {
        let c = check([0..20, 35..50], Some(0), Some(50), true);
        assert_eq!(c.holes, vec![20..35]);
        assert_eq!(c.contiguous_to, Some(20));
        let c = check(std::iter::once(20..50), Some(0), Some(50), true);
        assert_eq!(c.holes, vec![0..20]);
        assert_eq!(c.contiguous_to, Some(0));
        // The last chunk of a complete partition.
        let c = check(std::iter::once(0..20), Some(0), Some(50), true);
        assert_eq!(c.holes, vec![20..50]);
        // Without a known start, coverage starts at the first chunk.
        let c = check([5..20, 30..40], None, None, false);
        assert_eq!(c.holes, vec![20..30]);
        assert_eq!(c.contiguous_to, Some(20));
        // A complete partition with no chunk (no records in its range) has no hole.
        assert!(check([], Some(0), Some(50), true).is_whole());
    }

    #[test]
    fn overlapping_chunks_are_flagged() {
        let c = check([0..20, 10..30], Some(0), Some(30), true);
        assert_eq!(c.overlaps, vec![10..30]);
        let c = check(std::iter::once(0..60), Some(0), Some(50), true);
        assert_eq!(c.overlaps, vec![0..60]);
    }
}
