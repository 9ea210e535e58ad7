//! A compact resource vector (`cpus`, `mem`, `disk`, `gpus`, `ports`) with the arithmetic the
//! allocator and the agents need, and conversions to and from Mesos `Resource` lists and the
//! `cpus:2;mem:2048;ports:[31000-32000]` text form.

use std::fmt;

use serde_json::{json, Value};

use crate::mesos::{Resource, ValueType};

/// Scalars are compared with this tolerance, as Mesos does with its fixed-point arithmetic.
const EPSILON: f64 = 1e-6;

/// Inclusive, sorted, non-overlapping, non-adjacent `[begin, end]` ranges.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    pub fn new(mut ranges: Vec<(u64, u64)>) -> Self {
        ranges.retain(|(b, e)| b <= e);
        ranges.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (b, e) in ranges {
            match out.last_mut() {
                Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
                _ => out.push((b, e)),
            }
        }
        Ranges(out)
    }

    pub fn as_slice(&self) -> &[(u64, u64)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of values covered.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(b, e)| e - b + 1).sum()
    }

    pub fn union(&self, other: &Ranges) -> Ranges {
        if other.is_empty() {
            return self.clone();
        }
        let mut v = self.0.clone();
        v.extend_from_slice(&other.0);
        Ranges::new(v)
    }

    pub fn subtract(&self, other: &Ranges) -> Ranges {
        if other.is_empty() {
            return self.clone();
        }
        let mut out = Vec::new();
        for &(b, e) in &self.0 {
            let mut cur = b;
            let mut done = false;
            for &(ob, oe) in &other.0 {
                if oe < cur || ob > e {
                    continue;
                }
                if ob > cur {
                    out.push((cur, ob - 1));
                }
                if oe >= e {
                    done = true;
                    break;
                }
                cur = oe + 1;
            }
            if !done && cur <= e {
                out.push((cur, e));
            }
        }
        Ranges(out)
    }

    pub fn contains(&self, other: &Ranges) -> bool {
        other
            .0
            .iter()
            .all(|&(ob, oe)| self.0.iter().any(|&(b, e)| b <= ob && oe <= e))
    }

    /// The first `n` values, as ranges.
    pub fn take(&self, mut n: u64) -> Ranges {
        let mut out = Vec::new();
        for &(b, e) in &self.0 {
            if n == 0 {
                break;
            }
            let len = (e - b + 1).min(n);
            out.push((b, b + len - 1));
            n -= len;
        }
        Ranges(out)
    }

    /// Every value, in order.
    pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().flat_map(|&(b, e)| b..=e)
    }
}

impl fmt::Display for Ranges {
    /// Mesos's flattened form: `[31000-31002, 31005-31005]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(b, e)| format!("{b}-{e}")).collect();
        write!(f, "[{}]", parts.join(", "))
    }
}

/// A resource vector. Only unreserved (`*`) resources exist in drove for now.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resources {
    pub cpus: f64,
    pub mem: f64,
    pub disk: f64,
    pub gpus: f64,
    pub ports: Ranges,
}

/// A resource list or text that drove cannot use, naming the piece at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    #[error("unknown resource {0:?} (drove knows cpus, mem, disk, gpus, ports)")]
    UnknownName(String),
    #[error("resource {name:?} must be of type {expected}")]
    WrongType {
        name: String,
        expected: &'static str,
    },
    #[error("resource {name:?} has an invalid value: {value:?}")]
    BadValue { name: String, value: String },
    #[error("resource {0:?} is negative")]
    Negative(String),
}

