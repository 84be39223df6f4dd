//! Human-written sizes ("1G"), durations ("90s") and counts, as options and xtask.toml give
//! them: parsed for their form (a malformed one is a usage error, 129) and then checked
//! against the bounds of the option that holds them (out of range: 128, naming the limit);
//! and the short form people read of a commit, key or digest ([`short`]).

use anyhow::{anyhow, bail, Result};
use std::time::Duration;

/// A size as written: `512M`, `1G`, `2T`, or a bare number of MiB.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Size {
    text: String,
    /// None when the size does not fit in 64 bits of bytes: above every limit.
    bytes: Option<u64>,
}

/// A duration as written: `90s`, `2m`, `500ms`, `1h`, `1d`, or a bare number of seconds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Span {
    text: String,
    /// None when the duration does not fit a `Duration`: above every limit.
    duration: Option<Duration>,
}

/// A count as written: a whole number (vCPUs, make jobs, repetitions).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(from = "u64")]
pub struct Count {
    text: String,
    /// None when the number does not fit in 64 bits: above every limit.
    n: Option<u64>,
}

/// One end of an option's range and how it reads in an error: `(1024, "1G")`.
pub type Bound<'a, T> = (T, &'a str);

const SIZE_FORM: &str = "use a whole number with M, G or T, for example 1G or 512M";
const SPAN_FORM: &str = "use a number with ms, s, m, h or d, for example 30s, 2m or 500ms";

/// The number a run of ASCII digits spells; Some(None) when it does not fit in 64 bits,
/// None when the text is not digits.
fn digits(text: &str) -> Option<Option<u64>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().ok())
}

impl Size {
    /// Parses the form only; see [`Size::bytes_within`] for the value.
    pub fn parse(text: &str) -> Result<Size> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let mib: u64 = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "M" | "MB" | "MIB" => 1,
            "G" | "GB" | "GIB" => 1 << 10,
            "T" | "TB" | "TIB" => 1 << 20,
            _ => bail!("invalid size {text:?}: {SIZE_FORM}"),
        };
        let n = digits(num).ok_or_else(|| anyhow!("invalid size {text:?}: {SIZE_FORM}"))?;
        Ok(Size {
            text: t.to_string(),
            bytes: n
                .and_then(|n| n.checked_mul(mib))
                .and_then(|m| m.checked_mul(1 << 20)),
        })
    }

    /// The size in bytes, checked to lie in `min..=max`; the error names `option`.
    pub fn bytes_within(&self, option: &str, min: Bound<u64>, max: Bound<u64>) -> Result<u64> {
        within(option, &self.text, self.bytes, min, max)
    }
}

impl Span {
    /// Parses the form only; see [`Span::within`] for the value.
    pub fn parse(text: &str) -> Result<Span> {
        let t = text.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let secs_per: f64 = match unit.trim() {
            "" | "s" => 1.0,
            "ms" => 0.001,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => bail!("invalid duration {text:?}: {SPAN_FORM}"),
        };
        // Digits with at most one point and a digit on its left: no signs, exponents or NaN.
        let (whole, frac) = num.split_once('.').unwrap_or((num, "0"));
        if digits(whole).is_none() || (!frac.is_empty() && digits(frac).is_none()) {
            bail!("invalid duration {text:?}: {SPAN_FORM}");
        }
        let n: f64 = num
            .parse()
            .map_err(|_| anyhow!("invalid duration {text:?}: {SPAN_FORM}"))?;
        Ok(Span {
            text: t.to_string(),
            duration: Duration::try_from_secs_f64(n * secs_per).ok(),
        })
    }

    /// The duration, checked to lie in `min..=max`; the error names `option`.
    pub fn within(
        &self,
        option: &str,
        min: Bound<Duration>,
        max: Bound<Duration>,
    ) -> Result<Duration> {
        within(option, &self.text, self.duration, min, max)
    }
}

impl Count {
    /// Parses the form only; see [`Count::within`] for the value.
    pub fn parse(text: &str) -> Result<Count> {
        let t = text.trim();
        let n = digits(t)
            .ok_or_else(|| anyhow!("invalid number {text:?}: use a whole number, for example 4"))?;
        Ok(Count {
            text: t.to_string(),
            n,
        })
    }

    /// The count, checked to lie in `min..=max`; the error names `option`.
    pub fn within(&self, option: &str, min: Bound<u64>, max: Bound<u64>) -> Result<u64> {
        within(option, &self.text, self.n, min, max)
    }
}

impl From<u64> for Count {
    fn from(n: u64) -> Count {
        Count {
            text: n.to_string(),
            n: Some(n),
        }
    }
}

impl TryFrom<String> for Size {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Size> {
        Size::parse(&s)
    }
}

impl TryFrom<String> for Span {
    type Error = anyhow::Error;
    fn try_from(s: String) -> Result<Span> {
        Span::parse(&s)
    }
}

/// As written, so that a value passed on to another command reads the same.
impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The one range check: `value` (None: too large to hold) against `min..=max`, with an error
/// that names the option, the value as written and the limit it broke.
fn within<T: PartialOrd>(
    option: &str,
    text: &str,
    value: Option<T>,
    (min, min_text): Bound<T>,
    (max, max_text): Bound<T>,
) -> Result<T> {
    match value {
        Some(v) if v < min => bail!("{option} {text} is out of range: at least {min_text}"),
        Some(v) if v <= max => Ok(v),
        _ => bail!("{option} {text} is out of range: at most {max_text}"),
    }
}

