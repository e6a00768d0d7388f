//! Verifying an archive that arrives as a stream (standard input, a FIFO, a tape drive, the
//! receiving end of a data diode) in one forward pass: no seek, no memory map. Memory holds one
//! frame at a time (at most 256 MiB by the format's limits, a record chunk's target size in
//! practice), plus the index frame and the per-chunk entries, both proportional to the number of
//! chunks. The checks are those of a full file verify (`verify.rs`), fed by what the pass saw;
//! what the bytes were can also be written on (`tee`) so that the receiver keeps the file.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use crate::format::file_header::{self, FileHeader};
use crate::format::footer::{self, Footer, PAD_TO};
use crate::format::frame::{self, Compression, ContentDecoder, FrameHeader, FrameKind};
use crate::format::hex;
use crate::format::manifest::Manifest;

use super::index::{self, ChunkEntry, IndexContent};
use super::source::Source;
use super::verify::{Ctx, Scan, VerifyLevel, VerifyReport, check_index, check_records, check_scan};

/// The stream, counted, and copied to `tee` as it is read.
struct Input<'a, R: Read> {
    r: R,
    pos: u64,
    tee: Option<&'a mut dyn Write>,
    tee_error: Option<std::io::Error>,
}

impl<R: Read> Input<'_, R> {
    /// Fills `buf` as far as the stream goes; returns how many bytes came (fewer: it ended).
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if let (Some(t), None) = (self.tee.as_mut(), &self.tee_error)
            && let Err(e) = t.write_all(&buf[..n])
        {
            self.tee_error = Some(e);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// What the pass kept for the checks at the end.
#[derive(Default)]
struct Seen {
    scan: Scan,
    manifest: Option<(u64, FrameHeader, Vec<u8>)>,
    index: Option<(u64, FrameHeader, Vec<u8>)>,
    /// Signature frames (§14): offset and content.
    signatures: Vec<(u64, Vec<u8>)>,
    /// Key envelope frames (§15), until the keys are opened from them.
    envelopes: Vec<(u64, Vec<u8>)>,
    /// An encrypted archive's keys, once opened.
    keys: Option<std::sync::Arc<crate::format::crypt::FrameKeys>>,
    /// The envelopes were tried (once: a wrong passphrase costs a second of scrypt a try).
    keys_tried: bool,
    /// The sink asked to stop reading.
    stopped: bool,
}

/// What a one-pass reader (a stream restore) does with the archive's content as the stream is
/// verified.
pub trait FrameSink {
    /// The file header, read and checked, before any frame. Return false to stop reading.
    fn begin(&mut self, _header: &FileHeader) -> bool {
        true
    }

    /// A content frame (blob, metadata document, record chunk) found intact, in file order:
    /// `raw` is its content, checked against its content ID, and for a record chunk every record
    /// decoded. Frames come only while the stream has shown no damage: after the first problem,
    /// none. Return false to stop reading.
    fn content(&mut self, at: u64, h: &FrameHeader, raw: &[u8]) -> bool;
}

/// A sink that takes nothing.
struct Discard;

impl FrameSink for Discard {
    fn content(&mut self, _: u64, _: &FrameHeader, _: &[u8]) -> bool {
        true
    }
}

/// Verifies the archive `r` delivers, fully, in one pass; `name` names it in the report. With
/// `tee`, every byte read is written there too (a write error there is a problem of the report).
pub fn verify_stream(
    r: impl Read,
    name: impl Into<PathBuf>,
    tee: Option<&mut dyn Write>,
    progress: &dyn Fn(u64),
) -> VerifyReport {
    verify_stream_into(r, name, tee, progress, &mut Discard, None)
}

/// [`verify_stream`] of an archive that may be encrypted, opened with what `unlock` holds (none,
/// or none that fits: the frames are checked as far as a reader without the key can).
pub fn verify_stream_unlocked(
    r: impl Read,
    name: impl Into<PathBuf>,
    tee: Option<&mut dyn Write>,
    progress: &dyn Fn(u64),
    unlock: Option<&super::crypt::Unlock>,
) -> VerifyReport {
    verify_stream_into(r, name, tee, progress, &mut Discard, unlock)
}

/// Like [`verify_stream`], handing every intact content frame to `sink` as it is checked. A sink
/// that stops the reading leaves a report of what was read, not OK.
pub fn verify_stream_into(
    r: impl Read,
    name: impl Into<PathBuf>,
    tee: Option<&mut dyn Write>,
    progress: &dyn Fn(u64),
    sink: &mut dyn FrameSink,
    unlock: Option<&super::crypt::Unlock>,
) -> VerifyReport {
    let mut cx = Ctx::default();
    let mut input = Input {
        r,
        pos: 0,
        tee,
        tee_error: None,
    };
    let mut report = VerifyReport::new(name.into(), VerifyLevel::Full);
    let mut seen = Seen::default();
    let footer = read_through(
        &mut input,
        &mut seen,
        &mut report,
        &mut cx,
        progress,
        sink,
        unlock,
    );
    if seen.stopped {
        cx.add(
            input.pos,
            "stream",
            "reading stopped here: the rest was not read",
        );
    }
    if let Some(footer) = footer {
        let data_end = input.pos - footer::LEN as u64;
        report.root_hash = Some(hex(&footer.root));
        check_padding(&mut input, &mut cx);
        check_tail(&footer, data_end, &mut seen, &mut report, &mut cx);
    }
    if let Some(e) = &input.tee_error {
        cx.add(input.pos, "tee", format!("writing the copy failed: {e}"));
    }
    report.file_bytes = input.pos;
    report.frames = seen.scan.frames;
    report.chunks = seen.scan.chunks.len() as u64;
    report.records = seen
        .scan
        .chunks
        .iter()
        .map(|c| u64::from(c.record_count))
        .sum();
    cx.finish(&mut report);
    report
}

/// Reads the file header and every frame up to the footer, checking each frame whole as it
/// comes. Returns the footer, or `None` (with the problem noted) where the stream cannot be read
/// on.
fn read_through<R: Read>(
    input: &mut Input<'_, R>,
    seen: &mut Seen,
    report: &mut VerifyReport,
    cx: &mut Ctx,
    progress: &dyn Fn(u64),
    sink: &mut dyn FrameSink,
    unlock: Option<&super::crypt::Unlock>,
) -> Option<Footer> {
    let header = read_header(input, seen, cx)?;
    if !sink.begin(&header) {
        seen.stopped = true;
        return None;
    }
    report.format_version = Some(format!("{}.{}", header.major, header.minor));
    report.archive_id = header.archive_id.map(|id| id.hex());
    report.archive_id_value = header.archive_id;
    let id = header.archive_id;
    let mut dec = ContentDecoder::new().ok();
    let (mut stored, mut raw) = (Vec::new(), Vec::new());
    seen.scan.good_end = input.pos;
    loop {
        let at = input.pos;
        let mut h = [0u8; frame::HEADER_LEN];
        if read_or_note(input, &mut h[..4], "frame header", seen, cx)? < 4 {
            return None;
        }
        if h[..4] != frame::MAGIC {
            // Not a frame: the footer, or damage a stream cannot resynchronise past.
            let mut f = [0u8; footer::LEN];
            f[..4].copy_from_slice(&h[..4]);
            if read_or_note(input, &mut f[4..], "footer", seen, cx)? < footer::LEN - 4 {
                return None;
            }
            return match Footer::decode_at(&f, at, header.major, id) {
                Ok(f) => Some(f),
                Err(e) => {
                    cx.add_format(&e, " (a stream cannot be read on past damage here)");
                    None
                }
            };
        }
        if read_or_note(input, &mut h[4..], "frame header", seen, cx)? < frame::HEADER_LEN - 4 {
            return None;
        }
        let fh = match FrameHeader::decode(&h, at, id) {
            Ok(fh) => fh,
            Err(e) => {
                cx.add_format(
                    &e,
                    " (a stream cannot be read on past a damaged frame header)",
                );
                return None;
            }
        };
        stored.resize(fh.stored_len as usize, 0);
        if read_or_note(input, &mut stored, fh.kind.name(), seen, cx)? < stored.len() {
            return None;
        }
        seen.scan.frames += 1;
        if header.is_encrypted() && !seen.keys_tried && fh.kind != FrameKind::Envelope {
            seen.keys_tried = true;
            // Past the envelopes: the keys, or (none that fits) the stored checks only.
            dec = open_stream_keys(at, id, seen, unlock, cx);
        }
        let intact = check_frame(at, &fh, &stored, dec.as_mut(), &mut raw, seen, cx);
        if intact && fh.kind == FrameKind::Envelope {
            seen.envelopes.push((at, stored.clone()));
        }
        let checked = intact && dec.is_some() && cx.problems.is_empty();
        if checked && fh.kind.is_content() && !sink.content(at, &fh, &raw) {
            seen.stopped = true;
            return None;
        }
        progress(input.pos);
    }
}

/// Opens an encrypted stream's keys from the envelopes read: a decoder with them, or `None`
/// (the problem noted) for a reader that checks only what needs no key.
fn open_stream_keys(
    at: u64,
    id: Option<crate::format::ArchiveId>,
    seen: &mut Seen,
    unlock: Option<&super::crypt::Unlock>,
    cx: &mut Ctx,
) -> Option<ContentDecoder> {
    let envelopes: Vec<(u64, &[u8])> = seen.envelopes.iter().map(|(o, b)| (*o, &b[..])).collect();
    let default = super::crypt::Unlock::default();
    match super::crypt::open_envelopes(&envelopes, unlock.unwrap_or(&default)) {
        Ok(keys) => {
            seen.keys = Some(keys.clone());
            ContentDecoder::with_keys(id.map(|id| (keys, id))).ok()
        }
        Err(e) => {
            cx.add(at, "key envelope", e.to_string());
            None
        }
    }
}

/// Reads and decodes the file header: the part every version shares, then the rest of a 3.x one.
fn read_header<R: Read>(
    input: &mut Input<'_, R>,
    seen: &mut Seen,
    cx: &mut Ctx,
) -> Option<FileHeader> {
    let mut head = vec![0u8; file_header::LEN_V2];
    if read_or_note(input, &mut head, "file header", seen, cx)? < head.len() {
        return None;
    }
    let mut decoded = FileHeader::decode(&head);
    if matches!(&decoded, Err(e) if e.is_truncated()) {
        head.resize(file_header::LEN, 0);
        let rest = file_header::LEN - file_header::LEN_V2;
        if read_or_note(
            input,
            &mut head[file_header::LEN_V2..],
            "file header",
            seen,
            cx,
        )? < rest
        {
            return None;
        }
        decoded = FileHeader::decode(&head);
    }
    decoded.map_err(|e| cx.add_format(&e, "")).ok()
}

/// Checks one frame read whole: stored hash, content ID, records; keeps what the end needs.
/// Whether the frame is intact.
fn check_frame(
    at: u64,
    h: &FrameHeader,
    stored: &[u8],
    dec: Option<&mut ContentDecoder>,
    raw: &mut Vec<u8>,
    seen: &mut Seen,
    cx: &mut Ctx,
) -> bool {
    let what = h.kind.name();
    let next = at + h.frame_len();
    if !frame::check_stored(h, stored) {
        cx.add(
            at + frame::HEADER_LEN as u64,
            what,
            format!("stored bytes of the frame at offset {at} do not match their hash"),
        );
        return false;
    }
    if let FrameKind::Unknown(code) = h.kind
        && code & frame::OPTIONAL == 0
    {
        cx.add(
            at,
            "frame header",
            format!("frame kind 0x{code:02x} is unknown and not optional: this archive needs a newer kar to be read"),
        );
    }
    let mut intact = true;
    if h.kind == FrameKind::Index && !h.encrypted {
        seen.index = Some((at, *h, stored.to_vec()));
    } else if let Some(dec) = dec {
        match dec.decode(h, stored, at, raw) {
            Err(e) => {
                cx.add(e.offset(), what, e.to_string());
                intact = false;
            }
            Ok(()) if h.kind == FrameKind::RecordChunk => match check_records(raw) {
                Ok(ch) => seen.scan.chunks.push(ChunkEntry::new(
                    &ch,
                    at,
                    h.content_id,
                    h.raw_len,
                    h.stored_len,
                )),
                Err(e) => {
                    cx.add(
                        at + frame::HEADER_LEN as u64,
                        what,
                        format!("{e} (in the decompressed chunk)"),
                    );
                    intact = false;
                }
            },
            Ok(()) if h.kind == FrameKind::Manifest => {
                seen.manifest = Some((at, *h, raw.clone()));
            }
            // A sealed index, opened: kept as the redb bytes it holds.
            Ok(()) if h.kind == FrameKind::Index => {
                seen.index = Some((at, *h, raw.clone()));
            }
            Ok(()) if h.kind == FrameKind::Signature => {
                seen.signatures.push((at, raw.clone()));
            }
            Ok(()) => {}
        }
    }
    if intact {
        seen.scan.good.insert(at, *h);
        if seen.scan.good_end == at {
            seen.scan.good_end = next;
        }
    }
    intact
}

/// Reads into `buf`; a stream that ends early is noted, naming where and the last chunk read
/// whole. `None` when reading failed.
fn read_or_note<R: Read>(
    input: &mut Input<'_, R>,
    buf: &mut [u8],
    structure: &str,
    seen: &Seen,
    cx: &mut Ctx,
) -> Option<usize> {
    let at = input.pos;
    match input.fill(buf) {
        Ok(n) if n == buf.len() => Some(n),
        Ok(n) => {
            let last = match seen.scan.chunks.last() {
                Some(c) => format!(
                    "; the last record chunk read whole is {}/{} offsets {}..={} (frame at offset {})",
                    c.topic, c.partition, c.first_offset, c.last_offset, c.frame_offset
                ),
                None => "; no record chunk was read whole".into(),
            };
            cx.add(
                at + n as u64,
                structure,
                format!(
                    "the stream ended at offset {} inside the {structure} (needed {} more bytes): the archive is unfinished or cut short{last}; `kar repair` of what arrived keeps every complete chunk",
                    at + n as u64,
                    buf.len() - n
                ),
            );
            Some(n)
        }
        Err(e) => {
            cx.add(at, structure, format!("reading the stream failed: {e}"));
            None
        }
    }
}

/// After the footer: nothing, or zero padding up to the next 1 MiB boundary (a tape's last
/// block).
fn check_padding<R: Read>(input: &mut Input<'_, R>, cx: &mut Ctx) {
    let end = input.pos;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let at = input.pos;
        match input.fill(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(i) = buf[..n].iter().position(|b| *b != 0) {
                    cx.add(
                        at + i as u64,
                        "after the footer",
                        format!("non-zero bytes follow the footer (it ends at offset {end}): another file's bytes, or damage"),
                    );
                    return;
                }
            }
            Err(e) => {
                cx.add(
                    at,
                    "after the footer",
                    format!("reading the stream failed: {e}"),
                );
                return;
            }
        }
    }
    let padded = input.pos - end;
    if input.pos > end.div_ceil(PAD_TO) * PAD_TO {
        cx.add(
            end,
            "after the footer",
            format!("{padded} zero bytes follow the footer, past the next 1 MiB boundary: more than a tape block's padding"),
        );
    }
}

