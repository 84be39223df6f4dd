//! The compiled fast-boot init (rootfs/guest-init/xtask-init-fast.rs): which rustc compiles
//! it, with what flags, where in the host architecture's root it goes, and the list of files
//! it reads ahead as it starts.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The source, in the recipe folder ([`super::recipe::GUEST_INIT`]).
pub const SOURCE: &str = "guest-init/xtask-init-fast.rs";

/// Where it is installed in the tree (vm::spec::FAST_INIT is the same path in the guest).
pub const INSTALLED: &str = "usr/local/sbin/xtask-init-fast";

/// The files the init reads into the page cache as it starts, one path a line (the init's
/// PREFETCH_LIST is the same path in the guest).
pub const PREFETCH_LIST: &str = "usr/local/lib/xtask/prefetch";

/// The programs a fast boot starts before the command runs: the guest agent, and the shell
/// that wraps the command (vm::command).
pub const PREFETCHED: [&str; 2] = ["/usr/sbin/qemu-ga", "/bin/sh"];

/// The prefetch list from `ldd`'s output for [`PREFETCHED`]: each program, its loader and the
/// loader's cache, then its libraries in the order ldd gives them; each path once. Libraries
/// ldd did not find, and the vDSO (no file), are left out.
pub fn prefetch_list(ldd: &str) -> String {
    let mut order: Vec<&str> = Vec::new();
    let mut libs: Vec<&str> = Vec::new();
    for line in ldd.lines() {
        if let Some(program) = line.strip_suffix(':').filter(|l| l.starts_with('/')) {
            order.append(&mut libs);
            order.push(program);
            continue;
        }
        let entry = line.trim();
        let path = entry.split_once(" => ").map_or(entry, |(_, p)| p);
        let path = path.split(" (").next().unwrap_or_default();
        match (path.starts_with('/'), entry.starts_with('/')) {
            (false, _) => {}
            // The loader, which ldd lists among the libraries: it runs first, reading its cache.
            (true, true) => order.extend([path, "/etc/ld.so.cache"]),
            (true, false) => libs.push(path),
        }
    }
    order.append(&mut libs);
    let mut seen = std::collections::HashSet::new();
    order
        .into_iter()
        .filter(|p| seen.insert(*p))
        .map(|p| format!("{p}\n"))
        .collect()
}

/// The rustc to compile with: `$RUSTC`, the one beside `$CARGO` (the cargo that runs
/// `cargo xtask`), then the search path and `$CARGO_HOME/bin` (default `~/.cargo/bin`).
/// None when there is none: the guest then boots the shell init in every case.
pub fn rustc(env: &dyn Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let named = env("RUSTC").map(PathBuf::from);
    let beside_cargo = env("CARGO").and_then(|c| Some(Path::new(&c).parent()?.join("rustc")));
    let on_path = env("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("rustc"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let cargo_home = env("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|h| h.join("bin/rustc"));
    named
        .into_iter()
        .chain(beside_cargo)
        .chain(on_path)
        .chain(cargo_home)
        .find(|p| p.is_file())
}