/// Formats a duration for people: `850ms`, `12.3s`, `4m05s`, `3h02m`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{}ms", d.as_millis())
    } else if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
    } else {
        format!("{}h{:02}m", d.as_secs() / 3600, d.as_secs() / 60 % 60)
    }
}

/// Seconds as saved in a report (any f64, as a file may hold) formatted for people;
/// what is not a duration reads as `?`.
pub fn human_secs(secs: f64) -> String {
    Duration::try_from_secs_f64(secs).map_or_else(|_| "?".into(), human_duration)
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

/// The first 12 characters of a commit, cache key or digest, as people read them; whatever a
/// saved file holds, never a slice inside a character (such a string is shown whole).
pub fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn bytes(text: &str) -> Result<u64> {
        Size::parse(text)?.bytes_within("--size", (0, "0"), (u64::MAX, "16E"))
    }

    #[test]
    fn sizes() {
        assert_eq!(bytes("1G").unwrap(), 1024 * MIB);
        assert_eq!(bytes("512M").unwrap(), 512 * MIB);
        assert_eq!(bytes("2gib").unwrap(), 2048 * MIB);
        assert_eq!(bytes("768").unwrap(), 768 * MIB);
        assert_eq!(bytes(" 1 T ").unwrap(), 1 << 40);
        assert_eq!(Size::parse(" 1G ").unwrap().to_string(), "1G");
        for bad in ["banana", "1X", "", "G", "-1G", "1.5G", "+1G", "1 G B"] {
            let e = Size::parse(bad).unwrap_err().to_string();
            assert!(
                e.contains("invalid size") && e.contains("1G"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn sizes_that_overflow_are_out_of_range_not_a_panic() {
        // The largest size that fits in bytes, and the first that does not.
        assert_eq!(bytes("17592186044415M").unwrap(), 17592186044415 * MIB);
        for big in [
            "17592186044416M",
            "17179869184G",
            "16777216T",
            "99999999999999T",
            "99999999999999999999999999T",
        ] {
            let e = bytes(big).unwrap_err().to_string();
            assert_eq!(e, format!("--size {big} is out of range: at most 16E"));
        }
    }

    #[test]
    fn size_bounds_name_the_option_and_the_limit() {
        let s = Size::parse("64M").unwrap();
        let e = s
            .bytes_within("--memory", (128 * MIB, "128M"), (1 << 40, "1T"))
            .unwrap_err();
        assert_eq!(e.to_string(), "--memory 64M is out of range: at least 128M");
        let s = Size::parse("128M").unwrap();
        assert_eq!(
            s.bytes_within("--memory", (128 * MIB, "128M"), (128 * MIB, "128M"))
                .unwrap(),
            128 * MIB
        );
    }

    fn span(text: &str) -> Result<Duration> {
        Span::parse(text)?.within(
            "--timeout",
            (Duration::from_nanos(1), "1ns"),
            (Duration::MAX, "forever"),
        )
    }

    #[test]
    fn durations() {
        assert_eq!(span("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(span("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(span("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(span("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(span("30").unwrap(), Duration::from_secs(30));
        assert_eq!(span("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(span("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(span("5.").unwrap(), Duration::from_secs(5));
        for bad in [
            "soon", "-1s", "+1s", "1e3", "inf", "NaN", ".5s", "1.2.3s", "", "s", "1sec",
        ] {
            let e = Span::parse(bad).unwrap_err().to_string();
            assert!(e.contains("invalid duration"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn durations_that_overflow_are_out_of_range_not_a_panic() {
        for big in [
            "99999999999999999999",
            "18446744073709551616s",
            "999999999999999999d",
            &"9".repeat(400),
        ] {
            let e = span(big).unwrap_err().to_string();
            assert!(e.ends_with("is out of range: at most forever"), "{e}");
        }
        let e = span("0").unwrap_err().to_string();
        assert_eq!(e, "--timeout 0 is out of range: at least 1ns");
    }

    #[test]
    fn counts() {
        let c = |t: &str| Count::parse(t)?.within("--cpus", (1, "1"), (8, "8 (this host's CPUs)"));
        assert_eq!(c("4").unwrap(), 4);
        assert_eq!(
            c("0").unwrap_err().to_string(),
            "--cpus 0 is out of range: at least 1"
        );
        assert_eq!(
            c("99999999999999999999999").unwrap_err().to_string(),
            "--cpus 99999999999999999999999 is out of range: at most 8 (this host's CPUs)"
        );
        for bad in ["four", "-1", "1.5", ""] {
            assert!(Count::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Count::from(3).to_string(), "3");
    }

    #[test]
    fn human() {
        assert_eq!(human_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(human_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(human_duration(Duration::from_secs(3 * 3600 + 125)), "3h02m");
        assert_eq!(human_bytes(1536 * 1024 * 1024), "1.5 GiB");
        assert_eq!(human_secs(1.25), "1.2s");
        assert_eq!(human_secs(-1.0), "?");
        assert_eq!(human_secs(f64::NAN), "?");
        assert_eq!(human_secs(1e30), "?");
    }
}
