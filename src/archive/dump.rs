//! `kar dump`: every structure of an archive, front to back, with its file offset, its decoded
//! fields and its bytes in hex; record chunks are decompressed and each record decoded. For
//! forensics on a damaged file and for the test vectors' hex dumps.

use std::fmt::Write;

use crate::format::chunk::ChunkRecords;
use crate::format::file_header::FileHeader;
use crate::format::footer::{self, Footer};
use crate::format::frame::{self, Compression, ContentDecoder, FrameKind};
use crate::format::hex;

use super::reader::frame_at;

/// Bytes of one structure shown in hex before the dump elides the rest.
const HEX_LIMIT: usize = 4096;

fn hexdump(out: &mut String, base: u64, bytes: &[u8]) {
    for (i, line) in bytes.chunks(16).enumerate() {
        if i * 16 >= HEX_LIMIT {
            let _ = writeln!(out, "    … {} more bytes", bytes.len() - HEX_LIMIT);
            break;
        }
        let hexes: Vec<String> = line.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = line
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "    {:08x}  {:<47}  {ascii}",
            base + (i * 16) as u64,
            hexes.join(" ")
        );
    }
}

fn show(v: Option<&[u8]>) -> String {
    match v {
        None => "null".into(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) if !s.chars().any(char::is_control) => format!("{s:?}"),
            _ => format!(
                "hex:{}",
                b.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
        },
    }
}

/// Renders the structures of `bytes`. Stops at the first structure it cannot decode, saying why.
pub fn dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    let w = &mut out;
    let header = match FileHeader::decode(bytes) {
        Ok(h) => {
            let id = h
                .archive_id
                .map_or(String::new(), |id| format!(", archive ID {id}"));
            let _ = writeln!(
                w,
                "@0 file header: version {}.{}, flags {:#x}{id}",
                h.major, h.minor, h.flags
            );
            hexdump(w, 0, &bytes[..h.size()]);
            h
        }
        Err(e) => {
            let _ = writeln!(w, "@0 {e}");
            return out;
        }
    };
    let id = header.archive_id;
    let footer = Footer::decode(bytes, header.major, id).ok();
    let data_end = if footer.is_some() {
        (bytes.len() - footer::LEN) as u64
    } else {
        bytes.len() as u64
    };
    let mut dec = ContentDecoder::new().expect("zstd context");
    let mut raw = Vec::new();
    let mut pos = header.size() as u64;
    while pos < data_end {
        let (h, stored) = match frame_at(bytes, pos, data_end, id) {
            Ok(f) => f,
            Err(e) => {
                let _ = writeln!(w, "@{pos} {e}");
                return out;
            }
        };
        let _ = writeln!(
            w,
            "\n@{pos} frame header: kind {} (0x{:02x}), compression {}{}, stored {} bytes, raw {} bytes\n    content id  {}\n    stored hash {}",
            h.kind.name(),
            h.kind.code(),
            if h.compression == Compression::Zstd {
                "zstd"
            } else {
                "none"
            },
            if h.encrypted {
                ", sealed (XChaCha20-Poly1305)"
            } else {
                ""
            },
            h.stored_len,
            h.raw_len,
            hex(&h.content_id),
            hex(&h.stored_hash)
        );
        hexdump(
            w,
            pos,
            &bytes[pos as usize..pos as usize + frame::HEADER_LEN],
        );
        let body = pos + frame::HEADER_LEN as u64;
        let _ = writeln!(w, "@{body} {} stored bytes", h.kind.name());
        hexdump(
            w,
            body,
            &stored[..stored.len().min(if h.kind == FrameKind::Index {
                64
            } else {
                HEX_LIMIT
            })],
        );
        if h.kind != FrameKind::Index {
            match dec.decode(&h, stored, pos, &mut raw) {
                Err(e) => {
                    let _ = writeln!(w, "    cannot decode: {e}");
                }
                Ok(()) => {
                    let _ = writeln!(w, "  decompressed content ({} bytes):", raw.len());
                    hexdump(w, 0, &raw);
                    if h.kind == FrameKind::RecordChunk {
                        dump_records(w, &raw);
                    } else if let Ok(text) = std::str::from_utf8(&raw) {
                        let _ = writeln!(w, "  as text: {text}");
                    }
                }
            }
        }
        pos = body + h.stored_len;
    }
    if let Some(f) = footer {
        let _ = writeln!(
            w,
            "\n@{data_end} footer: index at {}, manifest at {}, {} frames, version {}.{}\n    root {}",
            f.index_offset,
            f.manifest_offset,
            f.frame_count,
            f.major,
            f.minor,
            hex(&f.root)
        );
        hexdump(w, data_end, &bytes[data_end as usize..]);
    } else {
        let _ = writeln!(
            w,
            "\n@{data_end} no footer: the archive is unfinished or its footer is damaged"
        );
    }
    out
}

fn dump_records(w: &mut String, raw: &[u8]) {
    let recs = match ChunkRecords::new(raw, 0) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(w, "  chunk header: {e}");
            return;
        }
    };
    let h = recs.header().clone();
    let _ = writeln!(
        w,
        "  chunk: topic {:?} partition {}, {} records, offsets {}..={}, covers {}..{}, timestamps {}..={}",
        h.topic,
        h.partition,
        h.record_count,
        h.first_offset,
        h.last_offset,
        h.covers_from,
        h.covers_to,
        h.min_timestamp,
        h.max_timestamp
    );
    for r in recs {
        match r {
            Ok(r) => {
                let headers: Vec<String> = r
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{k:?}={}", show(v)))
                    .collect();
                let _ = writeln!(
                    w,
                    "    offset {} ts {} ({:?}) key {} value {} headers [{}]",
                    r.offset,
                    r.timestamp,
                    r.timestamp_type,
                    show(r.key),
                    show(r.value),
                    headers.join(", ")
                );
            }
            Err(e) => {
                let _ = writeln!(w, "    {e}");
                return;
            }
        }
    }
}
