//! Checking a final `.config` against what was asked for, and explaining each option that
//! olddefconfig dropped or changed with its `depends on` and `select`ors from the Kconfig files.

use super::config::Config;
use super::merge::Asked;
use super::symbols::{annotate, BlockKind, SymbolIndex};
use std::collections::BTreeMap;

/// An asked-for option whose final value differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub name: String,
    pub asked: String,
    pub origin: String,
    /// None when the final `.config` does not mention it (its menu is not visible).
    pub got: Option<String>,
}

/// The asked-for options (not the base) that did not end with their asked-for value.
/// `# ... is not set` and an absent option both count as `n`.
pub fn dropped(asked: &BTreeMap<String, Asked>, final_config: &Config) -> Vec<Dropped> {
    asked
        .iter()
        .filter(|(name, a)| final_config.value(name) != a.value)
        .map(|(name, a)| Dropped {
            name: name.clone(),
            asked: a.value.clone(),
            origin: a.origin.clone(),
            got: final_config.get(name).map(str::to_string),
        })
        .collect()
}

/// Asked-for symbols that no Kconfig file defines, in name order.
pub fn undefined<'a>(
    names: impl IntoIterator<Item = &'a String>,
    index: &SymbolIndex,
) -> Vec<String> {
    let mut v: Vec<String> = names
        .into_iter()
        .filter(|n| !index.is_defined(n))
        .cloned()
        .collect();
    v.sort();
    v.dedup();
    v
}

/// A value as `.config` must spell it: a `string` symbol's value in double quotes (the shell
/// ate them from `--set CONFIG_CMDLINE="console=ttyS0"`).
pub fn normalize(value: &str, kind: Option<&str>) -> String {
    if kind == Some("string") && !value.starts_with('"') {
        format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        value.to_string()
    }
}