impl Resources {
    pub fn cpus_mem(cpus: f64, mem: f64) -> Self {
        Resources {
            cpus,
            mem,
            ..Default::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.cpus <= EPSILON
            && self.mem <= EPSILON
            && self.disk <= EPSILON
            && self.gpus <= EPSILON
            && self.ports.is_empty()
    }

    pub fn add(&mut self, other: &Resources) {
        self.cpus += other.cpus;
        self.mem += other.mem;
        self.disk += other.disk;
        self.gpus += other.gpus;
        self.ports = self.ports.union(&other.ports);
    }

    /// Subtracts `other`, clamping each scalar at zero.
    pub fn subtract(&mut self, other: &Resources) {
        fn sub(a: f64, b: f64) -> f64 {
            let v = a - b;
            if v < EPSILON {
                0.0
            } else {
                v
            }
        }
        self.cpus = sub(self.cpus, other.cpus);
        self.mem = sub(self.mem, other.mem);
        self.disk = sub(self.disk, other.disk);
        self.gpus = sub(self.gpus, other.gpus);
        self.ports = self.ports.subtract(&other.ports);
    }

    /// `other ⊆ self`.
    pub fn contains(&self, other: &Resources) -> bool {
        other.cpus <= self.cpus + EPSILON
            && other.mem <= self.mem + EPSILON
            && other.disk <= self.disk + EPSILON
            && other.gpus <= self.gpus + EPSILON
            && self.ports.contains(&other.ports)
    }

    /// Converts a Mesos resource list. Unknown names and wrong types are errors.
    pub fn from_mesos(list: &[Resource]) -> Result<Resources, ResourceError> {
        let mut r = Resources::default();
        for res in list {
            match res.name.as_str() {
                "cpus" | "mem" | "disk" | "gpus" => {
                    let value = match (&res.kind, &res.scalar) {
                        (ValueType::Scalar, Some(s)) => s.value,
                        _ => {
                            return Err(ResourceError::WrongType {
                                name: res.name.clone(),
                                expected: "SCALAR",
                            })
                        }
                    };
                    if !value.is_finite() {
                        return Err(ResourceError::BadValue {
                            name: res.name.clone(),
                            value: value.to_string(),
                        });
                    }
                    if value < 0.0 {
                        return Err(ResourceError::Negative(res.name.clone()));
                    }
                    match res.name.as_str() {
                        "cpus" => r.cpus += value,
                        "mem" => r.mem += value,
                        "disk" => r.disk += value,
                        _ => r.gpus += value,
                    }
                }
                "ports" => {
                    let ranges = match (&res.kind, &res.ranges) {
                        (ValueType::Ranges, Some(list)) => list,
                        _ => {
                            return Err(ResourceError::WrongType {
                                name: res.name.clone(),
                                expected: "RANGES",
                            })
                        }
                    };
                    let extra =
                        Ranges::new(ranges.range.iter().map(|x| (x.begin, x.end)).collect());
                    r.ports = r.ports.union(&extra);
                }
                other => return Err(ResourceError::UnknownName(other.to_string())),
            }
        }
        Ok(r)
    }

    /// The Mesos resource list (role `*`), omitting zero scalars and empty ranges.
    pub fn to_mesos(&self) -> Vec<Resource> {
        let mut out = Vec::with_capacity(5);
        for (name, v) in [
            ("cpus", self.cpus),
            ("mem", self.mem),
            ("disk", self.disk),
            ("gpus", self.gpus),
        ] {
            if v > EPSILON {
                out.push(Resource::scalar(name, round(v)));
            }
        }
        if !self.ports.is_empty() {
            out.push(Resource::ranges("ports", self.ports.as_slice()));
        }
        out
    }

    /// The flattened form `/master/state` uses: `{"cpus":4,"mem":1024,"ports":"[31000-32000]"}`.
    pub fn flatten(&self) -> Value {
        let mut v = json!({
            "cpus": round(self.cpus),
            "gpus": round(self.gpus),
            "mem": round(self.mem),
            "disk": round(self.disk),
        });
        if !self.ports.is_empty() {
            v["ports"] = Value::from(self.ports.to_string());
        }
        v
    }

    /// Parses the Mesos text form: `cpus:2;mem:2048;disk:1000;ports:[31000-32000,33000-33100]`.
    /// A role suffix such as `cpus(*):2` is accepted for `*` only.
    pub fn parse(text: &str) -> Result<Resources, ResourceError> {
        let mut r = Resources::default();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| ResourceError::BadValue {
                    name: part.to_string(),
                    value: String::new(),
                })?;
            let name = name.trim().trim_end_matches("(*)");
            let value = value.trim();
            let bad = || ResourceError::BadValue {
                name: name.to_string(),
                value: value.to_string(),
            };
            match name {
                "cpus" | "mem" | "disk" | "gpus" => {
                    let v: f64 = value.parse().map_err(|_| bad())?;
                    if !v.is_finite() {
                        return Err(bad());
                    }
                    if v < 0.0 {
                        return Err(ResourceError::Negative(name.to_string()));
                    }
                    match name {
                        "cpus" => r.cpus = v,
                        "mem" => r.mem = v,
                        "disk" => r.disk = v,
                        _ => r.gpus = v,
                    }
                }
                "ports" => {
                    let inner = value
                        .strip_prefix('[')
                        .and_then(|v| v.strip_suffix(']'))
                        .ok_or_else(bad)?;
                    let mut ranges = Vec::new();
                    for piece in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        let (b, e) = piece.split_once('-').unwrap_or((piece, piece));
                        let b: u64 = b.trim().parse().map_err(|_| bad())?;
                        let e: u64 = e.trim().parse().map_err(|_| bad())?;
                        if b > e || e > 65535 {
                            return Err(bad());
                        }
                        ranges.push((b, e));
                    }
                    r.ports = Ranges::new(ranges);
                }
                other => return Err(ResourceError::UnknownName(other.to_string())),
            }
        }
        Ok(r)
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpus:{};mem:{};disk:{}",
            round(self.cpus),
            round(self.mem),
            round(self.disk)
        )?;
        if self.gpus > EPSILON {
            write!(f, ";gpus:{}", round(self.gpus))?;
        }
        if !self.ports.is_empty() {
            let parts: Vec<String> = self
                .ports
                .as_slice()
                .iter()
                .map(|(b, e)| format!("{b}-{e}"))
                .collect();
            write!(f, ";ports:[{}]", parts.join(","))?;
        }
        Ok(())
    }
}

