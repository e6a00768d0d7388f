//! The bytes of an archive, whoever holds them: a read-only memory map of the file (the one place
//! kar uses `unsafe`), or bytes in memory. The reader and the index opened in place both read it.

use std::fs::File;
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
}

impl Deref for Source {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Source::Mapped { map, len } => &map[..*len],
            Source::Owned(v) => v,
        }
    }
}

/// Whether `path` is a FIFO or a character device (a pipe's end, a tape drive): read and written
/// as a stream, never mapped.
pub fn is_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo() || m.file_type().is_char_device())
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
    Ok((std::io::BufReader::with_capacity(1 << 20, input), name))
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
        let file = File::open(path).map_err(ArchiveError::io("open", path))?;
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
