//! The bytes of an archive, whoever holds them: a read-only memory map of the file (the one place
//! kar uses `unsafe`), or bytes in memory. The reader and the index opened in place both read it.

use std::fs::File;
use std::io::Read;
use std::ops::Deref;
use std::path::Path;

use super::ArchiveError;

/// The bytes of an archive: a memory map of the file, or bytes already in memory (tests, fuzzing).
pub enum Source {
    /// A file; `len` leaves out zero padding after the footer (a tape's last block, see
    /// [`crate::format::footer::archive_len`]).
    Mapped {
        map: memmap2::Mmap,
        len: usize,
    },
    Owned(Vec<u8>),
    /// The volumes of a set, mapped one after another into one span of memory.
    Volumes(VolumeMap),
}

/// The slices of a volume set's files mapped side by side, read-only, so that the set reads as
/// the one archive it is.
pub struct VolumeMap {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the span is mapped read-only and never written through; like memmap2's Mmap, it may be
// read from any thread, and unmapped once, on drop.
unsafe impl Send for VolumeMap {}
unsafe impl Sync for VolumeMap {}

impl Drop for VolumeMap {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: `ptr..ptr+len` is the span `map_set` reserved and mapped; nothing borrows it
            // any more (the borrow checker ties every slice to `&self`).
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }
}

impl Deref for Source {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Source::Mapped { map, len } => &map[..*len],
            Source::Owned(v) => v,
            Source::Volumes(v) if v.len == 0 => &[],
            // SAFETY: `map_set` mapped `len` readable bytes at `ptr`, alive until drop.
            Source::Volumes(v) => unsafe { std::slice::from_raw_parts(v.ptr, v.len) },
        }
    }
}

impl Source {
    /// Tells the kernel this process is done, for now, with `start..start + len` of a mapped
    /// archive: the pages it touches leave the process's resident set. They stay in the page
    /// cache, and a later read faults the same bytes back in. Without this, every mapped byte a
    /// restore has read stays resident: a 100 GB archive would show 100 GB of RSS, charged to a
    /// container's memory limit. A hint: a failure changes nothing and is ignored.
    pub fn release(&self, start: usize, len: usize) {
        let (base, mapped) = match self {
            Source::Mapped { map, .. } => (map.as_ptr(), map.len()),
            Source::Volumes(v) if v.len > 0 => (v.ptr, v.len),
            _ => return,
        };
        // SAFETY: sysconf only reads a constant of the system.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
        // Whole pages, the range's first and last too though they hold bytes of the frames
        // beside it: a neighbour read later, or at the same time by another thread, faults its
        // page back in, where pages left behind at every chunk's edges would add up (two pages a
        // chunk: 40 MB over a 10 GB restore).
        let from = start.min(mapped) / page * page;
        let to = start
            .saturating_add(len)
            .min(mapped)
            .next_multiple_of(page)
            .min(mapped.next_multiple_of(page));
        if to <= from {
            return;
        }
        // SAFETY: `base..base + mapped` is this source's mapping, page-aligned as mmap returns
        // it (the kernel maps whole pages, so up to the page boundary after `mapped`), and
        // `from..to` lies inside that on page boundaries. Every mapping here is of a file,
        // read-only (PROT_READ: never written, so no page is a private copy): MADV_DONTNEED only
        // drops this process's page-table entries, and the next read of any of those bytes,
        // through a slice still borrowed or a new one, faults in the file's same bytes. Nothing
        // a borrow can see changes.
        unsafe {
            libc::madvise(
                base.add(from) as *mut libc::c_void,
                to - from,
                libc::MADV_DONTNEED,
            )
        };
    }
}

/// Whether `path` is a FIFO or a character device (a pipe's end, a tape drive): read and written
/// as a stream, never mapped.
pub fn is_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo() || m.file_type().is_char_device())
}

/// Maps the volume set whose first volume is `first` (found and checked by
/// [`super::volume::find_set`]): a span of address space is reserved, then each volume's slice is
/// mapped over its part of it, so the set reads as one archive without a copy.
fn map_set(first: &Path) -> Result<Source, ArchiveError> {
    map_found(&super::volume::find_set(first)?, first)
}

/// Maps an archive given as one path (a file, or the first volume of a set, the others found
/// next to it) or as every volume of a set, in any order, wherever each is.
pub fn map_list(paths: &[std::path::PathBuf]) -> Result<Source, ArchiveError> {
    match paths {
        [one] => Source::map(one),
        [] => Err(ArchiveError::Volume {
            path: std::path::PathBuf::new(),
            detail: "no archive given".into(),
        }),
        _ => map_found(&super::volume::listed_set(paths)?, &paths[0]),
    }
}

