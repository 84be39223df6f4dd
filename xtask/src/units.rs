//! Parsing of human-written sizes ("1G") and durations ("90s") used by options and xtask.toml.

use anyhow::{bail, Context, Result};
use std::time::Duration;

/// Parses a memory size such as `512M`, `1G` or `1536` (MiB when no suffix) into MiB.
pub fn parse_size_mib(text: &str) -> Result<u64> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let mult = match unit.as_str() {
                "M" | "MB" | "MIB" => 1,
                "G" | "GB" | "GIB" => 1024,
                "T" | "TB" | "TIB" => 1024 * 1024,
                _ => {
                    bail!("invalid size {text:?}: use a number with M or G, for example 1G or 512M")
                }
            };
            (&t[..i], mult)
        }
        None => (t, 1),
    };
    let n: u64 = num.trim().parse().ok().with_context(|| {
        format!("invalid size {text:?}: use a number with M or G, for example 1G or 512M")
    })?;
    if n == 0 {
        bail!("invalid size {text:?}: must be more than zero");
    }
    Ok(n * mult)
}

/// Parses a size for cache limits (`10G`, `500M`) into bytes.
pub fn parse_size_bytes(text: &str) -> Result<u64> {
    Ok(parse_size_mib(text)? * 1024 * 1024)
}

/// Parses a duration such as `90s`, `2m`, `500ms`, `1h` or `30` (seconds when no suffix).
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .with_context(|| format!("invalid duration {text:?}: use for example 30s, 2m or 500ms"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("invalid duration {text:?}: use for example 30s, 2m or 500ms"),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Formats a duration for people: `850ms`, `12.3s`, `4m05s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{}ms", d.as_millis())
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    }
}

/// Formats a byte count for people: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size_mib("1G").unwrap(), 1024);
        assert_eq!(parse_size_mib("512M").unwrap(), 512);
        assert_eq!(parse_size_mib("2gib").unwrap(), 2048);
        assert_eq!(parse_size_mib("768").unwrap(), 768);
        assert!(parse_size_mib("banana").is_err());
        assert!(parse_size_mib("0").is_err());
        assert!(parse_size_mib("1X").is_err());
        assert!(parse_size_mib("").is_err());
        let e = parse_size_mib("banana").unwrap_err().to_string();
        assert!(e.contains("banana") && e.contains("1G"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0").is_err());
    }

    #[test]
    fn human() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(human_bytes(1536 * 1024 * 1024), "1.5 GiB");
    }
}