/// rustc's arguments: optimised, statically linked (no loader, no shared libraries to map
/// under TCG), no unwinding and no symbols, for the host's architecture (the guest's).
pub fn rustc_args(source: &Path, out: &Path) -> Vec<OsString> {
    let mut a: Vec<OsString> = [
        "--edition=2021",
        "--crate-name=xtask_init_fast",
        "-O",
        "-C",
        "panic=abort",
        "-C",
        "target-feature=+crt-static",
        "-C",
        "strip=symbols",
        "-o",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    a.push(out.into());
    a.push(source.into());
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefetch_list_has_each_program_then_its_loader_then_its_libraries_once() {
        let ldd = include_str!("test_data/ldd/bookworm-amd64-qemu-ga-sh.txt");
        let list = prefetch_list(ldd);
        let lib = |l: &str| format!("/lib/x86_64-linux-gnu/{l}");
        let mut want = vec![
            "/usr/sbin/qemu-ga".to_string(),
            "/lib64/ld-linux-x86-64.so.2".to_string(),
            "/etc/ld.so.cache".to_string(),
        ];
        want.extend(
            [
                "libudev.so.1",
                "libnuma.so.1",
                "liburing.so.2",
                "libglib-2.0.so.0",
                "libgmodule-2.0.so.0",
                "libm.so.6",
                "libc.so.6",
                "libpcre2-8.so.0",
            ]
            .map(lib),
        );
        want.push("/bin/sh".to_string());
        assert_eq!(list.lines().collect::<Vec<_>>(), want);
    }

    #[test]
    fn the_prefetch_list_leaves_out_what_ldd_did_not_find() {
        let ldd = "/usr/sbin/qemu-ga:\n\tlinux-vdso.so.1 (0x00007f1989c57000)\n\
                   \tlibgone.so.1 => not found\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1989710000)\n\
                   /bin/busybox:\n\tnot a dynamic executable\n";
        assert_eq!(
            prefetch_list(ldd),
            "/usr/sbin/qemu-ga\n/lib/x86_64-linux-gnu/libc.so.6\n/bin/busybox\n"
        );
        assert_eq!(prefetch_list(""), "");
    }
    use std::collections::HashMap;

    fn env_of(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> {
        let m: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn file(dir: &Path, rel: &str) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "").unwrap();
        p
    }

    #[test]
    fn rustc_is_found_beside_cargo_before_the_search_path_and_cargo_home_last() {
        let d = tempfile::tempdir().unwrap();
        let toolchain = file(d.path(), "toolchain/bin/rustc");
        let on_path = file(d.path(), "path/rustc");
        let home = file(d.path(), "home/.cargo/bin/rustc");
        let cargo = d.path().join("toolchain/bin/cargo");
        let path = d.path().join("path");
        let h = d.path().join("home");
        let all = env_of(&[("CARGO", &cargo), ("PATH", &path), ("HOME", &h)]);
        assert_eq!(rustc(&all), Some(toolchain.clone()));
        let no_cargo = env_of(&[("PATH", &path), ("HOME", &h)]);
        assert_eq!(rustc(&no_cargo), Some(on_path));
        let home_only = env_of(&[("PATH", d.path()), ("HOME", &h)]);
        assert_eq!(rustc(&home_only), Some(home));
        let named = env_of(&[("RUSTC", &toolchain), ("PATH", &path)]);
        assert_eq!(rustc(&named), Some(toolchain));
        assert_eq!(rustc(&env_of(&[("PATH", d.path())])), None);
    }

    #[test]
    fn it_is_built_static_and_optimised() {
        let a = rustc_args(Path::new("/r/guest-init/x.rs"), Path::new("/t/x"));
        let s: Vec<_> = a.iter().map(|s| s.to_string_lossy()).collect();
        let s = s.join(" ");
        assert!(s.contains("-C target-feature=+crt-static"), "{s}");
        assert!(s.contains("-C panic=abort"), "{s}");
        assert!(s.ends_with("-o /t/x /r/guest-init/x.rs"), "{s}");
    }

    /// The source as it is compiles, and its own tests pass (it is built outside cargo).
    #[test]
    fn the_source_compiles_and_its_tests_pass() {
        let src = crate::settings::workspace_root()
            .join("rootfs")
            .join(SOURCE);
        let Some(rustc) = rustc(&|k| std::env::var_os(k)) else {
            panic!("no rustc found to compile {}", src.display());
        };
        let d = tempfile::tempdir().unwrap();
        let compile = |args: Vec<OsString>| {
            let out = std::process::Command::new(&rustc)
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let bin = d.path().join("init");
        compile(rustc_args(&src, &bin));
        // Not PID 1: it says what it is and exits 2, having mounted nothing.
        let run = std::process::Command::new(&bin).output().unwrap();
        assert_eq!(run.status.code(), Some(2));
        let tests = d.path().join("tests");
        compile(vec![
            "--edition=2021".into(),
            "--test".into(),
            "-o".into(),
            tests.clone().into(),
            src.clone().into(),
        ]);
        let run = std::process::Command::new(&tests).output().unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stdout)
        );
    }
}
