//! Task stdout/stderr files in the sandbox: size-bounded rotation and ranged reads.
//!
//! The task writes to the files directly (opened `O_APPEND` by the supervisor), so the agent
//! rotates by copy-and-truncate: when a file exceeds the limit its content is copied to
//! `<name>.1` (replacing the previous one) and the file is truncated to zero; the writer's next
//! append lands at the new end. On disk a stream thus stays below about twice the limit plus
//! what is written between two checks. Offsets restart at 0 after a rotation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Default per-stream limit: 10 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Largest single read the HTTP API serves.
pub const MAX_READ: u64 = 16 * 1024 * 1024;

/// The two captured streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn parse(s: &str) -> Option<Stream> {
        match s {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }

    pub fn file_name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub fn path_in(self, sandbox: &Path) -> PathBuf {
        sandbox.join(self.file_name())
    }
}

/// Rotates `path` if it is larger than `max_bytes`. Returns whether it rotated.
pub fn rotate_if_needed(path: &Path, max_bytes: u64) -> io::Result<bool> {
    let len = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= max_bytes {
        return Ok(false);
    }
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    let rotated = PathBuf::from(rotated);
    // Keep only the newest `max_bytes` of the old content.
    let mut src = File::open(path)?;
    let keep = len.min(max_bytes);
    src.seek(SeekFrom::Start(len - keep))?;
    let mut tmp = rotated.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut dst = File::create(&tmp)?;
        io::copy(&mut src.take(keep), &mut dst)?;
    }
    if let Ok(meta) = fs::metadata(path) {
        use std::os::unix::fs::MetadataExt;
        let _ = std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()));
    }
    fs::rename(&tmp, &rotated)?;
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// Reads up to `length` bytes (capped at [`MAX_READ`]) from `offset`; past the end → empty.
pub fn read_range(path: &Path, offset: u64, length: Option<u64>) -> io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    if offset >= len {
        return Ok(Vec::new());
    }
    let want = length
        .unwrap_or(len - offset)
        .min(len - offset)
        .min(MAX_READ);
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(want as usize);
    f.take(want).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn rotation_bounds_size_while_writer_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        let mut writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let max = 4096;
        let line = [b'x'; 100];
        let mut rotations = 0;
        for i in 0..1000 {
            writer.write_all(&line).unwrap();
            if i % 10 == 0 && rotate_if_needed(&path, max).unwrap() {
                rotations += 1;
            }
            let size = fs::metadata(&path).unwrap().len();
            assert!(size <= max + 10 * 100 + 100, "size {size}");
        }
        assert!(rotations > 10);
        let old = fs::metadata(dir.path().join("stdout.1")).unwrap().len();
        assert!(old <= max);
        // The writer keeps appending at the (new) end: no sparse hole.
        writer.write_all(b"tail").unwrap();
        let content = fs::read(&path).unwrap();
        assert!(content.ends_with(b"tail"));
        assert!(!content.contains(&0u8));
    }

    #[test]
    fn ranged_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stderr");
        fs::write(&path, b"0123456789").unwrap();
        assert_eq!(read_range(&path, 0, None).unwrap(), b"0123456789");
        assert_eq!(read_range(&path, 3, Some(4)).unwrap(), b"3456");
        assert_eq!(read_range(&path, 8, Some(100)).unwrap(), b"89");
        assert!(read_range(&path, 100, None).unwrap().is_empty());
        assert!(!rotate_if_needed(&path, 100).unwrap());
        assert!(rotate_if_needed(&path, 5).unwrap());
        assert_eq!(fs::read(dir.path().join("stderr.1")).unwrap(), b"56789");
        assert!(fs::read(&path).unwrap().is_empty());
    }
}
