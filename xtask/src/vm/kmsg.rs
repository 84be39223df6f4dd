//! The guest's kernel log as /dev/kmsg gives it, and which console findings userspace wrote
//! there rather than the kernel (told apart by the record's facility): pure code, plus the
//! one agent call that reads the log.

use super::console::{Finding, FindingKind};
use super::qga::{self, Agent};
use anyhow::Result;
use std::time::Instant;

/// One record of the kernel log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 0 is the kernel's own (LOG_KERN). A write to /dev/kmsg gets LOG_USER (1), or the
    /// facility its `<N>` prefix names, but never 0 (kernel/printk/printk.c, devkmsg_write).
    pub facility: u32,
    pub level: u8,
    /// The timestamp the console prints too, in microseconds.
    pub usec: u64,
    /// The message, `\xHH` escapes undone; a record may hold several lines.
    pub text: String,
}

impl Record {
    pub fn is_kernel(&self) -> bool {
        self.facility == 0
    }
}

/// Where the guest puts its copy of the log for the agent to read back (a tmpfs in both init
/// modes, like the command's output).
const DUMP_PATH: &str = "/run/xtask-kmsg";
/// As much of the copy as is read back: more than the largest log buffer a config gives
/// (LOG_BUF_SHIFT is at most 25) in this format.
const MAX_DUMP: usize = 64 << 20;

/// The guest command that copies the whole log to [`DUMP_PATH`], one record a line as
/// `prio,seq,usec,flags;text` (Documentation/ABI/testing/dev-kmsg). Each read() returns one
/// record; non-blocking, the read ends at the newest record instead of waiting for more (dd
/// then fails with EAGAIN, which is the normal end). Not `dmesg -r`: util-linux 2.38 drops
/// the facility from its raw output.
pub const READ_ARGV: [&str; 3] = [
    "/bin/sh",
    "-c",
    "dd if=/dev/kmsg iflag=nonblock bs=65536 status=none >/run/xtask-kmsg 2>/dev/null; exit 0",
];

/// Reads the guest's kernel log through the agent.
pub fn read(agent: &mut Agent, deadline: Instant, watch: qga::Watch) -> Result<String> {
    let argv: Vec<String> = READ_ARGV.iter().map(|s| s.to_string()).collect();
    let pid = agent.exec(&argv, false, deadline, watch)?;
    agent.wait_exec(pid, deadline, watch)?;
    let (dump, _) = agent.read_file(DUMP_PATH, MAX_DUMP, deadline, watch)?;
    Ok(String::from_utf8_lossy(&dump).into_owned())
}

/// The records of a /dev/kmsg dump; continuation lines (` KEY=value`) and lines that are not
/// records are skipped.
pub fn parse(dump: &str) -> Vec<Record> {
    dump.lines().filter_map(record).collect()
}

fn record(line: &str) -> Option<Record> {
    let (head, text) = line.split_once(';')?;
    let mut fields = head.split(',');
    let prio: u32 = fields.next()?.parse().ok()?;
    let _seq: u64 = fields.next()?.parse().ok()?;
    let usec: u64 = fields.next()?.parse().ok()?;
    Some(Record {
        facility: prio >> 3,
        level: (prio & 7) as u8,
        usec,
        text: unescape(text),
    })
}

