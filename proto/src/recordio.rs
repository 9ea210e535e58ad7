//! RecordIO framing (`<decimal length>\n<bytes>`), as used by the v1 scheduler event stream.

/// Frames one record.
pub fn encode(record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.len() + 8);
    out.extend_from_slice(record.len().to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(record);
    out
}

/// Largest record a [`Decoder`] accepts by default: 64 MiB (an OFFERS event for thousands of
/// agents stays far below it).
pub const DEFAULT_MAX_RECORD: usize = 64 * 1024 * 1024;

/// Longest length prefix read before giving up on a stream that never sends `\n`.
const MAX_PREFIX: usize = 20;

/// An incremental decoder: feed it bytes as they arrive, take whole records out. Records longer
/// than its limit are refused, so a hostile or broken peer cannot make it buffer without bound.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max_record: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::with_limit(DEFAULT_MAX_RECORD)
    }
}

/// The stream was not RecordIO, or announced a record over the limit.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    #[error("bad recordio length prefix: {0:?}")]
    BadPrefix(String),
    #[error("recordio record of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that refuses records longer than `max_record` bytes.
    pub fn with_limit(max_record: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            max_record,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete record, if one has fully arrived.
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        let Some(nl) = self
            .buf
            .iter()
            .take(MAX_PREFIX + 1)
            .position(|&b| b == b'\n')
        else {
            if self.buf.len() > MAX_PREFIX {
                let prefix = String::from_utf8_lossy(&self.buf[..MAX_PREFIX]).to_string();
                return Err(FramingError::BadPrefix(prefix));
            }
            return Ok(None);
        };
        let prefix = String::from_utf8_lossy(&self.buf[..nl]).to_string();
        let len: usize = prefix
            .trim()
            .parse()
            .map_err(|_| FramingError::BadPrefix(prefix))?;
        if len > self.max_record {
            return Err(FramingError::TooLarge {
                len,
                max: self.max_record,
            });
        }
        if self.buf.len() < nl + 1 + len {
            return Ok(None);
        }
        let record = self.buf[nl + 1..nl + 1 + len].to_vec();
        self.buf.drain(..nl + 1 + len);
        Ok(Some(record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_split_records() {
        let mut wire = encode(br#"{"type":"SUBSCRIBED"}"#);
        wire.extend(encode(br#"{"type":"HEARTBEAT"}"#));
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for chunk in wire.chunks(5) {
            d.push(chunk);
            while let Some(r) = d.next_record().unwrap() {
                got.push(String::from_utf8(r).unwrap());
            }
        }
        assert_eq!(got, [r#"{"type":"SUBSCRIBED"}"#, r#"{"type":"HEARTBEAT"}"#]);
    }

    #[test]
    fn oversized_records_and_endless_prefixes_are_refused() {
        let mut d = Decoder::with_limit(4);
        d.push(b"5\nhello");
        assert!(matches!(
            d.next_record(),
            Err(FramingError::TooLarge { len: 5, max: 4 })
        ));
        let mut d = Decoder::new();
        d.push(&[b'1'; 64]);
        assert!(matches!(d.next_record(), Err(FramingError::BadPrefix(_))));
    }
}
