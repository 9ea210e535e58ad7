//! JSON decoding that names the offending field, plus stout's lenient scalar rules
//! (numbers may arrive as strings, `"Infinity"` is a double).

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::Deserialize;

/// A JSON body that could not be decoded, with the path of the field at fault.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DecodeError {
    /// Dotted path to the field (`subscribe.framework_info.name`), or `.` for the whole body.
    pub path: String,
    pub message: String,
}

/// Decodes `body` as `T`, reporting the failing field's path on error.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => {
            de.end().map_err(|e| DecodeError {
                path: ".".into(),
                message: e.to_string(),
            })?;
            Ok(v)
        }
        Err(err) => {
            let inner = err.inner().to_string();
            let mut path = err.path().to_string();
            // serde reports a missing field at its parent; name the field itself.
            if let Some(field) = missing_field(&inner) {
                path = if path == "." {
                    field.to_string()
                } else {
                    format!("{path}.{field}")
                };
            }
            Err(DecodeError {
                path,
                message: inner,
            })
        }
    }
}

fn missing_field(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

/// A double that may be written as a number or a string (`"1.5"`, `"Infinity"`).
pub fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        F(f64),
        S(String),
    }
    match Num::deserialize(d)? {
        Num::F(f) => Ok(f),
        Num::S(s) => match s.as_str() {
            "Infinity" | "inf" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .parse()
                .map_err(|_| de::Error::custom(format!("not a number: {other:?}"))),
        },
    }
}

/// An optional [`lenient_f64`].
pub fn lenient_opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "lenient_f64")] f64);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

/// An unsigned integer that may be written as a number or a string.
pub fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        U(u64),
        F(f64),
        S(String),
    }
    match Num::deserialize(d)? {
        Num::U(u) => Ok(u),
        Num::F(f) if f >= 0.0 && f.fract() == 0.0 => Ok(f as u64),
        Num::F(f) => Err(de::Error::custom(format!("not an unsigned integer: {f}"))),
        Num::S(s) => s
            .parse()
            .map_err(|_| de::Error::custom(format!("not an unsigned integer: {s:?}"))),
    }
}

/// An optional [`lenient_u64`].
pub fn lenient_opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    struct Wrap(#[serde(deserialize_with = "lenient_u64")] u64);
    Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
}

/// A signed integer that may be written as a number or a string.
pub fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        I(i64),
        F(f64),
        S(String),
    }
    match Num::deserialize(d)? {
        Num::I(i) => Ok(i),
        Num::F(f) if f.fract() == 0.0 => Ok(f as i64),
        Num::F(f) => Err(de::Error::custom(format!("not an integer: {f}"))),
        Num::S(s) => s
            .parse()
            .map_err(|_| de::Error::custom(format!("not an integer: {s:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::Call;

    #[test]
    fn names_missing_nested_field() {
        let body = br#"{"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u"}}}"#;
        let err = decode::<Call>(body).unwrap_err();
        assert_eq!(err.path, "subscribe.framework_info.name");
    }

    #[test]
    fn names_missing_top_level_field() {
        let err = decode::<Call>(br#"{"framework_id":{"value":"f"}}"#).unwrap_err();
        assert_eq!(err.path, "type");
    }

    #[test]
    fn malformed_json_is_an_error() {
        assert!(decode::<Call>(b"{not json").is_err());
        assert!(decode::<Call>(br#"{"type":"TEARDOWN"} trailing"#).is_err());
    }
}
