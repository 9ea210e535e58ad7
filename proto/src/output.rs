//! What tasks write (their stdout and stderr, a build's log), as people read it: terminal
//! escapes (colours, cursor moves, titles) and other control characters removed, progress
//! lines redrawn in place reduced to their last state, and bounded. The agent puts a failed
//! task's last lines in its status; the PaaS keeps builds' logs and picks out their errors.

use std::path::{Path, PathBuf};

/// A task's two captured streams: the name in the logs paths (agent, master and PaaS) and the
/// file in its sandbox.
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

    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// Its file in a task's sandbox.
    pub fn path_in(self, sandbox: &Path) -> PathBuf {
        sandbox.join(self.as_str())
    }
}

/// The last lines of a task's output as a person reads them: terminal escapes (colours, cursor
/// moves) and other control characters removed, blank lines skipped, at most `lines` lines of
/// at most `width` characters each (a longer one keeps its start, where the message usually
/// is).
pub fn last_lines(bytes: &[u8], lines: usize, width: usize) -> Vec<String> {
    let text = strip_escapes(&String::from_utf8_lossy(bytes));
    let mut out: Vec<String> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .rev()
        .take(lines)
        .map(|l| {
            let mut l: String = l.chars().take(width).collect();
            if l.chars().count() == width {
                l.push('…');
            }
            l
        })
        .collect();
    out.reverse();
    out
}

/// `text` without ANSI escape sequences (CSI `ESC [ … final`, OSC `ESC ] … BEL/ST`, and
/// two-byte `ESC x`) or other control characters but newline and tab.
pub fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                Some('[') => {
                    // Parameters and intermediates, up to the final byte @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' || (c == '\u{1b}' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {
                // A progress line redrawn in place: keep what was written last.
                if chars.peek() != Some(&'\n') {
                    if let Some(start) = out.rfind('\n') {
                        out.truncate(start + 1);
                    } else {
                        out.clear();
                    }
                }
            }
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_read_as_a_person_reads_them() {
        let raw = b"\x1b[32mstarting\x1b[0m\n\nprogress 10%\rprogress 100%\n\x1b]0;title\x07\x1b[1;31mError: boom: DATABASE_URL is not set\x1b[0m\n    at main (/app/server.js:3:9)\n";
        assert_eq!(
            last_lines(raw, 3, 200),
            [
                "progress 100%",
                "Error: boom: DATABASE_URL is not set",
                "    at main (/app/server.js:3:9)"
            ]
        );
        assert_eq!(last_lines(b"abcdef\n", 1, 3), ["abc…"]);
        assert!(last_lines(b"\n\n", 5, 10).is_empty());
    }
}
