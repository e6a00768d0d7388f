//! Volume sets (§12): an archive cut into files of at most a given size, for FAT32 sticks (4 GiB
//! per file) and tape cartridges. The writer cuts the byte stream as it goes; readers open the
//! first volume and find the rest next to it (the memory map of a set is in `source.rs`), or read
//! the volumes one after another from a stream. The archive's bytes are those of the single file,
//! so its root is too.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::format::volume::{HEADER_REGION, LEN, VolumeHeader, volume_name};

use super::ArchiveError;

/// The smallest volume size: a header region and at least one 64 KiB unit of archive bytes would
/// be absurd; 1 MiB keeps a set of a large archive to a sane number of files.
pub const MIN_VOLUME_SIZE: u64 = 1 << 20;

/// The path of volume `number` of the set whose first volume is `first`.
pub fn volume_path(first: &Path, number: u32) -> PathBuf {
    PathBuf::from(volume_name(&first.to_string_lossy(), number))
}

/// Writes an archive's bytes into volumes `NAME`, `NAME.002`, ... of at most `volume_size`
/// bytes each. Each volume is synced to disk when it is full, before the next is begun; the last
/// one's header is completed (its length, the count) by [`VolumeWriter::finish`].
pub struct VolumeWriter {
    first: PathBuf,
    set_id: [u8; 16],
    /// Archive bytes a volume holds (the last one: at most this).
    capacity: u64,
    file: File,
    header: VolumeHeader,
    /// Archive bytes in the current volume.
    written: u64,
    paths: Vec<PathBuf>,
}

impl VolumeWriter {
    /// Begins the set at `first` (it and every later volume must not exist yet).
    pub fn create(first: &Path, volume_size: u64) -> Result<VolumeWriter, ArchiveError> {
        if volume_size < MIN_VOLUME_SIZE {
            return Err(ArchiveError::Order {
                path: first.to_path_buf(),
                detail: format!(
                    "a volume size of {volume_size} bytes is below the minimum of 1 MiB"
                ),
            });
        }
        // Strictly below the size: `--volume-size 4G` fits FAT32, whose files end at 4 GiB - 1.
        let capacity = (volume_size - HEADER_REGION - 1) / HEADER_REGION * HEADER_REGION;
        let mut set_id = [0u8; 16];
        getrandom::fill(&mut set_id)
            .map_err(|e| ArchiveError::io("draw a set ID for", first)(std::io::Error::other(e)))?;
        let header = VolumeHeader {
            number: 1,
            set_id,
            payload_offset: 0,
            payload_len: capacity,
            count: None,
        };
        let file = begin_volume(first, &header)?;
        Ok(VolumeWriter {
            first: first.to_path_buf(),
            set_id,
            capacity,
            file,
            header,
            written: 0,
            paths: vec![first.to_path_buf()],
        })
    }

    /// The current volume is full: it goes to disk, the next one begins.
    fn next_volume(&mut self) -> std::io::Result<()> {
        self.file.sync_all()?;
        let header = VolumeHeader {
            number: self.header.number + 1,
            set_id: self.set_id,
            payload_offset: self.header.payload_offset + self.capacity,
            payload_len: self.capacity,
            count: None,
        };
        let path = volume_path(&self.first, header.number);
        self.file = begin_volume(&path, &header).map_err(std::io::Error::other)?;
        self.header = header;
        self.written = 0;
        self.paths.push(path);
        Ok(())
    }

    /// Completes the last volume's header (its length, the set's count) and syncs it; returns
    /// the volumes' paths.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, ArchiveError> {
        let last = self.paths.last().cloned().expect("one volume at least");
        let header = VolumeHeader {
            payload_len: self.written,
            count: Some(self.header.number),
            ..self.header
        };
        let patched = self
            .file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.write_all(&header.encode()[..LEN]))
            .and_then(|()| self.file.sync_all());
        patched.map_err(ArchiveError::io("finish the volume", &last))?;
        Ok(self.paths)
    }
}