/// Several lines: what was asked and what came out, then where the symbol is defined, each
/// `depends on` with the final values of its symbols, the blocks around it, and who selects it.
pub fn explain(d: &Dropped, index: &SymbolIndex, final_config: &Config) -> String {
    let value = |s: &str| final_config.value(s).to_string();
    let got = match &d.got {
        Some(v) => v.clone(),
        None => "n (not in .config: its menu or dependencies are off)".into(),
    };
    let mut s = format!(
        "CONFIG_{}: asked {} ({}), got {}\n",
        d.name, d.asked, d.origin, got
    );
    for def in index.defs.get(&d.name).into_iter().flatten() {
        let kind = def.kind.as_deref().unwrap_or("?");
        s.push_str(&format!("    defined at {}:{} ({kind}", def.file, def.line));
        if !def.has_prompt {
            s.push_str(", no prompt: only a `select` or a default can set it");
        }
        s.push_str(")\n");
        if d.asked == "m" && kind == "bool" {
            s.push_str("    it is a bool: it cannot be m\n");
        }
        for dep in &def.depends {
            s.push_str(&format!("    depends on {}\n", annotate(dep, &value)));
        }
        for b in &def.within {
            let cond = b
                .conditions
                .iter()
                .map(|c| annotate(c, &value))
                .collect::<Vec<_>>()
                .join(" && ");
            match (b.kind, cond.is_empty()) {
                (BlockKind::If, _) => s.push_str(&format!("    inside if {cond}\n")),
                (_, true) if b.kind == BlockKind::Choice => {
                    s.push_str(&format!("    inside {} (one of several; the choice's default wins unless another is n)\n", b.title))
                }
                (_, true) => {}
                (_, false) => {
                    s.push_str(&format!("    inside {}, which depends on {cond}\n", b.title))
                }
            }
        }
    }
    for sel in index.selected_by.get(&d.name).into_iter().flatten() {
        s.push_str(&format!("    selected by {} [={}]", sel.by, value(&sel.by)));
        if let Some(c) = &sel.condition {
            s.push_str(&format!(" if {}", annotate(c, &value)));
        }
        s.push_str(&format!(" ({}:{})\n", sel.file, sel.line));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kconfig::config::{parse, parse_set};
    use crate::kconfig::merge::{merge, Layer};
    use crate::kconfig::symbols::parse_tree;
    use std::path::Path;

    fn kasan_index() -> SymbolIndex {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kconfig/test_data/kasan");
        parse_tree("x86", &mut |rel: &str| {
            Ok(std::fs::read_to_string(root.join(rel)).ok())
        })
        .unwrap()
    }

    #[test]
    fn only_changed_options_are_dropped() {
        let m = merge(
            &Config::default(),
            &[Layer {
                origin: "vm.config".into(),
                settings: parse(
                    "CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=y\nCONFIG_S=\"x\"\n",
                )
                .unwrap(),
            }],
        );
        // A kept; B became y; C absent counts as n; D absent is dropped; S changed.
        let final_config = Config::parse("CONFIG_A=y\nCONFIG_B=y\nCONFIG_S=\"y\"\n").unwrap();
        let d = dropped(&m.asked, &final_config);
        let got: Vec<(&str, Option<&str>)> = d
            .iter()
            .map(|d| (d.name.as_str(), d.got.as_deref()))
            .collect();
        assert_eq!(got, [("B", Some("y")), ("D", None), ("S", Some("\"y\""))]);
        assert_eq!(d[1].origin, "vm.config:4");
    }

    #[test]
    fn kasan_on_tinyconfig_shows_its_dependencies() {
        let ix = kasan_index();
        // What tinyconfig + vm.config gives, for the symbols KASAN's lines name.
        let final_config = Config::parse(
            "CONFIG_X86=y\nCONFIG_X86_64=y\nCONFIG_HAVE_ARCH_KASAN=y\nCONFIG_CC_HAS_KASAN_GENERIC=y\n\
             CONFIG_CC_HAS_WORKING_NOSANITIZE_ADDRESS=y\nCONFIG_SLOB=y\nCONFIG_SYSFS=y\n",
        )
        .unwrap();
        let m = merge(
            &final_config,
            &[Layer {
                origin: "--set".into(),
                settings: vec![parse_set("CONFIG_KASAN=y").unwrap()],
            }],
        );
        let d = dropped(&m.asked, &final_config);
        assert_eq!(d.len(), 1);
        let text = explain(&d[0], &ix, &final_config);
        assert!(
            text.starts_with("CONFIG_KASAN: asked y (--set), got n (not in .config"),
            "{text}"
        );
        assert!(
            text.contains("defined at lib/Kconfig.kasan:34 (bool)"),
            "{text}"
        );
        assert!(
            text.contains(
                "depends on (SLUB [=n] && SYSFS [=y]) || (SLAB [=n] && !DEBUG_SLAB [=n])"
            ),
            "{text}"
        );
        assert!(
            text.contains("HAVE_ARCH_KASAN [=y] && CC_HAS_KASAN_GENERIC [=y]"),
            "{text}"
        );
    }

    #[test]
    fn a_symbol_without_prompt_names_its_selectors() {
        let ix = kasan_index();
        let d = Dropped {
            name: "HAVE_ARCH_KASAN".into(),
            asked: "y".into(),
            origin: "f:1".into(),
            got: None,
        };
        let text = explain(&d, &ix, &Config::parse("CONFIG_X86=y\n").unwrap());
        assert!(text.contains("no prompt"), "{text}");
        assert!(
            text.contains("selected by X86 [=y] if X86_64 [=n] (arch/x86/Kconfig:"),
            "{text}"
        );
    }

    #[test]
    fn choice_members_and_if_blocks_are_shown() {
        let ix = kasan_index();
        let d = Dropped {
            name: "KASAN_GENERIC".into(),
            asked: "y".into(),
            origin: "f:1".into(),
            got: None,
        };
        let text = explain(&d, &ix, &Config::default());
        assert!(text.contains("inside if KASAN [=n]"), "{text}");
        assert!(text.contains("inside choice \"KASAN mode\""), "{text}");
    }

    #[test]
    fn undefined_symbols_are_listed_once() {
        let ix = kasan_index();
        let names = [
            "KASAN".to_string(),
            "DOES_NOT_EXIST".to_string(),
            "DOES_NOT_EXIST".to_string(),
        ];
        assert_eq!(undefined(&names, &ix), ["DOES_NOT_EXIST"]);
    }

    #[test]
    fn strings_get_quotes() {
        assert_eq!(
            normalize("console=ttyS0", Some("string")),
            "\"console=ttyS0\""
        );
        assert_eq!(normalize("\"a\"", Some("string")), "\"a\"");
        assert_eq!(normalize("y", Some("bool")), "y");
    }
}
