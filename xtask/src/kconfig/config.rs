//! `.config` files and config fragments: parsing lines into settings, and writing them back.

use anyhow::{bail, Result};
use std::collections::HashMap;

/// One line of a `.config` or fragment: `CONFIG_NAME=value`, or `# CONFIG_NAME is not set`
/// (kept as the value `n`). Names are stored without the `CONFIG_` prefix, as Kconfig
/// files spell them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub name: String,
    /// `y`, `m`, `n`, a number, or a string with its double quotes.
    pub value: String,
    /// 1-based line in the file it came from (0 for a command-line `--set`).
    pub line: usize,
}

/// Parses a `.config` or fragment. Blank lines and other comments are skipped; anything else
/// is an error naming the line, so a typo in a fragment never disappears silently.
pub fn parse(text: &str) -> Result<Vec<Setting>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let lineno = i + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if let Some(name) = not_set(comment.trim()) {
                out.push(Setting {
                    name: name.to_string(),
                    value: "n".into(),
                    line: lineno,
                });
            }
            continue;
        }
        match parse_assignment(line) {
            Some((name, value)) => out.push(Setting {
                name,
                value,
                line: lineno,
            }),
            None => bail!(
                "line {lineno}: `{line}` is neither CONFIG_NAME=VALUE nor `# CONFIG_NAME is not set`"
            ),
        }
    }
    Ok(out)
}

/// `CONFIG_X is not set` → `X`.
fn not_set(comment: &str) -> Option<&str> {
    let name = comment
        .strip_prefix("CONFIG_")?
        .strip_suffix(" is not set")?;
    is_symbol(name).then_some(name)
}

/// `CONFIG_X=value` → (`X`, `value`).
fn parse_assignment(line: &str) -> Option<(String, String)> {
    let (lhs, value) = line.split_once('=')?;
    let name = lhs.trim().strip_prefix("CONFIG_")?;
    let value = value.trim();
    (is_symbol(name) && !value.is_empty()).then(|| (name.to_string(), value.to_string()))
}

/// A Kconfig symbol name: letters, digits and underscores.
pub fn is_symbol(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses one `--set` argument: `CONFIG_X=VALUE` (the `CONFIG_` prefix may be left out).
pub fn parse_set(arg: &str) -> Result<Setting> {
    let Some((lhs, value)) = arg.split_once('=') else {
        bail!("--set {arg}: expected CONFIG_NAME=VALUE, for example CONFIG_KASAN=y");
    };
    let lhs = lhs.trim();
    let name = lhs.strip_prefix("CONFIG_").unwrap_or(lhs);
    let value = value.trim();
    if !is_symbol(name) || value.is_empty() {
        bail!("--set {arg}: expected CONFIG_NAME=VALUE, for example CONFIG_KASAN=y");
    }
    Ok(Setting {
        name: name.to_string(),
        value: value.to_string(),
        line: 0,
    })
}

/// A whole configuration: each symbol's value, later settings replacing earlier ones. The
/// order of setting is kept: in a `choice`, the member set to `y` last is the one Kconfig
/// takes, so a value a fragment sets must come after the base's lines.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Name → (when it was last set, value).
    values: HashMap<String, (usize, String)>,
    next: usize,
}

impl PartialEq for Config {
    fn eq(&self, other: &Config) -> bool {
        self.entries() == other.entries()
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Config> {
        Ok(Config::from_settings(parse(text)?))
    }

    pub fn from_settings(settings: impl IntoIterator<Item = Setting>) -> Config {
        let mut c = Config::default();
        for s in settings {
            c.set(&s.name, &s.value);
        }
        c
    }

    /// Sets a value; it now comes after every value set before.
    pub fn set(&mut self, name: &str, value: &str) {
        self.values
            .insert(name.to_string(), (self.next, value.to_string()));
        self.next += 1;
    }

    /// The value as written, `n` for `is not set`; None when the file does not mention it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(|(_, v)| v.as_str())
    }

    /// The value as Kconfig sees it: a symbol the file does not mention is `n`.
    pub fn value(&self, name: &str) -> &str {
        self.get(name).unwrap_or("n")
    }

    /// (name, value) in the order they were last set.
    pub fn entries(&self) -> Vec<(&str, &str)> {
        let mut v: Vec<(usize, &str, &str)> = self
            .values
            .iter()
            .map(|(k, (n, v))| (*n, k.as_str(), v.as_str()))
            .collect();
        v.sort_unstable_by_key(|e| e.0);
        v.into_iter().map(|(_, k, v)| (k, v)).collect()
    }

    /// How many options are `value` (`y` or `m`).
    pub fn count(&self, value: &str) -> usize {
        self.values.values().filter(|(_, v)| v == value).count()
    }

    /// The `.config` text in setting order: `CONFIG_X=v` lines, `n` as `# CONFIG_X is not set`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for (name, value) in self.entries() {
            if value == "n" {
                s.push_str(&format!("# CONFIG_{name} is not set\n"));
            } else {
                s.push_str(&format!("CONFIG_{name}={value}\n"));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values_not_set_and_comments() {
        let s = parse(
            "# a comment\n\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"ttyS0\"\n  CONFIG_D=0x10  \n#CONFIG_E=y\n",
        )
        .unwrap();
        let got: Vec<_> = s
            .iter()
            .map(|s| (s.name.as_str(), s.value.as_str(), s.line))
            .collect();
        assert_eq!(
            got,
            [
                ("A", "y", 3),
                ("B", "n", 4),
                ("C", "\"ttyS0\"", 5),
                ("D", "0x10", 6)
            ]
        );
    }

    #[test]
    fn a_bad_line_is_named() {
        let e = parse("CONFIG_A=y\nCONFIG_B y\n").unwrap_err().to_string();
        assert!(e.starts_with("line 2: `CONFIG_B y`"), "{e}");
        assert!(parse("FOO=y\n").is_err());
        assert!(parse("CONFIG_A=\n").is_err());
    }

    #[test]
    fn set_arguments() {
        assert_eq!(parse_set("CONFIG_KASAN=y").unwrap().name, "KASAN");
        assert_eq!(parse_set("KASAN=m").unwrap().value, "m");
        assert!(parse_set("CONFIG_KASAN").is_err());
        assert!(parse_set("CONFIG_A-B=y").is_err());
    }

    #[test]
    fn later_settings_win_and_render_round_trips() {
        let c = Config::parse("CONFIG_A=y\nCONFIG_A=m\n# CONFIG_B is not set\n").unwrap();
        assert_eq!(c.get("A"), Some("m"));
        assert_eq!(c.value("B"), "n");
        assert_eq!(c.value("UNSEEN"), "n");
        assert_eq!(c.get("UNSEEN"), None);
        assert_eq!(c.render(), "CONFIG_A=m\n# CONFIG_B is not set\n");
        // Setting again moves a value last, after the base's other choice member.
        let mut c = Config::parse("CONFIG_CHOICE_A=y\n# CONFIG_CHOICE_B is not set\n").unwrap();
        c.set("CHOICE_B", "y");
        assert_eq!(c.render(), "CONFIG_CHOICE_A=y\nCONFIG_CHOICE_B=y\n");
        assert_eq!(Config::parse(&c.render()).unwrap(), c);
    }
}
