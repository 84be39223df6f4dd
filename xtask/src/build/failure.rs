//! Why a build step failed: an error of the sources (a compiler, assembler or linker error
//! from the tree: recorded in the cache, so a bisect skips the commit), or anything else (a
//! full disk, an I/O error, a compiler or make killed, a tree configured in-tree: 128 with the
//! cause, nothing cached). Pure, so it is tested on recorded make output.

use regex::Regex;
use std::sync::OnceLock;

/// How a failed step is judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The sources do not build: the same inputs fail the same way every time.
    Source,
    /// The host's or the setup's doing; one line naming the cause and the fix.
    Host(String),
}

/// Judges a failed step from what it printed (its part of the build log) and how it ended
/// (`exit 2`, `killed by a signal`). The host's causes come first: a build that ran out of
/// disk also shows the compiler's and linker's complaints about it.
pub fn classify(output: &str, status: &str) -> Failure {
    let lines: Vec<&str> = output.lines().filter(|l| !is_source_echo(l)).collect();
    let has = |needle: &str| lines.iter().any(|l| l.contains(needle));
    if has("No space left on device") || has("Disk quota exceeded") {
        return Failure::Host(
            "the disk is full (No space left on device): free space on the state dir's disk, \
             or pass --state-dir PATH on a bigger one"
                .into(),
        );
    }
    if has("Input/output error") {
        return Failure::Host(
            "an I/O error (EIO) while building: check the disk (`dmesg`), then build again".into(),
        );
    }
    if has("The source tree is not clean, please run 'make mrproper'") {
        return Failure::Host(
            "the kernel tree is configured in-tree (a make without O= ran in it), which every \
             O= build refuses: run `make mrproper` in the tree"
                .into(),
        );
    }
    if let Some(program) = lines.iter().find_map(|l| killed_program(l)) {
        return Failure::Host(format!(
            "the compiler was killed ({program}): out of memory (the OOM killer) or killed from \
             outside; build with fewer jobs (-j) or more memory"
        ));
    }
    if lines.iter().any(|l| recipe_killed(l)) {
        return Failure::Host(
            "a build command was killed by a signal (the OOM killer, or from outside): build \
             again, with fewer jobs (-j) if memory is short"
                .into(),
        );
    }
    if lines.iter().any(|l| is_source_error(l)) {
        return Failure::Source;
    }
    if !lines.iter().any(|l| is_make_error(l)) {
        return Failure::Host(format!(
            "the build ended ({status}) without an error from make: make was killed (by a signal \
             or the OOM killer) or did not start"
        ));
    }
    Failure::Host(format!(
        "the build failed ({status}) without a compiler, assembler or linker error from the \
         tree, so it is not recorded as the commit's failure"
    ))
}

/// gcc quoting the source under a diagnostic (`   57 | int x = ;`, `      |   ^`): the tree's
/// text, never a message of the host.
fn is_source_echo(line: &str) -> bool {
    let t = line.trim_start();
    let rest = t
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start();
    rest.starts_with("| ") || rest == "|"
}

/// make's own failure line: `make[2]: *** [Makefile:12: x.o] Error 1`.
fn is_make_error(line: &str) -> bool {
    line.starts_with("make") && line.contains("*** ")
}

/// The program gcc reports killed: `gcc: fatal error: Killed signal terminated program cc1`
/// (how an OOM kill of cc1, as or ld shows), collect2's `ld terminated with signal 9
/// [Killed]`, or an ICE that is a kill (`internal compiler error: Killed (program cc1)`).
fn killed_program(line: &str) -> Option<String> {
    if let Some((_, prog)) = line.split_once("signal terminated program ") {
        return Some(prog.trim().to_string());
    }
    if let Some((before, _)) = line.split_once(" terminated with signal ") {
        return Some(before.rsplit(' ').next().unwrap_or(before).to_string());
    }
    if line.contains("internal compiler error: Killed") {
        return Some(line.trim().to_string());
    }
    None
}

/// A recipe ended by a signal: the shell's `Killed`/`Terminated` and make's `Error 137`
/// (128 + SIGKILL), or make's own `*** [...] Killed` for a recipe run without a shell.
fn recipe_killed(line: &str) -> bool {
    let t = line.trim();
    if matches!(t, "Killed" | "Terminated") {
        return true;
    }
    if is_make_error(t) {
        // 128 + SIGHUP, SIGINT, SIGKILL, SIGTERM: signals from outside, not a crash of a tool.
        return ["Error 129", "Error 130", "Error 137", "Error 143"]
            .iter()
            .any(|e| t.ends_with(e))
            || t.ends_with("] Killed")
            || t.ends_with("] Terminated")
            || t.ends_with("] Hangup")
            || t.ends_with("] Interrupt");
    }
    false
}