/// Rounds to Mesos's three-decimal fixed point so sums don't print as 0.30000000000000004.
fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mesos_text() {
        let r = Resources::parse("cpus:2;mem:2048;ports:[31000-32000, 40000-40010]").unwrap();
        assert_eq!(r.cpus, 2.0);
        assert_eq!(r.mem, 2048.0);
        assert_eq!(r.ports.count(), 1001 + 11);
        assert!(matches!(
            Resources::parse("cpu:1"),
            Err(ResourceError::UnknownName(n)) if n == "cpu"
        ));
        assert!(Resources::parse("mem:lots").is_err());
    }

    #[test]
    fn ranges_subtract_and_contain() {
        let all = Ranges::new(vec![(10, 20)]);
        let some = Ranges::new(vec![(12, 13), (20, 20)]);
        let rest = all.subtract(&some);
        assert_eq!(rest.as_slice(), &[(10, 11), (14, 19)]);
        assert!(all.contains(&some));
        assert!(!rest.contains(&some));
        assert_eq!(rest.union(&some), all);
        assert_eq!(all.take(3).as_slice(), &[(10, 12)]);
    }

    #[test]
    fn arithmetic_and_round_trip() {
        let mut total = Resources::parse("cpus:1;mem:100;ports:[1-5]").unwrap();
        let used = Resources::parse("cpus:0.3;mem:40;ports:[2-2]").unwrap();
        assert!(total.contains(&used));
        total.subtract(&used);
        assert!((total.cpus - 0.7).abs() < 1e-9);
        assert!(!total.contains(&used));
        let back = Resources::from_mesos(&total.to_mesos()).unwrap();
        assert_eq!(back.ports, total.ports);
        assert_eq!(total.flatten()["ports"], "[1-1, 3-5]");
    }
}
