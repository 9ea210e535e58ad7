//! Task stdout/stderr files in the sandbox: size-bounded rotation and ranged reads.
//!
//! The task writes to the files directly (opened `O_APPEND` by the supervisor), so the agent
//! rotates by copy-and-truncate: when a file exceeds the limit its content is copied to
//! `<name>.1` (replacing the previous one) and the file is truncated to zero; the writer's next
//! append lands at the new end. On disk a stream thus stays below about twice the limit plus
//! what is written between two checks. Offsets restart at 0 after a rotation.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Default per-stream limit: 10 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Largest single read the HTTP API serves.
pub const MAX_READ: u64 = 16 * 1024 * 1024;

pub use drove_proto::output::Stream;

/// Opens a task's log file as the agent (root) without trusting the task: the last path
/// component must not be a symlink (`O_NOFOLLOW`), the file must be a regular file, and it must
/// belong to the owner of the directory it sits in (the sandbox, owned by the task's user), so
/// neither a symlink nor a hard link to a host file is read or written through.
/// `O_NONBLOCK` keeps a FIFO planted in its place from hanging the open.
fn open_untrusted(path: &Path, write: bool) -> io::Result<File> {
    let refuse = |why: &str| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refusing {}: {why}", path.display()),
        )
    };
    // lstat first, so a device node is never opened at all.
    let pre = fs::symlink_metadata(path)?;
    if pre.file_type().is_symlink() {
        return Err(refuse("it is a symlink"));
    }
    if !pre.file_type().is_file() {
        return Err(refuse("not a regular file"));
    }
    let f = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                refuse("it is a symlink")
            } else {
                e
            }
        })?;
    let meta = f.metadata()?;
    if !meta.file_type().is_file() || meta.ino() != pre.ino() || meta.dev() != pre.dev() {
        return Err(refuse("it changed while being opened"));
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let dir_owner = fs::symlink_metadata(dir)?.uid();
    if meta.uid() != dir_owner {
        return Err(refuse("it does not belong to the sandbox's owner"));
    }
    Ok(f)
}

/// Rotates `path` if it is larger than `max_bytes`. Returns whether it rotated.
///
/// The task owns the directory, so every step avoids following what it may have planted:
/// the log is opened by [`open_untrusted`], the copy is written to a fresh file created with
/// `O_EXCL|O_NOFOLLOW` (after unlinking whatever had its name), and `rename` replaces a link
/// at `<name>.1` rather than writing through it.
pub fn rotate_if_needed(path: &Path, max_bytes: u64) -> io::Result<bool> {
    let mut src = match open_untrusted(path, true) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let meta = src.metadata()?;
    let len = meta.len();
    if len <= max_bytes {
        return Ok(false);
    }
    let mut rotated = path.as_os_str().to_owned();
    rotated.push(".1");
    let rotated = PathBuf::from(rotated);
    // Keep only the newest `max_bytes` of the old content.
    let keep = len.min(max_bytes);
    src.seek(SeekFrom::Start(len - keep))?;
    let mut tmp = rotated.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    {
        let mut dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&tmp)?;
        io::copy(&mut (&mut src).take(keep), &mut dst)?;
        // Handed to the log's owner; a failure only leaves the copy root's.
        let _ = std::os::unix::fs::fchown(&dst, Some(meta.uid()), Some(meta.gid()));
    }
    fs::rename(&tmp, &rotated)?;
    src.set_len(0)?;
    Ok(true)
}

/// Opens a file a task left in its sandbox's top directory for reading, with the checks of
/// [`open_untrusted`] (no symlink, a regular file of the sandbox's owner).
pub fn open_task_file(path: &Path) -> io::Result<File> {
    open_untrusted(path, false)
}

/// Reads up to `length` bytes (capped at [`MAX_READ`]) from `offset`; past the end → empty.
/// The file is opened by [`open_untrusted`]: a symlink or foreign file is refused.
pub fn read_range(path: &Path, offset: u64, length: Option<u64>) -> io::Result<Vec<u8>> {
    let mut f = open_untrusted(path, false)?;
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

/// The last `n` bytes of a stream file (at most `MAX_READ`), through the same checks.
pub fn read_tail(path: &Path, n: u64) -> io::Result<Vec<u8>> {
    let len = open_untrusted(path, false)?.metadata()?.len();
    read_range(path, len.saturating_sub(n.min(MAX_READ)), None)
}

/// Creates (or opens for appending) a stream file in a sandbox without following a link at
/// its name; the executor and the launcher use this before the task runs.
pub fn open_for_append(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("refusing {}: not a regular file", path.display()),
        ));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_tail_is_the_last_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        fs::write(&path, b"one\ntwo\nthree\n").unwrap();
        assert_eq!(read_tail(&path, 6).unwrap(), b"three\n");
        assert_eq!(read_tail(&path, 1000).unwrap(), b"one\ntwo\nthree\n");
        assert_eq!(read_tail(&path, 0).unwrap(), b"");
    }

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
