//! RecordIO framing (`<decimal length>\n<bytes>`), as used by the v1 scheduler event stream.

/// Frames one record.
pub fn encode(record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.len() + 8);
    out.extend_from_slice(record.len().to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(record);
    out
}

/// An incremental decoder: feed it bytes as they arrive, take whole records out.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

/// The stream was not RecordIO.
#[derive(Debug, thiserror::Error)]
#[error("bad recordio length prefix: {0:?}")]
pub struct FramingError(pub String);

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete record, if one has fully arrived.
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>, FramingError> {
        let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let prefix = String::from_utf8_lossy(&self.buf[..nl]).to_string();
        let len: usize = prefix.trim().parse().map_err(|_| FramingError(prefix))?;
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
}