fn begin_volume(path: &Path, header: &VolumeHeader) -> Result<File, ArchiveError> {
    let mut f = super::writer::create_new(path)?;
    f.write_all(&header.encode())
        .map_err(ArchiveError::io("write", path))?;
    Ok(f)
}

impl Write for VolumeWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.written == self.capacity {
            self.next_volume()?;
        }
        let n = buf.len().min((self.capacity - self.written) as usize);
        let n = self.file.write(&buf[..n])?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// One volume of a set as found, checked against the ones before it.
#[derive(Debug, Clone)]
pub struct FoundVolume {
    pub path: PathBuf,
    pub header: VolumeHeader,
}

/// Finds and checks every volume of the set whose first volume is `first`: each next to it by
/// name, of the same set, numbered in turn, its slice where the one before ended and as long as
/// its header says, up to the one that says it is the last. Any other finding is an error naming
/// the volume.
pub fn find_set(first: &Path) -> Result<Vec<FoundVolume>, ArchiveError> {
    find_volumes(first, false)
}

/// Like [`find_set`]; with `unfinished`, a set that ends without a last volume (its writer was
/// stopped) is returned as far as it goes.
fn find_volumes(first: &Path, unfinished: bool) -> Result<Vec<FoundVolume>, ArchiveError> {
    let bad = |path: &Path, detail: String| ArchiveError::Volume {
        path: path.to_path_buf(),
        detail,
    };
    let h1 = read_header(first)?;
    if h1.number != 1 {
        return Err(bad(
            first,
            format!(
                "is volume {} of set {}, not its first: give the first volume",
                h1.number,
                h1.set_hex()
            ),
        ));
    }
    let mut found = vec![FoundVolume {
        path: first.to_path_buf(),
        header: h1,
    }];
    loop {
        let prev = found.last().expect("one at least").header;
        check_length(&found.last().expect("one").path, &prev)?;
        if prev.count.is_some() {
            return Ok(found);
        }
        let n = prev.number + 1;
        let path = volume_path(first, n);
        if !path.exists() && unfinished {
            return Ok(found);
        }
        if !path.exists() {
            return Err(bad(
                &path,
                format!(
                    "volume {n} of set {} is missing: the set has at least {n} volumes, and volume {} does not say it is the last",
                    h1.set_hex(),
                    prev.number
                ),
            ));
        }
        let h = read_header(&path)?;
        if h.set_id != h1.set_id {
            return Err(bad(
                &path,
                format!(
                    "belongs to another set ({}), not to set {} of {}",
                    h.set_hex(),
                    h1.set_hex(),
                    first.display()
                ),
            ));
        }
        if h.number != n || h.payload_offset != prev.payload_offset + prev.payload_len {
            return Err(bad(
                &path,
                format!(
                    "holds volume {} of the set (archive bytes from {}), where volume {n} (from {}) belongs: volumes renamed or swapped?",
                    h.number,
                    h.payload_offset,
                    prev.payload_offset + prev.payload_len
                ),
            ));
        }
        found.push(FoundVolume { path, header: h });
    }
}

fn read_header(path: &Path) -> Result<VolumeHeader, ArchiveError> {
    let mut b = [0u8; LEN];
    let mut f = File::open(path).map_err(ArchiveError::io("open", path))?;
    f.read_exact(&mut b)
        .map_err(ArchiveError::io("read the volume header of", path))?;
    VolumeHeader::decode(&b).map_err(ArchiveError::format(path, ""))
}

/// A volume's file holds its header region and exactly its slice; a slice but the last is a
/// whole number of 64 KiB units (how the set is mapped).
fn check_length(path: &Path, h: &VolumeHeader) -> Result<(), ArchiveError> {
    let len = std::fs::metadata(path)
        .map_err(ArchiveError::io("open", path))?
        .len();
    let want = HEADER_REGION + h.payload_len;
    let detail = if len < want {
        format!(
            "is cut short: {len} bytes, its header says {want} (volume {})",
            h.number
        )
    } else if len > want {
        format!(
            "has {} bytes more than its header says (volume {})",
            len - want,
            h.number
        )
    } else if h.count.is_none() && !h.payload_len.is_multiple_of(HEADER_REGION) {
        format!(
            "volume {}'s slice of {} bytes is not a multiple of 64 KiB: not a set kar wrote",
            h.number, h.payload_len
        )
    } else {
        return Ok(());
    };
    Err(ArchiveError::Volume {
        path: path.to_path_buf(),
        detail,
    })
}

