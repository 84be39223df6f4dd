//! Finding a KUnit suite in a kernel tree from the name its KTAP gives it: the C file that
//! defines it, the nearest `.kunitconfig` above that file, else the Kconfig symbol its
//! Makefile builds it with. The reading of C, Makefile and glob text is pure.

use anyhow::{bail, Context, Result};
use regex::Regex;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One suite and what it takes to build it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite {
    /// As its KTAP names it: `example`.
    pub name: String,
    /// The C file that defines it, relative to the tree.
    pub file: PathBuf,
    /// Where its options come from: a `.kunitconfig` (relative to the tree), or the
    /// Makefile whose `obj-$(CONFIG_…)` line builds the file.
    pub origin: PathBuf,
    /// `CONFIG_X=VALUE` lines, `CONFIG_KUNIT=y` first.
    pub options: Vec<String>,
}

/// The suites a C file defines: the `.name` of each `struct kunit_suite … = { … }`.
pub fn suites_in(c_source: &str) -> Vec<String> {
    static RE: OnceLock<(Regex, Regex)> = OnceLock::new();
    let (suite, name) = RE.get_or_init(|| {
        (
            Regex::new(r"(?s)struct\s+kunit_suite\s+\w+\s*=\s*\{(.*?)\n\s*\}\s*;")
                .expect("valid regex"),
            Regex::new(r#"\.name\s*=\s*"([^"]+)""#).expect("valid regex"),
        )
    });
    suite
        .captures_iter(c_source)
        .filter_map(|c| Some(name.captures(&c[1])?[1].to_string()))
        .collect()
}

/// Shell-style glob: `*` any run of characters, `?` one, everything else itself (as KUnit's
/// `kunit.filter_glob` matches).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // The last `*` seen and where in `name` it started to match, to retry from.
    let (mut i, mut j, mut star): (usize, usize, Option<(usize, usize)>) = (0, 0, None);
    while j < n.len() {
        match p.get(i) {
            Some('*') => {
                star = Some((i, j));
                i += 1;
            }
            Some(&c) if c == '?' || c == n[j] => {
                i += 1;
                j += 1;
            }
            _ => match star {
                Some((si, sj)) => {
                    i = si + 1;
                    j = sj + 1;
                    star = Some((si, sj + 1));
                }
                None => return false,
            },
        }
    }
    p[i..].iter().all(|&c| c == '*')
}

/// The Kconfig symbol a Makefile builds `object` (`kunit-example-test.o`) with: its
/// `obj-$(CONFIG_X) += … object …` line, or, for a part of a composite object
/// (`foo-y += object`), the line that builds `foo.o`.
pub fn kconfig_symbol(makefile: &str, object: &str) -> Option<String> {
    // A composite of a composite is rare; a Makefile naming an object as its own part
    // must not loop.
    symbol_within(makefile, object, 4)
}

fn symbol_within(makefile: &str, object: &str, depth: u32) -> Option<String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"^\s*([\w-]+)-(\$\(CONFIG_(\w+)\)|y|objs)\s*[:+]?=\s*(.*)$")
            .expect("valid regex")
    });
    // Makefile lines continue after a backslash.
    let joined = makefile.replace("\\\n", " ");
    let mut composite = None;
    for line in joined.lines() {
        let Some(c) = re.captures(line) else { continue };
        if !c[4].split_whitespace().any(|w| w == object) {
            continue;
        }
        match (&c[1], c.get(3)) {
            ("obj", Some(sym)) => return Some(sym.as_str().to_string()),
            ("obj", None) => {}
            (name, _) => composite = Some(format!("{name}.o")),
        }
    }
    symbol_within(makefile, &composite?, depth.checked_sub(1)?)
}

/// The `.kunitconfig` nearest above `file` (relative to the tree), if `exists` says one is.
pub fn nearest_kunitconfig(file: &Path, exists: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    file.ancestors()
        .skip(1)
        .map(|d| d.join(".kunitconfig"))
        .find(|k| exists(k))
}

