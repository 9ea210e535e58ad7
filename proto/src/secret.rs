//! How every component takes a secret (cluster secret, tokens, passwords): from a file
//! (`--x-file PATH`, or `DROVE_X_FILE`) or from the environment (`DROVE_X`). The plain flag
//! (`--x VALUE`) still works, but every local user, every task included, reads a process's
//! command line in `/proc/<pid>/cmdline`, so the binary warns when a secret arrives there
//! ([`on_command_line`]).

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a secret file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is empty")]
    Empty { path: PathBuf },
    #[error("{path} can be read by every user (mode {mode:04o}); make it 0600")]
    Exposed { path: PathBuf, mode: u32 },
}

/// The secret in `path`: its first line, trimmed. Refused when the file is empty or when
/// every user may read it (as ssh refuses such a key).
pub fn read_file(path: &Path) -> Result<String, SecretError> {
    let err = |source| SecretError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o004 != 0 {
        return Err(SecretError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(err)?;
    let secret = text.lines().next().unwrap_or("").trim().to_string();
    if secret.is_empty() {
        return Err(SecretError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(secret)
}

/// A clap `value_parser` for `--x-file PATH`: the secret in the file.
pub fn from_file(path: &str) -> Result<String, SecretError> {
    read_file(Path::new(path))
}

/// The flags among `secret_flags` (e.g. `"--cluster-secret"`) that `args` carries a value for
/// (`--flag VALUE` or `--flag=VALUE`); their `-file` forms do not count.
pub fn on_command_line(
    args: impl IntoIterator<Item = OsString>,
    secret_flags: &[&str],
) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for arg in args {
        let arg = arg.to_string_lossy();
        let name = arg.split_once('=').map_or(&*arg, |(n, _)| n);
        if let Some(flag) = secret_flags.iter().find(|f| **f == name) {
            if !found.iter().any(|f| f == flag) {
                found.push((*flag).to_string());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_secret_file_is_read_and_checked() {
        let dir = std::env::temp_dir().join(format!("drove-secret-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s");
        fs::write(&file, "  s3cret \nsecond line\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_file(&file).unwrap(), "s3cret");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_file(&file).unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("0600"), "{e}");
        fs::write(&file, "\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read_file(&file), Err(SecretError::Empty { .. })));
        assert!(matches!(
            read_file(&dir.join("missing")),
            Err(SecretError::Read { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_on_the_command_line_are_found() {
        let args = [
            "drove",
            "agent",
            "--cluster-secret=abc",
            "--token",
            "t",
            "--cluster-secret-file",
            "/f",
            "--tokenish",
        ]
        .map(OsString::from);
        assert_eq!(
            on_command_line(args, &["--cluster-secret", "--token", "--paas-token"]),
            ["--cluster-secret", "--token"]
        );
    }
}
