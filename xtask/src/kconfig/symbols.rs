//! Kconfig files read as data: which symbols exist, their type and prompt, their `depends on`,
//! who `select`s them, and the `if` / `menu` / `choice` blocks around them. Not an evaluator:
//! enough to say whether a symbol exists and why olddefconfig may have dropped it.

use anyhow::Result;
use std::collections::HashMap;

/// A block around a definition: `if EXPR`, `menu "TITLE"` or `choice "PROMPT"`, with the
/// conditions (`if` expression, `depends on` lines) it adds to everything inside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub kind: BlockKind,
    /// `menu "Memory Debugging"`, `choice "KASAN mode"`, or empty for an `if`.
    pub title: String,
    pub conditions: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    If,
    Menu,
    Choice,
}

/// One `config SYMBOL` / `menuconfig SYMBOL` entry (a symbol may have several).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// Relative to the tree.
    pub file: String,
    pub line: usize,
    /// `bool`, `tristate`, `string`, `int` or `hex`, when the entry says.
    pub kind: Option<String>,
    /// Whether a user can set it; one without a prompt is set only by `select` or a default.
    pub has_prompt: bool,
    /// Each `depends on` expression, as written.
    pub depends: Vec<String>,
    /// Enclosing blocks, outermost first.
    pub within: Vec<Block>,
}

/// A `select TARGET [if CONDITION]` line of symbol `by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Select {
    pub by: String,
    pub condition: Option<String>,
    pub file: String,
    pub line: usize,
}

/// Every symbol the Kconfig files reachable from the top `Kconfig` define, for one arch.
#[derive(Debug, Default)]
pub struct SymbolIndex {
    pub defs: HashMap<String, Vec<Definition>>,
    pub selected_by: HashMap<String, Vec<Select>>,
    /// Kconfig files read.
    pub files: usize,
    /// `source` lines that could not be followed (missing file, unknown macro).
    pub warnings: Vec<String>,
}

impl SymbolIndex {
    pub fn is_defined(&self, name: &str) -> bool {
        self.defs.contains_key(name)
    }

    /// The symbol's type, from the first definition that states one.
    pub fn kind(&self, name: &str) -> Option<&str> {
        self.defs.get(name)?.iter().find_map(|d| d.kind.as_deref())
    }
}

/// Reads a Kconfig file by its path relative to the tree; `Ok(None)` when it does not exist.
pub type ReadFile<'a> = dyn FnMut(&str) -> Result<Option<String>> + 'a;

/// Parses the tree's Kconfig files for `arch` (`$(SRCARCH)`, e.g. `x86`), following `source`
/// lines from the top `Kconfig` as `make` does. Reading is injected so tests run on recordings.
pub fn parse_tree(arch: &str, read: &mut ReadFile<'_>) -> Result<SymbolIndex> {
    let mut p = Parser {
        arch: arch.to_string(),
        index: SymbolIndex::default(),
        blocks: Vec::new(),
    };
    p.source("Kconfig", false, read, 0)?;
    Ok(p.index)
}

struct Parser {
    arch: String,
    index: SymbolIndex,
    /// Blocks open at this point; `source` does not close them.
    blocks: Vec<Block>,
}

/// The entry that attribute lines (`depends on`, `select`, `prompt`) belong to.
enum Current {
    None,
    /// A symbol and the index of this definition in its list.
    Symbol(String, usize),
    /// The innermost open block (a `menu` or `choice` line just read).
    Block,
}

/// Deeper than any real tree; stops a `source` loop.
const MAX_DEPTH: usize = 64;

impl Parser {
    fn source(
        &mut self,
        path: &str,
        optional: bool,
        read: &mut ReadFile<'_>,
        depth: usize,
    ) -> Result<()> {
        if depth > MAX_DEPTH {
            self.index
                .warnings
                .push(format!("{path}: `source` nested too deep; not read"));
            return Ok(());
        }
        match read(path)? {
            Some(text) => {
                self.index.files += 1;
                self.file(path, &text, read, depth)
            }
            None if optional => Ok(()),
            None => {
                self.index
                    .warnings
                    .push(format!("{path}: sourced but not found"));
                Ok(())
            }
        }
    }