/// Undoes /dev/kmsg's `\xHH` escapes (of non-printable bytes and of `\` itself).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 2..i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], b.get(i + 1), hex) {
            (b'\\', Some(b'x'), Some(v)) => {
                out.push(v);
                i += 4;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a finding is one the kernel log can speak for: a kernel report, not a
/// `--bad-if-console` match (which the user asked for, whoever wrote the line).
fn about_the_kernel(f: &Finding) -> bool {
    !matches!(f.kind, FindingKind::Matched { .. })
}

/// Whether the findings are worth reading the kernel log for.
pub fn worth_reading(findings: &[Finding]) -> bool {
    findings.iter().any(about_the_kernel)
}

/// Splits console findings into the kernel's and userspace's (in that order). A finding is
/// userspace's when a record that is not the kernel's holds its line (at its timestamp, when
/// the console line has one) and no kernel record does. Everything else stays the kernel's: a
/// line the log does not hold (newer than the read, or gone from the ring buffer) is not
/// proof that userspace wrote it.
pub fn split_userspace(findings: Vec<Finding>, records: &[Record]) -> (Vec<Finding>, Vec<Finding>) {
    let holds = |r: &Record, f: &Finding| {
        f.usec.is_none_or(|u| u == r.usec) && r.text.lines().any(|l| l.trim() == f.text)
    };
    let userspace = |f: &Finding| {
        let holders: Vec<&Record> = records.iter().filter(|r| holds(r, f)).collect();
        about_the_kernel(f)
            && holders.iter().any(|r| !r.is_kernel())
            && !holders.iter().any(|r| r.is_kernel())
    };
    let (user, kernel) = findings.into_iter().partition(userspace);
    (kernel, user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::console;

    #[test]
    fn the_log_is_copied_where_it_is_read_back() {
        assert!(READ_ARGV[2].contains(&format!(">{DUMP_PATH} ")));
    }

    #[test]
    fn records_parse_with_facility_level_and_escapes() {
        let r = parse(
            "6,1,0,-;Linux version 6.1\n SUBSYSTEM=cpu\n12,197,3958734,-;WARNING: CPU: 0 PID: 1 at test\n\
             11,198,3959733,-;a\\x0ab \\x5c\nnot a record\n",
        );
        assert_eq!(r.len(), 3);
        assert!(r[0].is_kernel());
        assert_eq!((r[1].facility, r[1].level, r[1].usec), (1, 4, 3_958_734));
        assert!(!r[1].is_kernel());
        assert_eq!(r[2].text, "a\nb \\");
    }

    #[test]
    fn a_kmsg_write_is_userspace_and_a_real_warning_is_not() {
        // Recorded: the trimmed kernel's console and /dev/kmsg after `echo 'WARNING: CPU: 0
        // PID: 1 at test' > /dev/kmsg` (see the file's header).
        let console = console::recorded("console/kmsg_write_warning.log");
        let dump = console::recorded("kmsg/kmsg_write_warning.txt");
        let (kernel, user) = split_userspace(console::scan(&console, &[]), &parse(&dump));
        assert_eq!(kernel, vec![]);
        // Even the two that claimed the kernel's facility with a `<N>` prefix.
        let texts: Vec<&str> = user.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "WARNING: CPU: 0 PID: 1 at test",
                "BUG: kernel NULL pointer dereference, address: 0000000000000000",
                "Kernel panic - not syncing: a copy"
            ]
        );
        assert_eq!(user[0].line, 188);
    }

    #[test]
    fn a_copy_beside_the_real_warning_it_copies() {
        // Recorded: the findings kernel; userspace writes a copy of LKDTM's warning, then
        // LKDTM warns for real, with the same text (another CPU) a second later.
        let console = console::recorded("console/kmsg_copy_and_real_warning.log");
        let dump = console::recorded("kmsg/kmsg_copy_and_real_warning.txt");
        let (kernel, user) = split_userspace(console::scan(&console, &[]), &parse(&dump));
        let lines = |f: &[Finding]| f.iter().map(|f| f.line).collect::<Vec<_>>();
        assert_eq!(lines(&user), [207]);
        assert_eq!(lines(&kernel), [210]);
        assert_eq!(
            kernel[0].text,
            "WARNING: CPU: 0 PID: 54 at drivers/misc/lkdtm/bugs.c:85 lkdtm_WARNING+0x8/0xb"
        );
    }

    fn finding(text: &str, usec: Option<u64>) -> Finding {
        Finding {
            kind: FindingKind::Warning,
            line: 1,
            text: text.into(),
            usec,
        }
    }

    #[test]
    fn only_a_record_that_is_not_the_kernels_makes_a_finding_userspace() {
        let rec = |facility, usec, text: &str| Record {
            facility,
            level: 4,
            usec,
            text: text.into(),
        };
        let w = "WARNING: CPU: 0 PID: 1 at test";
        let split = |f: Finding, records: &[Record]| {
            let (k, u) = split_userspace(vec![f], records);
            (k.len(), u.len())
        };
        // Userspace's copy, at the console line's time.
        assert_eq!(split(finding(w, Some(5)), &[rec(1, 5, w)]), (0, 1));
        // The same text from userspace at another time does not explain this line.
        assert_eq!(split(finding(w, Some(5)), &[rec(1, 6, w)]), (1, 0));
        // The kernel's own record wins over a copy with the same stamp.
        assert_eq!(
            split(finding(w, Some(5)), &[rec(1, 5, w), rec(0, 5, w)]),
            (1, 0)
        );
        // A line the log does not hold (no log read, or the ring buffer wrapped) stays.
        assert_eq!(split(finding(w, Some(5)), &[]), (1, 0));
        // No timestamp on the console (no PRINTK_TIME): the text decides.
        assert_eq!(split(finding(w, None), &[rec(12, 9, w)]), (0, 1));
        // A line of a multi-line write.
        assert_eq!(
            split(finding(w, Some(5)), &[rec(1, 5, &format!("x\n{w}"))]),
            (0, 1)
        );
        // --bad-if-console matches are the user's to judge.
        let m = Finding {
            kind: FindingKind::Matched { regex: "x".into() },
            ..finding(w, Some(5))
        };
        assert_eq!(split(m, &[rec(1, 5, w)]), (1, 0));
    }
}
