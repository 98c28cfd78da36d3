//! The host's vital signs, read from Linux's /proc.

use std::path::Path;

use serde::Serialize;

/// What `/api/data` reports about the machine the API runs on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostReport {
    /// The kernel's host name.
    pub hostname: String,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: [f64; 3],
    /// Physical memory.
    pub memory: Memory,
    /// Seconds since boot.
    pub uptime_s: f64,
}

/// Physical memory, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Memory {
    /// `MemTotal`.
    pub total_bytes: u64,
    /// `MemAvailable`: what new work can use without swapping.
    pub available_bytes: u64,
}

impl HostReport {
    /// Reads the report from a procfs mounted at `proc_root` (normally `/proc`).
    ///
    /// Best effort: a file that cannot be read or parsed leaves its fields at zero (or the host
    /// name "unknown") and logs a warning, so the dashboard still gets the rest.
    pub fn read(proc_root: &Path) -> HostReport {
        let read = |name: &str| match std::fs::read_to_string(proc_root.join(name)) {
            Ok(text) => Some(text),
            Err(err) => {
                tracing::warn!(file = %proc_root.join(name).display(), %err, "cannot read host metrics");
                None
            }
        };
        let hostname = read("sys/kernel/hostname")
            .map(|text| text.trim().to_owned())
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "unknown".to_owned());
        let load = read("loadavg")
            .and_then(|text| parse_loadavg(&text))
            .unwrap_or_default();
        let memory = read("meminfo")
            .and_then(|text| parse_meminfo(&text))
            .unwrap_or_default();
        let uptime_s = read("uptime")
            .and_then(|text| parse_uptime(&text))
            .unwrap_or_default();
        HostReport {
            hostname,
            load,
            memory,
            uptime_s,
        }
    }
}

/// `0.52 0.58 0.59 1/467 12345` -> the three averages.
pub(crate) fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    ])
}

/// `MemTotal:  16318412 kB` lines -> bytes. Both fields must be present.
pub(crate) fn parse_meminfo(text: &str) -> Option<Memory> {
    let mut total = None;
    let mut available = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match key.trim() {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            _ => continue,
        };
        let mut parts = value.split_whitespace();
        let amount: u64 = parts.next()?.parse().ok()?;
        let scale = match parts.next() {
            Some("kB") => 1024,
            None => 1,
            Some(_) => return None,
        };
        *slot = Some(amount.checked_mul(scale)?);
    }
    Some(Memory {
        total_bytes: total?,
        available_bytes: available?,
    })
}

/// `350735.47 234388.90` -> seconds since boot.
pub(crate) fn parse_uptime(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loadavg() {
        assert_eq!(
            parse_loadavg("0.52 0.58 1.59 1/467 12345\n"),
            Some([0.52, 0.58, 1.59])
        );
        assert_eq!(parse_loadavg("0.52\n"), None);
    }

    #[test]
    fn parses_meminfo_in_bytes() {
        let text =
            "MemTotal:       16318412 kB\nMemFree:         1234 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(
            parse_meminfo(text),
            Some(Memory {
                total_bytes: 16318412 * 1024,
                available_bytes: 8000000 * 1024
            })
        );
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn parses_uptime() {
        assert_eq!(parse_uptime("350735.47 234388.90\n"), Some(350735.47));
        assert_eq!(parse_uptime(""), None);
    }

    #[test]
    fn reads_this_machine() {
        let report = HostReport::read(Path::new("/proc"));
        assert!(report.memory.total_bytes > 0);
        assert!(report.uptime_s > 0.0);
    }
}