/// The archive's bytes from volumes read one after another from one stream (`cat NAME.kar
/// NAME.kar.0* | kar verify -`): each header checked against the one before, as [`find_set`]
/// checks files; a problem is a read error naming the volume.
pub struct VolumeStream<R: Read> {
    r: R,
    first: Option<VolumeHeader>,
    current: Option<VolumeHeader>,
    left: u64,
}

impl<R: Read> VolumeStream<R> {
    pub fn new(r: R) -> Self {
        VolumeStream {
            r,
            first: None,
            current: None,
            left: 0,
        }
    }

    /// Reads the next volume's header region; `Ok(false)` at the end of the set.
    fn next_header(&mut self) -> std::io::Result<bool> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        if self.current.is_some_and(|c| c.count.is_some()) {
            return Ok(false);
        }
        let mut region = vec![0u8; HEADER_REGION as usize];
        let mut got = 0;
        while got < region.len() {
            match self.r.read(&mut region[got..])? {
                0 => break,
                n => got += n,
            }
        }
        let expected = self.current.map_or(1, |c| c.number + 1);
        if got < region.len() {
            return Err(invalid(format!(
                "the stream of volumes ended where volume {expected}'s header should be: volume {expected} is missing"
            )));
        }
        let h = VolumeHeader::decode(&region)
            .map_err(|e| invalid(format!("volume {expected}: {e}")))?;
        let end = self.current.map_or(0, |c| c.payload_offset + c.payload_len);
        if let Some(f) = self.first
            && h.set_id != f.set_id
        {
            return Err(invalid(format!(
                "volume {} of another set ({}) where volume {expected} of set {} belongs",
                h.number,
                h.set_hex(),
                f.set_hex()
            )));
        }
        if h.number != expected || h.payload_offset != end {
            return Err(invalid(format!(
                "volume {} (archive bytes from {}) where volume {expected} (from {end}) belongs: volumes out of order, or one missing or given twice",
                h.number, h.payload_offset
            )));
        }
        self.first.get_or_insert(h);
        self.current = Some(h);
        self.left = h.payload_len;
        Ok(true)
    }
}

