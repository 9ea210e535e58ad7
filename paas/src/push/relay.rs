//! A deploy's output on its way to whoever started it (the pusher's hook, which prints it as
//! `remote:` lines): bounded everywhere, so a tenant's build can never make the PaaS buffer
//! what the pusher does not read. Lines are cut at [`MAX_LINE`] and at most [`CAPACITY`] wait;
//! a slow reader slows the relay (the build itself writes to its log and goes on), and a
//! reader that takes nothing for [`STALL`] is cut off, which the deploy sees as the pusher
//! leaving (it stops and rolls back, and the push is rejected).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

/// Lines waiting for the listener at most.
pub const CAPACITY: usize = 1024;
/// A listener that takes no line for this long is cut off.
pub const STALL: std::time::Duration = std::time::Duration::from_secs(20);
/// The longest line relayed, in bytes; a longer one is cut, saying so.
pub const MAX_LINE: usize = 4096;

/// How long the verdict waits for a slow listener to make room.
const FINISH_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The sending half; see the module docs.
pub struct Relay {
    /// `None`: nobody listens (a rollback or config change answered by its outcome alone).
    tx: Option<mpsc::Sender<String>>,
    cut: AtomicBool,
}

impl Relay {
    /// A relay and the listener's half.
    pub fn new() -> (Relay, mpsc::Receiver<String>) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        (
            Relay {
                tx: Some(tx),
                cut: AtomicBool::new(false),
            },
            rx,
        )
    }

    /// A relay nobody listens to: lines go nowhere, and it never counts as left.
    pub fn discard() -> Relay {
        Relay {
            tx: None,
            cut: AtomicBool::new(false),
        }
    }

    /// Sends one line (cut at [`MAX_LINE`]), waiting while [`CAPACITY`] lines wait; a
    /// listener that takes nothing for [`STALL`] is cut off.
    pub async fn say(&self, line: impl Into<String>) {
        self.say_within(line, STALL).await
    }

    async fn say_within(&self, line: impl Into<String>, stall: std::time::Duration) {
        let Some(tx) = &self.tx else { return };
        if self.cut.load(Ordering::Relaxed) {
            return;
        }
        let mut line = line.into();
        if line.len() > MAX_LINE {
            let mut end = MAX_LINE;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
            line.push_str(" [cut]");
        }
        if tokio::time::timeout(stall, tx.send(line)).await.is_err() {
            tracing::warn!(
                "a pusher took none of the deploy's output for {stall:?} ({CAPACITY} lines \
                 waiting): cut off"
            );
            self.cut.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the listener is gone: it hung up, or it was cut off for not reading.
    pub fn left(&self) -> bool {
        self.cut.load(Ordering::Relaxed) || self.tx.as_ref().is_some_and(|t| t.is_closed())
    }

    /// The last word (the verdict the hook waits for): waits for room rather than cutting
    /// off, unless the listener already left.
    pub async fn finish(self, line: String) {
        if let (Some(tx), false) = (&self.tx, self.cut.load(Ordering::Relaxed)) {
            let _ = tokio::time::timeout(FINISH_WAIT, tx.send(line)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_slow_reader_slows_the_relay_and_a_stalled_one_is_cut_off() {
        let (relay, mut rx) = Relay::new();
        let stall = std::time::Duration::from_millis(200);
        // A reader slower than the writer gets every line.
        let reader = tokio::spawn(async move {
            let mut got = 0;
            while got < 3 * CAPACITY {
                if rx.recv().await.is_none() {
                    break;
                }
                got += 1;
                if got % 512 == 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
            (got, rx)
        });
        for i in 0..3 * CAPACITY {
            relay.say_within(format!("line {i}"), stall).await;
        }
        let (got, mut rx) = reader.await.expect("reader");
        assert_eq!(got, 3 * CAPACITY);
        assert!(!relay.left());
        // A reader that stops: the buffer fills, then it is cut off.
        for i in 0..CAPACITY + 1 {
            relay.say_within(format!("line {i}"), stall).await;
        }
        assert!(relay.left(), "cut off after the stall");
        let mut kept = 0;
        while rx.try_recv().is_ok() {
            kept += 1;
        }
        assert_eq!(kept, CAPACITY, "never more than the buffer");
        relay.say("after").await;
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_a_gone_reader_is_noticed() {
        let (relay, mut rx) = Relay::new();
        relay.say("é".repeat(MAX_LINE)).await;
        let line = rx.recv().await.unwrap_or_default();
        assert!(line.len() <= MAX_LINE + 6 && line.ends_with(" [cut]"));
        assert!(!relay.left());
        drop(rx);
        assert!(relay.left());
        assert!(!Relay::discard().left());
    }
}
