//! xtask-init-fast: the guest's first process for a fast boot on the read-only root (no
//! systemd, no --rw, no console shell): the mounts, the overlay root and the guest agent, all
//! in this one process. It does what rootfs/overlay/usr/local/sbin/xtask-init does in that
//! case, without a program's start per step (20 to 40 ms each under TCG, about 0.6 s in all).
//! `setup-rootfs` compiles it with plain rustc (static, std only, no crates) into the host
//! architecture's rootfs; the host boots it when the rootfs has it (vm::spec::FAST_INIT).
//! Any other case on the command line (xtask.rw, xtask.init=systemd, xtask.shell) is the
//! script's, which it hands over to unchanged. While it mounts, a thread reads the files the
//! agent and the command's shell start from ([`PREFETCH_LIST`]) into the page cache.

use std::ffi::{c_char, c_int, c_long, c_ulong, c_void, CString};
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

extern "C" {
    fn mount(
        source: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
    fn umount2(target: *const c_char, flags: c_int) -> c_int;
    fn syscall(number: c_long, ...) -> c_long;
    fn sethostname(name: *const c_char, len: usize) -> c_int;
    fn reboot(howto: c_int) -> c_int;
    fn sync();
    fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
    fn ioctl(fd: c_int, request: c_ulong, ...) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
}

const MS_NOSUID: c_ulong = 2;
const MS_NODEV: c_ulong = 4;
const MS_NOEXEC: c_ulong = 8;
const MS_MOVE: c_ulong = 8192;
const MNT_DETACH: c_int = 2;
/// glibc's reboot(2) argument for a restart: the fast lane's machine has no ACPI, where a
/// power-off only halts; a reboot ends the VM everywhere (reboot=t, QEMU's -no-reboot).
const RB_AUTOBOOT: c_int = 0x0123_4567;
#[cfg(target_arch = "x86_64")]
const SYS_PIVOT_ROOT: c_long = 155;
#[cfg(target_arch = "aarch64")]
const SYS_PIVOT_ROOT: c_long = 41;
const AF_INET: c_int = 2;
const SOCK_DGRAM: c_int = 2;
const SIOCGIFFLAGS: c_ulong = 0x8913;
const SIOCSIFFLAGS: c_ulong = 0x8914;
const IFF_UP: i16 = 1;

/// This program, as the shutdown stand-in links to it.
const SELF: &str = "/usr/local/sbin/xtask-init-fast";
/// The init of every other case.
const SCRIPT: &str = "/usr/local/sbin/xtask-init";
/// The overlay root, in the tmpfs on /run.
const ROOT: &str = "/run/root";
const AGENT_PORT: &str = "/dev/virtio-ports/org.qemu.guest_agent.0";
/// The files qemu-ga and /bin/sh are loaded from, one path a line, in the order they are
/// needed: `setup-rootfs` writes it (rootfs::fast_init::PREFETCH_LIST) from `ldd`.
const PREFETCH_LIST: &str = "/usr/local/lib/xtask/prefetch";

/// What the kernel command line asks of init.
#[derive(Debug, Default, PartialEq)]
struct Asked {
    /// xtask.share=1: mount the host's --share dir at /mnt/share.
    share: bool,
    /// Anything but a fast boot on the read-only root: the script's case.
    other: bool,
}

fn asked(cmdline: &str) -> Asked {
    let mut a = Asked::default();
    for arg in cmdline.split_whitespace() {
        match arg.split_once('=') {
            Some(("xtask.share", v)) => a.share = v == "1",
            Some(("xtask.rw", v)) | Some(("xtask.shell", v)) if v == "1" => a.other = true,
            Some(("xtask.init", v)) if v != "fast" => a.other = true,
            _ => {}
        }
    }
    a
}

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL in our own paths")
}

/// A line on the console, as the script's `say` writes it.
fn say(msg: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(f, "xtask-init: {msg}");
    }
}

/// PID 1 exiting panics the kernel; with panic=-1 and -no-reboot QEMU then exits.
fn die(msg: &str) -> ! {
    say(msg);
    std::process::exit(1)
}

fn mount_fs(fstype: &str, source: &str, target: &str, flags: c_ulong, data: &str) -> bool {
    let (s, t, f, d) = (c(source), c(target), c(fstype), c(data));
    // SAFETY: every pointer is a live NUL-terminated string for the call's duration.
    unsafe { mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) == 0 }
}

