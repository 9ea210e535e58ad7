//! What this machine offers: detected resources, `--resources` overrides, attributes, hostname.
//!
//! Detection (Mesos-like): `cpus` = available parallelism (nproc), `mem` = total RAM minus
//! 1 GiB reserved for the system (but at least half of it), `disk` = space available to the
//! work dir's filesystem, `ports` = `[31000-32000]`. Every resource named in `--resources`
//! replaces the detected value; unnamed ones keep theirs.

use std::path::Path;

use drove_proto::mesos::Attribute;
use drove_proto::{Ranges, Resources};

pub const DEFAULT_PORTS: (u64, u64) = (31000, 32000);

/// Total RAM in MiB from `/proc/meminfo`'s `MemTotal` (kB).
pub fn parse_meminfo_total_mb(meminfo: &str) -> Option<f64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
}

/// Memory offered out of `total_mb`: total − 1 GiB, but never less than half.
pub fn offered_mem_mb(total_mb: f64) -> f64 {
    (total_mb - 1024.0).max(total_mb / 2.0).floor()
}

/// Detects the machine's resources.
pub fn detect(work_dir: &Path) -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo_total_mb(&t))
        .map(offered_mem_mb)
        .unwrap_or(0.0);
    let disk = nix::sys::statvfs::statvfs(work_dir)
        .map(|s| {
            (s.blocks_available() as f64 * s.fragment_size() as f64 / (1024.0 * 1024.0)).floor()
        })
        .unwrap_or(0.0);
    Resources {
        cpus,
        mem,
        disk,
        gpus: 0.0,
        ports: Ranges::new(vec![DEFAULT_PORTS]),
    }
}

/// Applies `--resources` (Mesos text form) on top of the detected resources.
pub fn with_overrides(
    detected: Resources,
    spec: Option<&str>,
) -> Result<Resources, drove_proto::ResourceError> {
    let Some(spec) = spec else {
        return Ok(detected);
    };
    let given = Resources::parse(spec)?;
    let names: Vec<String> = spec
        .split(';')
        .filter_map(|p| p.split_once(':'))
        .map(|(n, _)| n.trim().trim_end_matches("(*)").to_string())
        .collect();
    let has = |n: &str| names.iter().any(|x| x == n);
    let mut r = detected;
    if has("cpus") {
        r.cpus = given.cpus;
    }
    if has("mem") {
        r.mem = given.mem;
    }
    if has("disk") {
        r.disk = given.disk;
    }
    if has("gpus") {
        r.gpus = given.gpus;
    }
    if has("ports") {
        r.ports = given.ports;
    }
    Ok(r)
}

/// Parses `--attributes "rack:r1;zone:a;weight:3"`: numbers become SCALAR, the rest TEXT.
pub fn parse_attributes(spec: &str) -> Result<Vec<Attribute>, String> {
    let mut out = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once(':')
            .ok_or_else(|| format!("attribute {part:?} is not name:value"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return Err(format!("attribute {part:?} has no name"));
        }
        match value.parse::<f64>() {
            Ok(v) if v.is_finite() => out.push(Attribute {
                name: name.to_string(),
                kind: drove_proto::mesos::ValueType::Scalar,
                scalar: Some(drove_proto::mesos::Scalar { value: v }),
                ranges: None,
                set: None,
                text: None,
            }),
            _ => out.push(Attribute::text(name, value)),
        }
    }
    Ok(out)
}

/// The machine's hostname (`/proc/sys/kernel/hostname`), or `localhost`.
pub fn machine_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_reservation() {
        assert_eq!(offered_mem_mb(16384.0), 15360.0);
        assert_eq!(offered_mem_mb(1500.0), 750.0);
        let meminfo = "MemTotal:       24684544 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_meminfo_total_mb(meminfo), Some(24106.0));
    }

    #[test]
    fn detects_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let r = detect(dir.path());
        assert!(r.cpus >= 1.0);
        assert!(r.mem > 0.0);
        assert!(r.disk > 0.0);
        assert_eq!(r.ports.as_slice(), &[(31000, 32000)]);
        let nproc = std::process::Command::new("nproc").output().unwrap();
        let n: f64 = String::from_utf8_lossy(&nproc.stdout)
            .trim()
            .parse()
            .unwrap();
        assert_eq!(r.cpus, n);
    }

    #[test]
    fn overrides_replace_only_named_resources() {
        let detected = Resources::parse("cpus:8;mem:1000;disk:500;ports:[31000-32000]").unwrap();
        let r = with_overrides(detected.clone(), Some("cpus:2;ports:[40000-40010]")).unwrap();
        assert_eq!(r.cpus, 2.0);
        assert_eq!(r.mem, 1000.0);
        assert_eq!(r.disk, 500.0);
        assert_eq!(r.ports.as_slice(), &[(40000, 40010)]);
        assert!(with_overrides(detected, Some("cpu:1")).is_err());
    }

    #[test]
    fn attributes() {
        let a = parse_attributes("rack:r1; zone:a;weight:3").unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].text.as_ref().unwrap().value, "r1");
        assert_eq!(a[2].scalar.as_ref().unwrap().value, 3.0);
        assert!(parse_attributes("nonsense").is_err());
    }
}