    fn file(
        &mut self,
        path: &str,
        text: &str,
        read: &mut ReadFile<'_>,
        depth: usize,
    ) -> Result<()> {
        let lines: Vec<&str> = text.lines().collect();
        let mut current = Current::None;
        // In help text: None, or Some(indent of its first line, once seen).
        let mut help: Option<Option<usize>> = None;
        let mut i = 0;
        while i < lines.len() {
            let lineno = i + 1;
            if let Some(h) = help {
                let raw = lines[i];
                if raw.trim().is_empty() {
                    i += 1;
                    continue;
                }
                let ind = indent(raw);
                match h {
                    None if ind > 0 => {
                        help = Some(Some(ind));
                        i += 1;
                        continue;
                    }
                    Some(first) if ind >= first => {
                        i += 1;
                        continue;
                    }
                    _ => help = None,
                }
            }
            // A logical line: physical lines joined while they end with a backslash.
            let mut line = lines[i].to_string();
            while line.trim_end().ends_with('\\') && i + 1 < lines.len() {
                let t = line.trim_end();
                line = format!("{} {}", t[..t.len() - 1].trim_end(), lines[i + 1].trim());
                i += 1;
            }
            i += 1;
            let line = strip_comment(&line);
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (keyword, rest) = match line.split_once(char::is_whitespace) {
                Some((k, r)) => (k, r.trim()),
                None => (line, ""),
            };
            match keyword {
                "config" | "menuconfig" => {
                    let name = rest.split_whitespace().next().unwrap_or("").to_string();
                    let defs = self.index.defs.entry(name.clone()).or_default();
                    defs.push(Definition {
                        file: path.to_string(),
                        line: lineno,
                        kind: None,
                        has_prompt: false,
                        depends: Vec::new(),
                        within: self.blocks.clone(),
                    });
                    current = Current::Symbol(name, defs.len() - 1);
                }
                "bool" | "tristate" | "string" | "int" | "hex" | "prompt" | "def_bool"
                | "def_tristate" => {
                    let prompt = (keyword == "prompt"
                        || !keyword.starts_with("def_") && rest.starts_with('"'))
                    .then(|| unquote(rest));
                    match &current {
                        Current::Symbol(name, n) => {
                            let d = &mut self.index.defs.get_mut(name).unwrap()[*n];
                            if keyword != "prompt" {
                                d.kind = Some(keyword.trim_start_matches("def_").to_string());
                            }
                            d.has_prompt |= prompt.is_some();
                        }
                        Current::Block => {
                            if let (Some(b), Some(p)) = (self.blocks.last_mut(), prompt) {
                                if b.kind == BlockKind::Choice {
                                    b.title = format!("choice \"{p}\"");
                                }
                            }
                        }
                        Current::None => {}
                    }
                }
                "depends" => {
                    let expr = rest.strip_prefix("on").unwrap_or(rest).trim().to_string();
                    match &current {
                        Current::Symbol(name, n) => self.index.defs.get_mut(name).unwrap()[*n]
                            .depends
                            .push(expr),
                        Current::Block => {
                            if let Some(b) = self.blocks.last_mut() {
                                b.conditions.push(expr)
                            }
                        }
                        Current::None => {}
                    }
                }
                "select" => {
                    if let Current::Symbol(by, _) = &current {
                        let (target, after) =
                            rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                        let condition = after
                            .trim()
                            .strip_prefix("if")
                            .filter(|c| c.starts_with(char::is_whitespace))
                            .map(|c| c.trim().to_string());
                        self.index
                            .selected_by
                            .entry(target.to_string())
                            .or_default()
                            .push(Select {
                                by: by.clone(),
                                condition,
                                file: path.to_string(),
                                line: lineno,
                            });
                    }
                }
                "help" | "---help---" => help = Some(None),
                "if" => {
                    self.blocks.push(Block {
                        kind: BlockKind::If,
                        title: String::new(),
                        conditions: vec![rest.to_string()],
                    });
                    current = Current::None;
                }
                "menu" | "choice" => {
                    let (kind, title) = if keyword == "menu" {
                        (BlockKind::Menu, format!("menu \"{}\"", unquote(rest)))
                    } else {
                        (BlockKind::Choice, "choice".to_string())
                    };
                    self.blocks.push(Block {
                        kind,
                        title,
                        conditions: Vec::new(),
                    });
                    current = Current::Block;
                }
                "endif" | "endmenu" | "endchoice" => {
                    if self.blocks.pop().is_none() {
                        self.index.warnings.push(format!(
                            "{path}:{lineno}: `{keyword}` without an open block"
                        ));
                    }
                    current = Current::None;
                }
                "source" | "osource" | "rsource" | "orsource" => {
                    let optional = keyword.starts_with('o');
                    let mut target = unquote(rest)
                        .replace("$(SRCARCH)", &self.arch)
                        .replace("$(HEADER_ARCH)", &self.arch);
                    if keyword.contains("rsource") {
                        if let Some((dir, _)) = path.rsplit_once('/') {
                            target = format!("{dir}/{target}");
                        }
                    }
                    if target.contains("$(") || target.contains('*') {
                        self.index
                            .warnings
                            .push(format!("{path}:{lineno}: cannot follow `{keyword} {rest}`"));
                    } else {
                        self.source(&target, optional, read, depth + 1)?;
                    }
                    current = Current::None;
                }
                // `comment` entries and everything else (`default`, `range`, `imply`, `visible
                // if`, `mainmenu`, macro assignments) neither define nor constrain a symbol
                // in a way we report.
                "comment" | "mainmenu" => current = Current::None,
                _ => {}
            }
        }
        Ok(())
    }
}