/// The options of a `.kunitconfig`: its `CONFIG_X=…` lines (comments and blanks dropped).
pub fn kunitconfig_options(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("CONFIG_"))
        .map(str::to_string)
        .collect()
}

/// The options of a config fragment (a selftest target's `config`), as
/// [`kunitconfig_options`] reads them, `=m` as `=y`: built in, as the trimmed config has no
/// modules.
pub fn built_in_options(text: &str) -> Vec<String> {
    kunitconfig_options(text)
        .into_iter()
        .map(|o| match o.strip_suffix("=m") {
            Some(name) => format!("{name}=y"),
            None => o,
        })
        .collect()
}

/// The first option of every KUnit build.
pub const KUNIT: &str = "CONFIG_KUNIT=y";

/// The C files of the tree that may define suites, those named like tests first (`*test*`,
/// `*kunit*`): most suites live there, and reading every C file of a tree takes a while.
fn c_files(tree: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut likely, mut rest) = (Vec::new(), Vec::new());
    let walk = walkdir::WalkDir::new(tree)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git");
    for e in walk.flatten() {
        let name = e.file_name().to_string_lossy();
        if !(e.file_type().is_file() && name.ends_with(".c")) {
            continue;
        }
        let rel = e
            .path()
            .strip_prefix(tree)
            .unwrap_or(e.path())
            .to_path_buf();
        if name.contains("test") || name.contains("kunit") {
            likely.push(rel);
        } else {
            rest.push(rel);
        }
    }
    (likely, rest)
}

/// Finds the suites `globs` name in `tree`, each with its options. An unknown name is an
/// error that says so.
pub fn locate(tree: &Path, globs: &[String]) -> Result<Vec<Suite>> {
    let (likely, rest) = c_files(tree);
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    let read = |rel: &Path| {
        String::from_utf8_lossy(&std::fs::read(tree.join(rel)).unwrap_or_default()).into_owned()
    };
    let scan = |files: &[PathBuf], found: &mut Vec<(String, PathBuf)>| {
        for f in files {
            let text = read(f);
            if !text.contains("kunit_suite") {
                continue;
            }
            for s in suites_in(&text) {
                if globs.iter().any(|g| glob_match(g, &s)) {
                    found.push((s, f.clone()));
                }
            }
        }
    };
    scan(&likely, &mut found);
    let unmatched = |found: &[(String, PathBuf)]| -> Vec<String> {
        globs
            .iter()
            .filter(|g| !found.iter().any(|(s, _)| glob_match(g, s)))
            .cloned()
            .collect()
    };
    if !unmatched(&found).is_empty() {
        scan(&rest, &mut found);
    }
    let missing = unmatched(&found);
    if !missing.is_empty() {
        bail!(
            "no KUnit suite named {} in {} (a suite is named as its KTAP names it, the \
             `.name` of its `struct kunit_suite`)",
            missing.join(", "),
            tree.display()
        );
    }
    found.sort();
    found.dedup();
    found
        .into_iter()
        .map(|(name, file)| options_for(tree, name, file))
        .collect()
}

