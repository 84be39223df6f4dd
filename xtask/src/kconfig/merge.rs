//! Merging a base config with fragments and `--set`s, noting every value a later layer changes.

use super::config::{Config, Setting};
use std::collections::BTreeMap;

/// One source of asked-for options: a fragment file or the `--set`s.
#[derive(Debug, Clone)]
pub struct Layer {
    /// How messages name it: `kconfig/vm.config`, `--set`, `xtask.toml [trim] set`.
    pub origin: String,
    pub settings: Vec<Setting>,
}

/// Where an asked-for value came from, for messages: `kconfig/vm.config:22` or `--set`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub value: String,
    pub origin: String,
}

/// A value that a later layer replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub name: String,
    pub old: String,
    /// `base` when the base config held the old value.
    pub old_origin: String,
    pub new: String,
    pub new_origin: String,
}

impl std::fmt::Display for Override {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CONFIG_{}={} ({}) overrides {} ({})",
            self.name, self.new, self.new_origin, self.old, self.old_origin
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// What goes into `.config` before `make olddefconfig`.
    pub config: Config,
    /// Every option a layer asked for, with its last value: what verification checks.
    pub asked: BTreeMap<String, Asked>,
    /// A layer replacing a value an earlier layer asked for.
    pub overrides: Vec<Override>,
    /// A layer changing a value of the base (expected: that is what fragments are for).
    pub base_changes: Vec<Override>,
}

/// Merges in order: `base`, then each layer's settings in order. A value equal to the one it
/// replaces is no override.
pub fn merge(base: &Config, layers: &[Layer]) -> Merged {
    let mut m = Merged {
        config: base.clone(),
        ..Merged::default()
    };
    for layer in layers {
        for s in &layer.settings {
            let origin = if s.line == 0 {
                layer.origin.clone()
            } else {
                format!("{}:{}", layer.origin, s.line)
            };
            let (old, old_origin, from_base) = match m.asked.get(&s.name) {
                Some(a) => (a.value.clone(), a.origin.clone(), false),
                None => (base.value(&s.name).to_string(), "base".to_string(), true),
            };
            if old != s.value {
                let o = Override {
                    name: s.name.clone(),
                    old,
                    old_origin,
                    new: s.value.clone(),
                    new_origin: origin.clone(),
                };
                if from_base {
                    m.base_changes.push(o);
                } else {
                    m.overrides.push(o);
                }
            }
            m.config.set(&s.name, &s.value);
            m.asked.insert(
                s.name.clone(),
                Asked {
                    value: s.value.clone(),
                    origin,
                },
            );
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kconfig::config::{parse, parse_set};

    fn layer(origin: &str, text: &str) -> Layer {
        Layer {
            origin: origin.into(),
            settings: parse(text).unwrap(),
        }
    }

    #[test]
    fn later_layers_win_and_say_so() {
        let base = Config::parse("# CONFIG_SMP is not set\nCONFIG_PRINTK=y\n").unwrap();
        let vm = layer(
            "vm.config",
            "CONFIG_SMP=y\nCONFIG_PRINTK=y\nCONFIG_ACPI=y\n",
        );
        let user = layer("extra.config", "# CONFIG_ACPI is not set\n");
        let sets = Layer {
            origin: "--set".into(),
            settings: vec![parse_set("CONFIG_ACPI=y").unwrap()],
        };
        let m = merge(&base, &[vm, user, sets]);

        assert_eq!(m.config.value("SMP"), "y");
        assert_eq!(m.config.value("ACPI"), "y");
        assert_eq!(m.asked["ACPI"].origin, "--set");
        assert_eq!(m.asked["SMP"].origin, "vm.config:1");

        let lines: Vec<String> = m.overrides.iter().map(|o| o.to_string()).collect();
        assert_eq!(
            lines,
            [
                "CONFIG_ACPI=n (extra.config:1) overrides y (vm.config:3)",
                "CONFIG_ACPI=y (--set) overrides n (extra.config:1)",
            ]
        );
        // PRINTK=y was already y: no change. SMP and ACPI changed the base.
        let changed: Vec<&str> = m.base_changes.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(changed, ["SMP", "ACPI"]);
    }

    #[test]
    fn asking_for_n_of_an_absent_option_changes_nothing() {
        let m = merge(
            &Config::default(),
            &[layer("f", "# CONFIG_MODULES is not set\n")],
        );
        assert!(m.base_changes.is_empty() && m.overrides.is_empty());
        assert_eq!(m.asked["MODULES"].value, "n");
    }

    #[test]
    fn an_asked_choice_member_comes_after_the_base_default() {
        // tinyconfig has the "Debug information" choice at DEBUG_INFO_NONE; debug.config picks
        // another member. Kconfig takes the last `y` of a choice it reads.
        let base = Config::parse(
            "CONFIG_DEBUG_INFO_NONE=y\n# CONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT is not set\n",
        )
        .unwrap();
        let m = merge(
            &base,
            &[layer(
                "debug.config",
                "CONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT=y\n",
            )],
        );
        assert_eq!(
            m.config.render(),
            "CONFIG_DEBUG_INFO_NONE=y\nCONFIG_DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT=y\n"
        );
    }
}
