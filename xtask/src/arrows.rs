//! Arrows that point one way: the crate's module graph, read from its own source files, has no
//! circles. Test code only.
//!
//! A node is a top-level module (`src/x.rs`), or, in a folder module (`src/x/`), each direct
//! submodule (`x::y`, from `src/x/y.rs` or `src/x/y/`) and the folder's own `mod.rs` (`x`).
//! An arrow `a → b` is a path in `a`'s product code (comments, strings and `#[cfg(test)]`
//! items left out) that names `b`: `crate::b::…` (also inside `use crate::{…}` groups),
//! `super::…`, or a child module by its own name (`run::Plan` in `vm/mod.rs`), except an arrow
//! from a child up to its own folder (`super::Thing` in `vm/run.rs`): a folder's `mod.rs` (or
//! `x.rs` beside `x/`) is the top its children share, so the rule is that siblings and
//! modules of different folders never reach each other in a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path (`["vm", "run"]`); the crate root is empty.
type Module = Vec<String>;

/// Every `.rs` file under `dir` with its module path.
fn modules(src: &Path, dir: &Path, out: &mut Vec<(Module, PathBuf)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if p.file_name().unwrap() != "test_data" {
                modules(src, &p, out);
            }
            continue;
        }
        if p.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = p.strip_prefix(src).unwrap().with_extension("");
        let mut m: Module = rel
            .iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        if m.last().is_some_and(|l| l == "mod" || l == "main") {
            m.pop();
        }
        out.push((m, p));
    }
}