/// Columns of leading whitespace, a tab reaching the next multiple of 8.
fn indent(line: &str) -> usize {
    let mut col = 0;
    for c in line.chars() {
        match c {
            ' ' => col += 1,
            '\t' => col = (col / 8 + 1) * 8,
            _ => break,
        }
    }
    col
}

/// The line without a `#` comment (a `#` inside double quotes is text).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

/// `"text" if X` → `text`; an unquoted word is returned as is.
fn unquote(s: &str) -> String {
    let s = s.trim();
    match s.strip_prefix('"').and_then(|r| r.split_once('"')) {
        Some((inner, _)) => inner.to_string(),
        None => s.split_whitespace().next().unwrap_or("").to_string(),
    }
}

/// Writes each symbol of a Kconfig expression followed by its value, as menuconfig's help
/// does: `SLUB [=n] && SYSFS [=y]`. Quoted strings and `$(...)` macros are left alone.
pub fn annotate(expr: &str, value: &dyn Fn(&str) -> String) -> String {
    let mut out = String::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|&c| c == '"')
                .map_or(chars.len(), |p| i + 2 + p);
            out.extend(&chars[i..end]);
            i = end;
        } else if c == '$' && chars.get(i + 1) == Some(&'(') {
            let mut depth = 0;
            let start = i;
            while i < chars.len() {
                match chars[i] {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            out.extend(&chars[start..i]);
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push_str(&word);
            let constant = matches!(word.as_str(), "y" | "m" | "n") || c.is_ascii_digit();
            if !constant {
                out.push_str(&format!(" [={}]", value(&word)));
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Reads a recorded tree under `test_data/`.
    fn recorded(scenario: &str) -> SymbolIndex {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/kconfig/test_data")
            .join(scenario);
        parse_tree("x86", &mut |rel: &str| {
            Ok(std::fs::read_to_string(root.join(rel)).ok())
        })
        .unwrap()
    }

    #[test]
    fn kasan_excerpt_depends_selects_and_blocks() {
        let ix = recorded("kasan");
        assert_eq!(
            ix.files, 4,
            "Kconfig, arch/x86/Kconfig, lib/Kconfig.debug, lib/Kconfig.kasan"
        );
        assert_eq!(ix.warnings, Vec::<String>::new());

        let kasan = &ix.defs["KASAN"][0];
        assert_eq!((kasan.file.as_str(), kasan.line), ("lib/Kconfig.kasan", 34));
        assert_eq!(kasan.kind.as_deref(), Some("bool"));
        assert!(kasan.has_prompt);
        // The continued `depends on` is one expression; the second is separate.
        assert_eq!(kasan.depends.len(), 2);
        assert!(kasan.depends[0].starts_with("(((HAVE_ARCH_KASAN && CC_HAS_KASAN_GENERIC) ||"));
        assert!(kasan.depends[0].ends_with("HAVE_ARCH_KASAN_HW_TAGS"));
        assert_eq!(kasan.depends[1], "(SLUB && SYSFS) || (SLAB && !DEBUG_SLAB)");
        assert!(kasan.depends[0].contains("CC_HAS_KASAN_GENERIC) || (HAVE_ARCH_KASAN_SW_TAGS"));
        let titles: Vec<&str> = kasan.within.iter().map(|b| b.title.as_str()).collect();
        assert_eq!(
            titles,
            ["menu \"Kernel hacking\"", "menu \"Memory Debugging\""]
        );

        // Inside `if KASAN` and a choice with a prompt.
        let generic = &ix.defs["KASAN_GENERIC"][0];
        let kinds: Vec<BlockKind> = generic.within.iter().map(|b| b.kind).collect();
        assert_eq!(
            kinds,
            [
                BlockKind::Menu,
                BlockKind::Menu,
                BlockKind::If,
                BlockKind::Choice
            ]
        );
        assert_eq!(generic.within[2].conditions, ["KASAN"]);
        assert_eq!(generic.within[3].title, "choice \"KASAN mode\"");

        // No prompt: only selects set it. The arch's select is recorded with its condition.
        assert!(!ix.defs["HAVE_ARCH_KASAN"][0].has_prompt);
        let sel = &ix.selected_by["HAVE_ARCH_KASAN"][0];
        assert_eq!(
            (sel.by.as_str(), sel.condition.as_deref()),
            ("X86", Some("X86_64"))
        );
        assert_eq!(sel.file, "arch/x86/Kconfig");
    }

    #[test]
    fn help_text_mentioning_config_is_not_parsed() {
        let ix = recorded("kasan");
        // The help of KASAN_GENERIC says "enabled with CONFIG_KASAN_GENERIC"; the help of
        // KASAN mentions "CONFIG_STACKTRACE". Neither is a definition.
        assert!(!ix.is_defined("STACKTRACE"));
        assert_eq!(ix.defs["KASAN_GENERIC"].len(), 1);
        assert!(ix.is_defined("KASAN_SW_TAGS"));
        assert_eq!(ix.kind("KASAN_HW_TAGS"), Some("bool"));
    }

    #[test]
    fn missing_sources_are_warnings() {
        let mut files: HashMap<&str, &str> = HashMap::new();
        files.insert("Kconfig", "source \"gone/Kconfig\"\nosource \"maybe/Kconfig\"\nsource \"$(FOO)/Kconfig\"\nconfig A\n\tbool\n");
        let ix = parse_tree("x86", &mut |p: &str| {
            Ok(files.get(p).map(|s| s.to_string()))
        })
        .unwrap();
        assert!(ix.is_defined("A"));
        assert_eq!(ix.warnings.len(), 2, "{:?}", ix.warnings);
    }

    #[test]
    fn rsource_is_relative_to_the_file() {
        let mut files: HashMap<&str, &str> = HashMap::new();
        files.insert("Kconfig", "source \"drivers/Kconfig\"\n");
        files.insert(
            "drivers/Kconfig",
            "menu \"Drivers\"\n\tdepends on HAS_IOMEM\nrsource \"virtio/Kconfig\"\nendmenu\n",
        );
        files.insert("drivers/virtio/Kconfig", "config VIRTIO\n\ttristate\n");
        let ix = parse_tree("x86", &mut |p: &str| {
            Ok(files.get(p).map(|s| s.to_string()))
        })
        .unwrap();
        let d = &ix.defs["VIRTIO"][0];
        assert_eq!(d.within[0].conditions, ["HAS_IOMEM"]);
        assert!(!d.has_prompt);
    }

    #[test]
    fn annotation_shows_values() {
        let v = |s: &str| {
            if s == "SYSFS" {
                "y".to_string()
            } else {
                "n".to_string()
            }
        };
        assert_eq!(
            annotate("(SLUB && SYSFS) || (SLAB && !DEBUG_SLAB)", &v),
            "(SLUB [=n] && SYSFS [=y]) || (SLAB [=n] && !DEBUG_SLAB [=n])"
        );
        assert_eq!(
            annotate(
                "GCC_VERSION >= 80300 && X != y && $(cc-option,-fx) && S = \"a b\"",
                &v
            ),
            "GCC_VERSION [=n] >= 80300 && X [=n] != y && $(cc-option,-fx) && S [=n] = \"a b\""
        );
    }
}