/// Maps the checked volumes `set` (see `map_set`); `first` names it in errors.
fn map_found(set: &[super::volume::FoundVolume], first: &Path) -> Result<Source, ArchiveError> {
    use crate::format::volume::HEADER_REGION;
    let total: u64 = set.iter().map(|v| v.header.payload_len).sum();
    let len = usize::try_from(total).map_err(|_| ArchiveError::Volume {
        path: first.to_path_buf(),
        detail: format!("a set of {total} bytes does not fit this machine's address space"),
    })?;
    // SAFETY: sysconf only reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    if page == 0 || !HEADER_REGION.is_multiple_of(page) {
        return Err(ArchiveError::Volume {
            path: first.to_path_buf(),
            detail: format!("pages of {page} bytes: volumes are mapped in 64 KiB units"),
        });
    }
    if len == 0 {
        return Ok(Source::Volumes(VolumeMap {
            ptr: std::ptr::null(),
            len: 0,
        }));
    }
    // SAFETY: an anonymous, inaccessible reservation of `len` bytes at an address the kernel
    // chooses; nothing else refers to it. It is unmapped by VolumeMap's drop (also on the error
    // paths below, since `map` owns it from here).
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(ArchiveError::io("reserve address space for", first)(
            std::io::Error::last_os_error(),
        ));
    }
    let map = VolumeMap {
        ptr: base as *const u8,
        len,
    };
    for v in set.iter().filter(|v| v.header.payload_len > 0) {
        let file = File::open(&v.path).map_err(ArchiveError::io("open", &v.path))?;
        // SAFETY: the target range lies inside the reservation above (offsets and lengths come
        // from `find_set`, which checked that the slices follow one another and sum to `len`, and
        // that every slice but the last is a whole number of 64 KiB units, so each begins on a
        // page boundary); MAP_FIXED replaces that part of our own reservation and nothing else.
        // The file is mapped read-only at the page-aligned offset of its slice; as for a single
        // file, the contract is that nobody changes the volumes while they are open, and every
        // read is checked against blake3 hashes.
        let at = unsafe {
            libc::mmap(
                (base as *mut u8).add(v.header.payload_offset as usize) as *mut libc::c_void,
                v.header.payload_len as usize,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                HEADER_REGION as libc::off_t,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(ArchiveError::io("memory-map", &v.path)(
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(Source::Volumes(map))
}

/// `-` (standard input), a FIFO or a character device: an archive read as a stream, front to
/// back, never mapped.
pub fn is_stream(path: &Path) -> bool {
    path == Path::new("-") || is_device(path)
}

/// Opens a stream ([`is_stream`]) for reading, buffered; with the name reports give it.
pub fn open_stream(
    path: &Path,
) -> Result<
    (
        std::io::BufReader<Box<dyn std::io::Read + Send>>,
        std::path::PathBuf,
    ),
    ArchiveError,
> {
    let (input, name): (Box<dyn std::io::Read + Send>, _) = if path == Path::new("-") {
        (Box::new(std::io::stdin()), "(standard input)".into())
    } else {
        let f = File::open(path).map_err(ArchiveError::io("open", path))?;
        (Box::new(f), path.to_path_buf())
    };
    let mut input = std::io::BufReader::with_capacity(1 << 20, input);
    // Volumes one after another (`cat NAME.kar NAME.kar.0*`) are read as the archive they hold.
    let mut magic = Vec::with_capacity(8);
    std::io::Read::by_ref(&mut input)
        .take(8)
        .read_to_end(&mut magic)
        .map_err(ArchiveError::io("read", path))?;
    let head = std::io::Cursor::new(magic);
    let volumes = crate::format::volume::VolumeHeader::is_volume(head.get_ref());
    let chained: Box<dyn std::io::Read + Send> = if volumes {
        Box::new(super::volume::VolumeStream::new(head.chain(input)))
    } else {
        Box::new(head.chain(input))
    };
    Ok((std::io::BufReader::with_capacity(1 << 20, chained), name))
}

impl Source {
    /// Maps a file read-only, with clear errors for what is not an archive file.
    pub fn map(path: &Path) -> Result<Source, ArchiveError> {
        let meta = std::fs::metadata(path).map_err(ArchiveError::io("open", path))?;
        if meta.is_dir() {
            return Err(ArchiveError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        if meta.len() == 0 {
            return Err(ArchiveError::Empty {
                path: path.to_path_buf(),
            });
        }
        let mut file = File::open(path).map_err(ArchiveError::io("open", path))?;
        let mut magic = [0u8; 8];
        let head =
            std::io::Read::read(&mut file, &mut magic).map_err(ArchiveError::io("read", path))?;
        if crate::format::volume::VolumeHeader::is_volume(&magic[..head]) {
            return map_set(path);
        }
        // SAFETY: the map is read-only and kar never writes to a file it reads. The contract is
        // that nobody truncates or rewrites the archive while it is open: archives are written
        // once and then immutable. If another process changed the bytes anyway, every read is
        // still checked against blake3 hashes, so the damage shows as a verification error
        // (a truncation could still fault the process; that is the cost of reading in place).
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(ArchiveError::io("memory-map", path))?;
        let len = crate::format::footer::archive_len(&map);
        Ok(Source::Mapped { map, len })
    }
}