/// A suite's options: its nearest `.kunitconfig`, else its Makefile's symbol.
fn options_for(tree: &Path, name: String, file: PathBuf) -> Result<Suite> {
    if let Some(k) = nearest_kunitconfig(&file, &|p| tree.join(p).is_file()) {
        let text = std::fs::read_to_string(tree.join(&k))
            .with_context(|| format!("reading {}", k.display()))?;
        let mut options = vec![KUNIT.to_string()];
        options.extend(
            kunitconfig_options(&text)
                .into_iter()
                .filter(|o| o != KUNIT),
        );
        return Ok(Suite {
            name,
            file,
            origin: k,
            options,
        });
    }
    let makefile = file.with_file_name("Makefile");
    let object = file.with_extension("o");
    let object = object.file_name().unwrap_or_default().to_string_lossy();
    let text = std::fs::read_to_string(tree.join(&makefile)).unwrap_or_default();
    let Some(symbol) = kconfig_symbol(&text, &object) else {
        bail!(
            "KUnit suite {name} ({}): no .kunitconfig above it and no obj-$(CONFIG_…) line for \
             {object} in {}: pass --kunitconfig PATH",
            file.display(),
            makefile.display()
        );
    };
    Ok(Suite {
        name,
        file,
        origin: makefile,
        options: vec![KUNIT.to_string(), format!("CONFIG_{symbol}=y")],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suite_is_found_by_its_name_field() {
        let c = r#"
static struct kunit_case example_test_cases[] = { {} };
static struct kunit_suite example_test_suite = {
	.name = "example",
	.init = example_test_init,
	.test_cases = example_test_cases,
};
static struct kunit_suite example_init_test_suite = {
	.name = "example_init",
	.suite_init = example_test_init_suite,
	.test_cases = example_init_test_cases,
};
kunit_test_suites(&example_test_suite, &example_init_test_suite);
"#;
        assert_eq!(suites_in(c), ["example", "example_init"]);
        assert!(suites_in("struct kunit_suite *s = NULL;").is_empty());
    }

    #[test]
    fn globs_match_as_kunit_filters_do() {
        assert!(glob_match("example", "example"));
        assert!(!glob_match("example", "example_init"));
        assert!(glob_match("example*", "example_init"));
        assert!(glob_match("*init", "example_init"));
        assert!(glob_match("k?nit-*-test", "kunit-log-test"));
        assert!(glob_match("*a*b*", "xaxxb"));
        assert!(!glob_match("*a*b", "xaxxbc"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("?", ""));
    }

    #[test]
    fn the_makefile_names_the_symbol() {
        // lib/kunit/Makefile of 6.1, in part.
        let m = "obj-$(CONFIG_KUNIT) +=\t\t\tkunit.o\n\nkunit-objs +=\t\t\t\ttest.o \\\n\
                 \t\t\t\t\tresource.o\n\nobj-$(CONFIG_KUNIT_TEST) +=\t\tkunit-test.o\n\
                 obj-$(CONFIG_KUNIT_EXAMPLE_TEST) +=\tkunit-example-test.o\n";
        assert_eq!(
            kconfig_symbol(m, "kunit-example-test.o").as_deref(),
            Some("KUNIT_EXAMPLE_TEST")
        );
        assert_eq!(kconfig_symbol(m, "resource.o").as_deref(), Some("KUNIT"));
        assert_eq!(kconfig_symbol(m, "nothing.o"), None);
        assert_eq!(kconfig_symbol("a-y += a.o\n", "a.o"), None);
    }

    #[test]
    fn the_nearest_kunitconfig_wins() {
        let have = |p: &Path| p == Path::new("fs/.kunitconfig") || p == Path::new(".kunitconfig");
        assert_eq!(
            nearest_kunitconfig(Path::new("fs/ext4/inode-test.c"), &have),
            Some(PathBuf::from("fs/.kunitconfig"))
        );
        assert_eq!(nearest_kunitconfig(Path::new("lib/x.c"), &|_| false), None);
    }

    #[test]
    fn kunitconfig_lines_are_its_options() {
        let text = "# a comment\nCONFIG_KUNIT=y\n\nCONFIG_KUNIT_TEST=y\n";
        assert_eq!(
            kunitconfig_options(text),
            ["CONFIG_KUNIT=y", "CONFIG_KUNIT_TEST=y"]
        );
    }

    #[test]
    fn a_selftest_fragment_is_built_in() {
        // tools/testing/selftests/timers/config and a module line as in net/config.
        let text =
            "CONFIG_HIGH_RES_TIMERS=y\n# a comment\nCONFIG_TEST_BPF=m\n\n# CONFIG_X is not set\n";
        assert_eq!(
            built_in_options(text),
            ["CONFIG_HIGH_RES_TIMERS=y", "CONFIG_TEST_BPF=y"]
        );
    }
}