fn must_mount(fstype: &str, source: &str, target: &str, flags: c_ulong, data: &str) {
    if !mount_fs(fstype, source, target, flags, data) {
        die(&format!(
            "cannot mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
}

fn mkdirs(paths: &[&str]) {
    for p in paths {
        if let Err(e) = std::fs::create_dir_all(p) {
            die(&format!("cannot make {p}: {e}"));
        }
    }
}

/// `ip link set lo up`.
fn loopback_up() {
    let mut req = [0u8; 40];
    req[..2].copy_from_slice(b"lo");
    // SAFETY: `req` is a struct ifreq (name, then the flags as a short), alive for the calls.
    unsafe {
        let fd = socket(AF_INET, SOCK_DGRAM, 0);
        if fd < 0 {
            return say("no socket to bring lo up");
        }
        if ioctl(fd, SIOCGIFFLAGS, req.as_mut_ptr()) == 0 {
            let flags = i16::from_ne_bytes([req[16], req[17]]) | IFF_UP;
            req[16..18].copy_from_slice(&flags.to_ne_bytes());
            if ioctl(fd, SIOCSIFFLAGS, req.as_mut_ptr()) != 0 {
                say("cannot bring lo up");
            }
        }
        close(fd);
    }
}

/// The /dev/virtio-ports/<name> links udev would make (udev is not running).
fn virtio_port_links(root: &str) {
    let Ok(ports) = std::fs::read_dir(format!("{root}/sys/class/virtio-ports")) else {
        return;
    };
    for port in ports.flatten() {
        let Ok(name) = std::fs::read_to_string(port.path().join("name")) else {
            continue;
        };
        let name = name.trim();
        if !name.is_empty() {
            let target = format!("../{}", port.file_name().to_string_lossy());
            let _ = symlink(target, format!("{root}/dev/virtio-ports/{name}"));
        }
    }
}

/// Reads every file in [`PREFETCH_LIST`] once, so that they are in the page cache when qemu-ga
/// and the command's shell start: read over virtiofs on the other vCPU while PID 1 mounts,
/// instead of page by page while they start (about 0.15 s under TCG). Best effort: a missing
/// list or file only costs that time.
fn warm_page_cache() {
    use std::io::Read;
    let list = std::fs::read_to_string(PREFETCH_LIST).unwrap_or_default();
    let mut buf = vec![0u8; 256 << 10];
    for path in list.lines().filter(|l| !l.is_empty()) {
        if let Ok(mut f) = std::fs::File::open(path) {
            while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
        }
    }
}

/// The script's case: /proc goes (it mounts its own) and the script runs as PID 1.
fn hand_over() -> ! {
    let p = c("/proc");
    // SAFETY: a live NUL-terminated path.
    unsafe { umount2(p.as_ptr(), MNT_DETACH) };
    let e = std::os::unix::process::CommandExt::exec(
        Command::new(SCRIPT).args(std::env::args_os().skip(1)),
    );
    die(&format!("cannot run {SCRIPT}: {e}"))
}

/// Called as /sbin/shutdown (qemu-ga's guest-shutdown runs `/sbin/shutdown -P +0`): end the
/// VM now, its writes synced.
fn shutdown() -> ! {
    // SAFETY: plain system calls without pointers.
    unsafe {
        sync();
        reboot(RB_AUTOBOOT);
    }
    eprintln!("shutdown: {}", std::io::Error::last_os_error());
    std::process::exit(1)
}

fn main() {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if Path::new(&argv0).file_name().is_some_and(|n| n == "shutdown") {
        shutdown();
    }
    if std::process::id() != 1 {
        eprintln!("xtask-init-fast is the guest's first process (init=), not a command");
        std::process::exit(2);
    }
    std::env::set_var("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    std::env::set_var("HOME", "/root");

    must_mount("proc", "proc", "/proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let a = asked(&cmdline);
    if a.other {
        hand_over();
    }
    std::thread::spawn(warm_page_cache);
    must_mount("tmpfs", "xtask-run", "/run", MS_NOSUID | MS_NODEV, "mode=0755");
    // The root becomes an overlay: the shared rootfs (read-only) below, a tmpfs above;
    // oldroot is made in the upper layer, so that it exists in the merged root.
    mkdirs(&["/run/upper/oldroot", "/run/work", ROOT]);
    must_mount(
        "overlay",
        "overlay",
        ROOT,
        0,
        "lowerdir=/,upperdir=/run/upper,workdir=/run/work",
    );
    let r = ROOT;
    must_mount("devtmpfs", "devtmpfs", &format!("{r}/dev"), MS_NOSUID, "mode=0755");
    must_mount("tmpfs", "tmpfs", &format!("{r}/run"), MS_NOSUID | MS_NODEV, "mode=0755");
    must_mount("sysfs", "sysfs", &format!("{r}/sys"), MS_NOSUID | MS_NODEV | MS_NOEXEC, "");
    if a.share {
        // The host's --share dir, read-write, for files both sides need.
        mkdirs(&[&format!("{r}/mnt/share")]);
        must_mount("virtiofs", "share", &format!("{r}/mnt/share"), 0, "");
    }
    // qemu-ga's guest-shutdown runs /sbin/shutdown, which is systemctl and fails without
    // systemd: this program stands in for it (shutdown()).
    let stand_in = format!("{r}/usr/sbin/shutdown");
    let _ = std::fs::remove_file(&stand_in);
    if let Err(e) = symlink(SELF, &stand_in) {
        die(&format!("cannot stand in for {stand_in}: {e}"));
    }
    // What tests expect: /dev/pts, /dev/shm a tmpfs of its own (a test may remount it);
    // /tmp is the overlay's, in memory already.
    mkdirs(&[
        &format!("{r}/run/xtask"),
        &format!("{r}/dev/pts"),
        &format!("{r}/dev/shm"),
        &format!("{r}/dev/virtio-ports"),
    ]);
    must_mount(
        "devpts",
        "devpts",
        &format!("{r}/dev/pts"),
        MS_NOSUID | MS_NOEXEC,
        "gid=5,mode=620,ptmxmode=0666",
    );
    must_mount("tmpfs", "tmpfs", &format!("{r}/dev/shm"), MS_NOSUID | MS_NODEV, "mode=1777");
    loopback_up();
    virtio_port_links(r);
    let _ = symlink("/proc/self/fd", format!("{r}/dev/fd"));
    // /proc into the new root.
    if !mount_fs("", "/proc", &format!("{r}/proc"), MS_MOVE, "") {
        die("cannot move /proc into the overlay root");
    }
    let host = b"xtask";
    // SAFETY: a live buffer of the length given.
    unsafe { sethostname(host.as_ptr().cast(), host.len()) };
    let (dot, old) = (c("."), c("oldroot"));
    // SAFETY: live NUL-terminated paths; pivot_root(2) has no glibc wrapper.
    let pivoted = std::env::set_current_dir(r).is_ok()
        && unsafe { syscall(SYS_PIVOT_ROOT, dot.as_ptr(), old.as_ptr()) } == 0
        && std::env::set_current_dir("/").is_ok();
    if !pivoted {
        die("pivot_root into the overlay failed");
    }
    if !Path::new(AGENT_PORT).exists() {
        die(&format!(
            "no guest agent port ({AGENT_PORT}): is the virtserialport named org.qemu.guest_agent.0?"
        ));
    }
    say("fast mode ready, starting qemu-ga");
    let mut detached = false;
    loop {
        let agent = Command::new("qemu-ga")
            .arg("--method=virtio-serial")
            .arg(format!("--path={AGENT_PORT}"))
            .arg("--pidfile=/run/xtask/qemu-ga.pid")
            .arg("--statedir=/run/xtask")
            .spawn();
        // The old root goes away beside qemu-ga's start: the overlay keeps what it needs of
        // it, the rest (the kernel's /dev, the tmpfs under the overlay) is nobody's.
        if !detached {
            let o = c("/oldroot");
            // SAFETY: a live NUL-terminated path.
            unsafe { umount2(o.as_ptr(), MNT_DETACH) };
            detached = true;
        }
        let pid = match agent {
            Ok(child) => child.id() as c_int,
            Err(e) => die(&format!("cannot start qemu-ga: {e}")),
        };
        // PID 1 reaps every orphan; the agent's end starts it again.
        let status = loop {
            let mut status: c_int = 0;
            // SAFETY: a live out-pointer.
            let got = unsafe { waitpid(-1, &mut status, 0) };
            if got == pid || got < 0 {
                break status;
            }
        };
        say(&format!("qemu-ga exited ({}), restarting", (status >> 8) & 0xff));
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_boot_is_ours_and_anything_else_the_scripts() {
        let ours = "console=ttyS0 root=rootfs ro init=/usr/local/sbin/xtask-init-fast \
                    xtask.init=fast printk.time=1";
        assert_eq!(asked(ours), Asked::default());
        let share = format!("{ours} xtask.share=1");
        assert_eq!(
            asked(&share),
            Asked {
                share: true,
                other: false
            }
        );
        for other in ["xtask.rw=1", "xtask.shell=1", "xtask.init=systemd"] {
            assert!(asked(&format!("{ours} {other}")).other, "{other}");
        }
        assert!(!asked(&format!("{ours} xtask.rw=0")).other);
    }
}
