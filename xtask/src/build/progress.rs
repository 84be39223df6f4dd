//! Reading make's output: the status line's current target while it runs, and the error
//! summary after a failure (whose failure it is: [`super::failure`]). Pure, so it is tested on recorded logs.

/// The kbuild step a line reports (`  CC      kernel/fork.o` → `CC kernel/fork.o`), if any.
pub fn step_of(line: &str) -> Option<String> {
    let rest = line.strip_prefix("  ")?;
    let (verb, target) = rest.split_once(char::is_whitespace)?;
    let is_verb = !verb.is_empty()
        && verb.len() <= 12
        && verb
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && verb.chars().next().is_some_and(|c| c.is_ascii_uppercase());
    let target = target.trim();
    (is_verb && !target.is_empty()).then(|| format!("{verb} {target}"))
}

/// What to show of a failed build: the compiler's `error:` lines first, then make's own
/// `***` lines; when there are neither, the log's last lines.
pub fn error_summary(log: &str, max: usize) -> String {
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("error:")).collect();
    let make: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("*** ") && !l.contains("error:"))
        .collect();
    let mut out: Vec<&str> = errors.into_iter().take(max).collect();
    out.extend(make.into_iter().take(max.saturating_sub(out.len())));
    if out.is_empty() {
        return crate::cmd::tail(log, max);
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILED: &str = include_str!("../../test_data/build/syntax_error.log");

    #[test]
    fn steps() {
        assert_eq!(
            step_of("  CC      kernel/fork.o").as_deref(),
            Some("CC kernel/fork.o")
        );
        assert_eq!(step_of("  LD      vmlinux").as_deref(), Some("LD vmlinux"));
        assert_eq!(
            step_of("  HOSTCC  scripts/basic/fixdep").as_deref(),
            Some("HOSTCC scripts/basic/fixdep")
        );
        assert_eq!(step_of("make[1]: Entering directory '/build'"), None);
        assert_eq!(
            step_of("  GEN     Makefile").as_deref(),
            Some("GEN Makefile")
        );
        assert_eq!(step_of("kernel/fork.c:12:1: error: expected ';'"), None);
        assert_eq!(step_of("  | ^~~~"), None);
    }

    #[test]
    fn summary_puts_compiler_errors_first() {
        let s = error_summary(FAILED, 10);
        let first = s.lines().next().unwrap();
        assert!(first.contains("error:"), "{s}");
        assert!(s.contains("***"), "{s}");
        assert!(!s.contains("CC      init/version.o"), "{s}");
    }

    #[test]
    fn summary_without_errors_is_the_tail() {
        let log = (1..=30).map(|i| format!("line {i}\n")).collect::<String>();
        let s = error_summary(&log, 3);
        assert_eq!(s, "line 28\nline 29\nline 30");
    }
}