impl<R: Read> Read for VolumeStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.left == 0 {
            if !self.next_header()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.left as usize);
        let n = self.r.read(&mut buf[..n])?;
        if n == 0 {
            let c = self.current.expect("a volume is open");
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("volume {} ended {} bytes early", c.number, self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// What `kar split` and `kar join` did.
#[derive(Debug, Clone, Serialize)]
pub struct VolumesReport {
    pub volumes: Vec<PathBuf>,
    pub output: PathBuf,
    pub bytes: u64,
    /// Empty for a set without its last volume, joined unfinished.
    pub root_hash: String,
}

/// Cuts the archive `input` into volumes of at most `volume_size` bytes, the first at `first`.
/// The input must open as an archive; it is not changed.
pub fn split(input: &Path, first: &Path, volume_size: u64) -> Result<VolumesReport, ArchiveError> {
    let source = std::sync::Arc::new(super::Source::map(input)?);
    let root = super::reader::root_of(source.clone(), input)?;
    let mut w = VolumeWriter::create(first, volume_size)?;
    let done = w
        .write_all(&source)
        .map_err(ArchiveError::io("write the volumes of", first));
    let paths = match done {
        Ok(()) => w.finish()?,
        Err(e) => {
            for p in &w.paths {
                let _ = std::fs::remove_file(p);
            }
            return Err(e);
        }
    };
    Ok(VolumesReport {
        volumes: paths,
        output: first.to_path_buf(),
        bytes: source.len() as u64,
        root_hash: crate::format::hex(&root),
    })
}

/// Every volume of a set given as a list of files, in any order (each on its own stick): all of
/// one set, each number once, none missing, up to the one that says it is the last.
pub fn listed_set(paths: &[PathBuf]) -> Result<Vec<FoundVolume>, ArchiveError> {
    let bad = |path: &Path, detail: String| ArchiveError::Volume {
        path: path.to_path_buf(),
        detail,
    };
    let mut found: Vec<FoundVolume> = Vec::new();
    for p in paths {
        let header = read_header(p)?;
        if let Some(f) = found.first()
            && f.header.set_id != header.set_id
        {
            return Err(bad(
                p,
                format!(
                    "belongs to another set ({}) than {} (set {})",
                    header.set_hex(),
                    f.path.display(),
                    f.header.set_hex()
                ),
            ));
        }
        if let Some(twin) = found.iter().find(|v| v.header.number == header.number) {
            return Err(bad(
                p,
                format!(
                    "is volume {} of the set, given twice (also {})",
                    header.number,
                    twin.path.display()
                ),
            ));
        }
        found.push(FoundVolume {
            path: p.clone(),
            header,
        });
    }
    found.sort_by_key(|v| v.header.number);
    let mut end = 0;
    for (i, v) in found.iter().enumerate() {
        let n = i as u32 + 1;
        if v.header.number != n {
            return Err(bad(
                &v.path,
                format!(
                    "is volume {}; volume {n} of the set was not given",
                    v.header.number
                ),
            ));
        }
        if v.header.payload_offset != end {
            return Err(bad(
                &v.path,
                format!(
                    "holds archive bytes from {}, where volume {n} should begin at {end}",
                    v.header.payload_offset
                ),
            ));
        }
        check_length(&v.path, &v.header)?;
        end += v.header.payload_len;
    }
    match found.last() {
        Some(v) if v.header.count.is_none() => Err(bad(
            &v.path,
            format!(
                "volume {} does not say it is the last: volume {} was not given",
                v.header.number,
                v.header.number + 1
            ),
        )),
        _ => Ok(found),
    }
}

/// Joins a set into the single archive file `output` (new): `files` is its first volume (the
/// others found next to it), or every volume. A set found by name without its last volume (its
/// writer was stopped) is joined as far as it goes, into an unfinished archive for `kar repair`,
/// and the report has no root.
pub fn join(files: &[PathBuf], output: &Path) -> Result<VolumesReport, ArchiveError> {
    let set = match files {
        [first] => find_volumes(first, true)?,
        _ => listed_set(files)?,
    };
    let whole = set.last().is_some_and(|v| v.header.count.is_some());
    let mut out = super::writer::create_new(output)?;
    let mut bytes = 0;
    let mut written = Ok(());
    for v in &set {
        written = File::open(&v.path)
            .and_then(|mut f| {
                f.seek(SeekFrom::Start(HEADER_REGION))?;
                std::io::copy(&mut f.take(v.header.payload_len), &mut out)
            })
            .map(|n| bytes += n)
            .map_err(ArchiveError::io("copy the slice of", &v.path));
        if written.is_err() {
            break;
        }
    }
    let written = written.and_then(|()| out.sync_all().map_err(ArchiveError::io("sync", output)));
    let root = match written {
        Ok(()) if whole => super::Source::map(output)
            .and_then(|s| super::reader::root_of(std::sync::Arc::new(s), output))
            .map(|r| crate::format::hex(&r)),
        Ok(()) => Ok(String::new()),
        Err(e) => Err(e),
    };
    let root_hash = root.inspect_err(|_| {
        let _ = std::fs::remove_file(output);
    })?;
    Ok(VolumesReport {
        volumes: set.into_iter().map(|v| v.path).collect(),
        output: output.to_path_buf(),
        bytes,
        root_hash,
    })
}