/// The checks a file verify makes through the reader and on its scan, on what the pass kept.
fn check_tail(f: &Footer, data_end: u64, seen: &mut Seen, report: &mut VerifyReport, cx: &mut Ctx) {
    let (Some((moff, mh, mraw)), Some((ioff, ih, _))) = (&seen.manifest, &seen.index) else {
        cx.add(
            data_end,
            "footer",
            "the stream holds no intact manifest or index frame",
        );
        return;
    };
    if (*moff, *ioff) != (f.manifest_offset, f.index_offset)
        || moff + mh.frame_len() != *ioff
        || ioff + ih.frame_len() != data_end
        || ih.compression != Compression::None
    {
        cx.add(
            data_end,
            "footer",
            format!(
                "the footer points to the manifest at {} and the index at {}, the stream holds them at {moff} and {ioff}; the index frame must follow the manifest frame and end where the footer starts ({data_end}): not one archive",
                f.manifest_offset, f.index_offset
            ),
        );
        return;
    }
    let manifest = match Manifest::decode(mraw, moff + frame::HEADER_LEN as u64) {
        Ok(m) => m,
        Err(e) => {
            cx.add_format(&e, "");
            return;
        }
    };
    let (ioff, manifest_id) = (*ioff, mh.content_id);
    let stored = std::mem::take(&mut seen.index.as_mut().expect("matched above").2);
    let len = stored.len();
    let source = Arc::new(Source::Owned(stored));
    let ix = index::guarded(
        || {
            let db = index::open(source, 0, len).map_err(|e| e.to_string())?;
            IndexContent::read(&db).map_err(|e| e.to_string())
        },
        |e| e,
    );
    let ix = match ix {
        Ok(ix) => ix,
        Err(e) => {
            cx.add(ioff, "index", format!("cannot read the redb index: {e}"));
            return;
        }
    };
    let root_key = seen.keys.as_ref().map(|k| *k.id_key());
    report.gaps = check_index(
        &manifest,
        &manifest_id,
        f,
        &ix,
        data_end,
        root_key.as_ref(),
        cx,
    );
    check_scan(
        f,
        &seen.scan,
        Some(&ix),
        data_end,
        Some(root_key.as_ref()),
        cx,
    );
    let expect = super::signing::Expected {
        archive_id: report.archive_id_value,
        root: f.root,
        manifest_id,
    };
    report.stream_signatures = Some((expect, std::mem::take(&mut seen.signatures)));
}