/// `text` with comments and the insides of string and char literals blanked, line breaks kept.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |ch: char, out: &mut String| out.push(if ch == '\n' { '\n' } else { ' ' });
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            while i < c.len() && !(c[i] == '*' && c.get(i + 1) == Some(&'/')) {
                blank(c[i], &mut out);
                i += 1;
            }
            i += 2;
        } else if c[i] == 'r' && (next == Some('"') || next == Some('#')) && !ident_char(&c, i) {
            // A raw string: r"…", r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while c.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if c.get(j) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            out.push('"');
            i = j + 1;
            while i < c.len() {
                if c[i] == '"' && (0..hashes).all(|h| c.get(i + 1 + h) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                blank(c[i], &mut out);
                i += 1;
            }
            out.push('"');
        } else if c[i] == '"' {
            out.push('"');
            i += 1;
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    blank(c[i], &mut out);
                    i += 1;
                }
                if i < c.len() {
                    blank(c[i], &mut out);
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if c[i] == '\'' && (next == Some('\\') || c.get(i + 2) == Some(&'\'')) {
            // A char literal ('x', '\n', '\u{..}'); a lifetime ('a) stays.
            i += 1;
            while i < c.len() && c[i] != '\'' {
                if c[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            out.push_str("' '");
            i += 1;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Whether the char before `i` continues an identifier (so `c[i]` is not a token's start).
fn ident_char(c: &[char], i: usize) -> bool {
    i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')
}

/// A token and the line it is on.
#[derive(Debug, Clone, PartialEq)]
struct Tok {
    text: String,
    line: usize,
}

fn tokens(code: &str) -> Vec<Tok> {
    let c: Vec<char> = code.chars().collect();
    let mut toks = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < c.len() {
        if c[i] == '\n' {
            line += 1;
            i += 1;
        } else if c[i].is_whitespace() {
            i += 1;
        } else if c[i].is_alphanumeric() || c[i] == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            toks.push(Tok {
                text: c[start..i].iter().collect(),
                line,
            });
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            toks.push(Tok {
                text: "::".into(),
                line,
            });
            i += 2;
        } else {
            toks.push(Tok {
                text: c[i].to_string(),
                line,
            });
            i += 1;
        }
    }
    toks
}

/// `toks` without the items under `#[cfg(test)]` (a `mod tests { … }`, a `use`, a function).
fn without_test_items(toks: Vec<Tok>) -> Vec<Tok> {
    let is = |t: &[Tok], i: usize, s: &str| t.get(i).is_some_and(|t| t.text == s);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let cfg_test = ["#", "[", "cfg", "(", "test", ")", "]"]
            .iter()
            .enumerate()
            .all(|(k, s)| is(&toks, i + k, s));
        if !cfg_test {
            out.push(toks[i].clone());
            i += 1;
            continue;
        }
        // Skip the item: up to a `;` outside braces, or the brace block that closes it.
        i += 7;
        let mut depth = 0;
        while i < toks.len() {
            match toks[i].text.as_str() {
                "{" => depth += 1,
                "}" => {
                    depth -= 1;
                    if depth == 0 {
                        i += 1;
                        break;
                    }
                }
                ";" if depth == 0 => {
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
    out
}

fn is_ident(t: &str) -> bool {
    t.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// The paths of one path or use tree starting at `toks[i]`, each prefixed with `prefix`;
/// returns the index after it.
fn use_tree(
    toks: &[Tok],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    let at = |i: usize| toks.get(i).map_or("", |t| t.text.as_str());
    loop {
        match at(i) {
            "{" => {
                i += 1;
                while i < toks.len() && at(i) != "}" {
                    i = use_tree(toks, i, prefix.clone(), out);
                    // Past `as name` and to the next member.
                    while i < toks.len() && at(i) != "," && at(i) != "}" {
                        i += 1;
                    }
                    if at(i) == "," {
                        i += 1;
                    }
                }
                return i + 1;
            }
            t if is_ident(t) => {
                if t != "self" {
                    prefix.push(t.to_string());
                }
                i += 1;
                if at(i) == "::" {
                    i += 1;
                    continue;
                }
                out.push(prefix);
                return i;
            }
            _ => {
                out.push(prefix);
                return i;
            }
        }
    }
}

/// The module graph's node of module `m`.
fn node(m: &[String], folders: &BTreeSet<String>) -> String {
    match m {
        [] => "main".into(),
        [a, b, ..] if folders.contains(a) => format!("{a}::{b}"),
        [a, ..] => a.clone(),
    }
}

/// Arrows `from → to`, each with where it is first named (`file:line`).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

/// The crate's module graph, read from `src`.
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    modules(src, src, &mut files);
    let known: BTreeSet<Module> = files.iter().map(|(m, _)| m.clone()).collect();
    let folders: BTreeSet<String> = known
        .iter()
        .filter(|m| m.len() >= 2)
        .map(|m| m[0].clone())
        .collect();
    let mut g = Graph::new();
    for (m, path) in &files {
        let from = node(m, &folders);
        let text = std::fs::read_to_string(path).unwrap();
        let toks = without_test_items(tokens(&code_only(&text)));
        let shown = path.strip_prefix(src).unwrap().display().to_string();
        // Inline modules (`mod by_name { … }`): their names, with the brace depth they close at.
        let (mut inline, mut depth): (Vec<(String, usize)>, usize) = (vec![], 0);
        for i in 0..toks.len() {
            let t = toks[i].text.as_str();
            match t {
                "{" => depth += 1,
                "}" => {
                    depth -= 1;
                    if inline.last().is_some_and(|(_, d)| *d == depth) {
                        inline.pop();
                    }
                }
                "mod" if toks.get(i + 2).is_some_and(|t| t.text == "{") => {
                    inline.push((toks[i + 1].text.clone(), depth));
                }
                _ => {}
            }
            let m = &[m.clone(), inline.iter().map(|(n, _)| n.clone()).collect()].concat();
            let after_colons = i > 0 && toks[i - 1].text == "::";
            if after_colons || toks.get(i + 1).is_none_or(|n| n.text != "::") {
                continue;
            }
            let (base, start): (Module, usize) = match t {
                "crate" => (vec![], i + 2),
                "super" => {
                    let mut base = m.clone();
                    let mut j = i;
                    while toks.get(j).is_some_and(|t| t.text == "super")
                        && toks.get(j + 1).is_some_and(|t| t.text == "::")
                    {
                        base.pop();
                        j += 2;
                    }
                    (base, j)
                }
                // A child module by its own name.
                _ if known.contains(&[m.clone(), vec![t.to_string()]].concat()) => (m.clone(), i),
                _ => continue,
            };
            let mut paths = Vec::new();
            use_tree(&toks, start, base, &mut paths);
            for p in paths {
                // The longest prefix that is a module is the one named.
                let named = (0..=p.len())
                    .rev()
                    .map(|k| p[..k].to_vec())
                    .find(|k| known.contains(k))
                    .unwrap_or_default();
                let to = node(&named, &folders);
                // A child reaching up to its own folder's mod.rs is not counted.
                let up = named.len() < m.len() && m.starts_with(&named) && !named.is_empty();
                if to != from && !up {
                    g.entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_insert_with(|| format!("{shown}:{}", toks[i].line));
                }
            }
        }
    }
    g
}

/// Every circle of `g`, one per group of modules that all reach each other: the group, then
/// its shortest circle through the group's first module, `a → b (where) → … → a`.
fn circles(g: &Graph) -> Vec<String> {
    let nodes: BTreeSet<&String> = g.keys().chain(g.values().flat_map(|m| m.keys())).collect();
    let reaches = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(n) = todo.pop() {
            for next in g.get(n).into_iter().flat_map(|m| m.keys()) {
                if seen.insert(next) {
                    todo.push(next);
                }
            }
        }
        seen
    };
    let reach: BTreeMap<&String, BTreeSet<&String>> =
        nodes.iter().map(|n| (*n, reaches(n))).collect();
    let mut done = BTreeSet::new();
    let mut found = Vec::new();
    for n in &nodes {
        if done.contains(n) || !reach[n].contains(n) {
            continue;
        }
        let group: BTreeSet<&String> = nodes
            .iter()
            .copied()
            .filter(|m| reach[n].contains(m) && reach[m].contains(n))
            .collect();
        done.extend(group.iter().copied());
        // The shortest way back to n, inside the group.
        let mut prev: BTreeMap<&String, &String> = BTreeMap::new();
        let mut todo = std::collections::VecDeque::from([*n]);
        'bfs: while let Some(a) = todo.pop_front() {
            for b in g.get(a).into_iter().flat_map(|m| m.keys()) {
                if !group.contains(b) || prev.contains_key(b) {
                    continue;
                }
                prev.insert(b, a);
                if b == *n {
                    break 'bfs;
                }
                todo.push_back(b);
            }
        }
        // n → way[0] → … → n, read back from n.
        let mut way = vec![*n];
        let mut at = prev[n];
        while at != *n {
            way.push(at);
            at = prev[at];
        }
        way.push(*n);
        way.reverse();
        let names: Vec<&str> = group.iter().map(|m| m.as_str()).collect();
        let mut line = format!("[{}]: {n}", names.join(" "));
        for w in way.windows(2) {
            line.push_str(&format!(" → {} ({})", w[1], g[w[0]][w[1]]));
        }
        found.push(line);
    }
    found
}

#[test]
fn no_module_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = circles(&graph(&src));
    assert!(
        found.is_empty(),
        "module circles (each arrow names where the first use is):\n{}",
        found.join("\n")
    );
}

#[test]
fn a_circle_is_found_and_named() {
    let dir = std::env::temp_dir().join(format!("xtask-arrows-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("vm")).unwrap();
    let write = |p: &str, s: &str| std::fs::write(dir.join(p), s).unwrap();
    write("main.rs", "mod vm; mod build; mod cli;\n");
    write("vm/mod.rs", "pub mod run;\npub mod spec;\nuse run::Plan;\n");
    // A use group, a string and a comment that name `cli`, a test item that does.
    write(
        "vm/run.rs",
        "use crate::{build::{self, X}, vm::spec};\nconst S: &str = \"crate::cli::X\";\n// crate::cli\n#[cfg(test)]\nmod tests { use crate::cli::Y; }\n",
    );
    write("vm/spec.rs", "pub struct VmSpec;\n");
    write("build.rs", "fn f() { let _ = super::vm::spec::VmSpec; }\n");
    write("cli.rs", "use crate::vm::run::Plan;\n");
    let g = graph(&dir);
    let arrows = |n: &str| g.get(n).map(|m| m.keys().cloned().collect::<Vec<_>>());
    assert_eq!(arrows("vm"), Some(vec!["vm::run".to_string()]));
    assert_eq!(
        arrows("vm::run"),
        Some(vec!["build".to_string(), "vm::spec".to_string()])
    );
    assert_eq!(arrows("build"), Some(vec!["vm::spec".to_string()]));
    assert!(circles(&g).is_empty(), "{:?}", circles(&g));
    // build → cli → vm::run → build.
    write("build.rs", "use crate::cli;\n");
    let found = circles(&graph(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        found,
        ["[build cli vm::run]: build → cli (build.rs:1) → vm::run (cli.rs:1) → build (vm/run.rs:1)"]
    );
}

/// Tasks take resolved plain data: only the front door (the crate root, the command line and
/// the dispatcher) names `cli`, whose types are clap's.
#[test]
fn only_the_front_door_names_the_command_line() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let front = ["main", "cli", "cli::resolve", "dispatch"];
    let readers: Vec<String> = graph(&src)
        .iter()
        .filter(|(from, _)| !front.contains(&from.as_str()))
        .filter_map(|(from, to)| to.get("cli").map(|at| format!("{from} ({at})")))
        .collect();
    assert!(
        readers.is_empty(),
        "modules that name clap types (resolve them in cli/resolve.rs instead):\n{}",
        readers.join("\n")
    );
}

/// `g` with every node taken to its top-level module (`vm::run` → `vm`): the arrows between
/// folders and top-level files.
fn folders(g: &Graph) -> Graph {
    let top = |n: &str| n.split("::").next().unwrap_or(n).to_string();
    let mut f = Graph::new();
    for (from, to) in g {
        for (to, at) in to {
            if top(from) != top(to) {
                f.entry(top(from))
                    .or_default()
                    .entry(top(to))
                    .or_insert_with(|| at.clone());
            }
        }
    }
    f
}

#[test]
fn no_folder_circles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = circles(&folders(&graph(&src)));
    assert!(
        found.is_empty(),
        "circles between folders (each arrow names where the first use is):\n{}",
        found.join("\n")
    );
}

#[test]
fn a_folder_circle_is_one_through_its_submodules() {
    let mut g = Graph::new();
    let arrow = |g: &mut Graph, a: &str, b: &str| {
        g.entry(a.into())
            .or_default()
            .insert(b.into(), format!("{a}.rs:1"));
    };
    // vm::run → settings → vm::spec: no circle between modules, one between folders.
    arrow(&mut g, "vm::run", "settings");
    arrow(&mut g, "settings", "vm::spec");
    arrow(&mut g, "vm::run", "vm::spec");
    assert!(circles(&g).is_empty(), "{:?}", circles(&g));
    assert_eq!(
        circles(&folders(&g)),
        ["[settings vm]: settings → vm (settings.rs:1) → settings (vm::run.rs:1)"]
    );
}