/// An error from the tree: the compiler's (`file.c:12:3: error: …`, `gcc: error: …`), the
/// assembler's (`file.S:40: Error: …`), the linker's (`undefined reference to`), modpost's,
/// Kconfig's, or make's missing file of the tree (`No rule to make target`).
fn is_source_error(line: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(concat!(
            // file:line[:col]: [fatal ]error: (gcc, clang), file:line: Error: (gas)
            r"^\S+:\d+:(\d+:)? ((fatal )?error|Error): ",
            // the driver's own errors: gcc: error: unrecognized command-line option
            r"|^(\S+/)?(gcc|cc1|cc|clang|as|ld(\.bfd)?)(-\d+)?: (fatal )?error: ",
            r"|: undefined reference to |: multiple definition of |relocation truncated to fit",
            r"|^(\S+/)?ld(\.bfd)?: .*(error|undefined|cannot find)",
            r"|^ERROR: modpost: ",
            r"|^\S*Kconfig\S*:\d+: (syntax error|error)",
            r"|^make(\[\d+\])?: \*\*\* No rule to make target ",
        ))
        .expect("a valid regex")
    });
    re.is_match(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> String {
        let path = format!("{}/test_data/build/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn host(name: &str) -> String {
        match classify(&data(name), "exit 2") {
            Failure::Host(why) => why,
            Failure::Source => panic!("{name} judged the source's failure"),
        }
    }

    #[test]
    fn a_compile_error_of_the_tree_is_the_sources() {
        assert_eq!(
            classify(&data("syntax_error.log"), "exit 2"),
            Failure::Source
        );
    }

    #[test]
    fn a_link_error_of_the_tree_is_the_sources() {
        assert_eq!(
            classify(&data("undefined_reference.log"), "exit 2"),
            Failure::Source
        );
    }

    #[test]
    fn a_full_disk_is_the_hosts_even_when_the_linker_complains() {
        assert!(host("enospc_make.log").contains("No space left on device"));
    }

    #[test]
    fn a_tree_configured_in_tree_names_mrproper() {
        assert!(host("in_tree_configured.log").contains("make mrproper"));
    }

    #[test]
    fn a_compiler_killed_by_a_signal_is_the_hosts() {
        // A stand-in CC that SIGKILLs itself: the shell says Killed, make Error 137.
        assert!(host("cc_killed.log").contains("killed by a signal"));
        // cc1 SIGKILLed under gcc (what an OOM kill looks like): gcc names the program.
        let why = host("cc1_killed.log");
        assert!(
            why.contains("the compiler was killed (/build/kill-cc1)"),
            "{why}"
        );
    }

    #[test]
    fn make_killed_leaves_no_error_of_its_own() {
        let why = match classify(&data("make_killed.log"), "exit 255") {
            Failure::Host(w) => w,
            Failure::Source => panic!("source"),
        };
        assert!(
            why.contains("(exit 255) without an error from make"),
            "{why}"
        );
    }

    #[test]
    fn lines_of_the_kind() {
        assert!(is_source_echo("   57 | int xtask = ;"));
        assert!(is_source_echo("      |                        ^"));
        assert!(!is_source_echo("make: *** [x] Error 2"));
        // The tree's text quoted under a diagnostic is not the host speaking.
        let quoted =
            "/src/a.c:1:1: error: x\n    1 | \"No space left on device\"\nmake: *** [a] Error 1\n";
        assert_eq!(classify(quoted, "exit 2"), Failure::Source);
        assert!(is_source_error(
            "/src/arch/x86/entry/entry_64.S:40: Error: no such instruction: `foo'"
        ));
        assert!(is_source_error(
            "gcc: error: unrecognized command-line option '-mfoo'"
        ));
        assert!(is_source_error(
            "ERROR: modpost: \"foo\" [drivers/x.ko] undefined!"
        ));
        assert!(is_source_error(
            "make[2]: *** No rule to make target 'x.o', needed by 'y'.  Stop."
        ));
        assert!(!is_source_error("make[2]: *** [Makefile:12: x.o] Error 1"));
        assert!(recipe_killed(
            "make[3]: *** [scripts/Makefile.build:250: init/main.o] Killed"
        ));
        assert!(!recipe_killed(
            "make[3]: *** [scripts/Makefile.build:250: init/main.o] Error 1"
        ));
        assert_eq!(
            killed_program("collect2: fatal error: ld terminated with signal 9 [Killed]")
                .as_deref(),
            Some("ld")
        );
        assert!(matches!(
            classify("make: *** [x] Error 2\n/bin/sh: write error: Input/output error\n", "exit 2"),
            Failure::Host(w) if w.contains("EIO")
        ));
        // make failed, and nothing says the tree is at fault: not recorded.
        assert!(matches!(
            classify("make[1]: *** [Makefile:1: all] Error 139\n", "exit 2"),
            Failure::Host(w) if w.contains("without a compiler, assembler or linker error")
        ));
    }
}
