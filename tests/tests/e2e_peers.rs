//! `deps --peers`, the set-up path of `bench boot --peers`, proven without this machine's
//! state: stand-in `dpkg-query`, `apt-get`, `python3` (its venv's pip) and `cargo` first on PATH, a clean HOME, a fresh
//! state dir.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use tests::{code, fixture, run, stderr, stdout};

fn script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A dir of stand-ins that log each call to `calls`: `dpkg-query` (udev and qemu-guest-agent are not
/// installed until `apt-get install` ran), `python3 -m venv DIR` makes DIR/bin/pip,
/// which for `install … virtme-ng` makes DIR/bin/vng (or fails, when `pip_fails`); `cargo
/// install vmtest … --root DIR` makes DIR/bin/vmtest.
fn stand_ins(pip_fails: bool) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let calls = d.path().join("calls");
    let pip_end = if pip_fails {
        "echo \"ERROR: No matching distribution found for virtme-ng\" >&2; exit 1"
    } else {
        "touch \"$bin/vng\"; chmod +x \"$bin/vng\""
    };
    script(
        &d.path().join("python3"),
        &format!(
            "#!/bin/sh\necho \"python3 $*\" >>{calls}\n[ \"$1 $2\" = '-m venv' ] || exit 2\n\
             bin=$3/bin; mkdir -p \"$bin\"\n\
             printf '#!/bin/sh\\necho \"pip $*\" >>{calls}\\nbin=%s\\n{pip_end}\\n' \"$bin\" >\"$bin/pip\"\n\
             chmod +x \"$bin/pip\"\n",
            calls = calls.display(),
        ),
    );
    // dpkg says udev is missing until the stand-in apt-get has installed it.
    let udev = d.path().join("udev-installed");
    script(
        &d.path().join("dpkg-query"),
        &format!(
            "#!/bin/sh\nfor last; do :; done\necho \"dpkg-query $last\" >>{calls}\n\
             [ -e {udev} ] && echo 'udev ii ' && echo 'qemu-guest-agent ii '\nexit 0\n",
            calls = calls.display(),
            udev = udev.display(),
        ),
    );
    script(
        &d.path().join("apt-get"),
        &format!(
            "#!/bin/sh\necho \"apt-get $*\" >>{calls}\n[ \"$1\" = update ] || touch {udev}\n",
            calls = calls.display(),
            udev = udev.display(),
        ),
    );
    script(
        &d.path().join("cargo"),
        &format!(
            "#!/bin/sh\necho \"cargo $*\" >>{calls}\nfor last; do :; done\n\
             mkdir -p \"$last/bin\" && touch \"$last/bin/vmtest\" && chmod +x \"$last/bin/vmtest\"\n",
            calls = calls.display()
        ),
    );
    d
}

fn deps_peers(bin: &Path, state: &Path, stand_ins: &Path, home: &Path) -> Command {
    let mut c = Command::new(bin);
    c.arg("--state-dir").arg(state).args(["deps", "--peers"]);
    let path = format!(
        "{}:{}",
        stand_ins.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    c.env("PATH", path)
        .env("HOME", home)
        .env_remove("CARGO_HOME");
    c
}

fn calls(d: &Path) -> Vec<String> {
    std::fs::read_to_string(d.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn deps_peers_installs_virtme_ng_in_a_venv_and_vmtest_then_nothing_more() {
    let f = fixture();
    let (tools, home, state) = (
        stand_ins(false),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let start = std::time::Instant::now();
    let out = run(&mut deps_peers(
        &f.bin,
        state.path(),
        tools.path(),
        home.path(),
    ));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(start.elapsed().as_secs() < 30, "took {:?}", start.elapsed());
    let peers = state.path().join("peers");
    let venv = peers.join("virtme-ng");
    assert!(stdout(&out).contains("peers installed"), "{}", stdout(&out));
    let dpkg = "dpkg-query qemu-guest-agent".to_string();
    assert_eq!(
        calls(tools.path()),
        [
            dpkg.clone(),
            "apt-get update".to_string(),
            "apt-get install -y --no-install-recommends udev qemu-guest-agent".to_string(),
            format!("python3 -m venv {}", venv.display()),
            "pip install --disable-pip-version-check virtme-ng".to_string(),
            format!(
                "cargo install vmtest --locked --root {}",
                peers.join("vmtest").display()
            ),
        ]
    );
    assert!(venv.join("bin/vng").is_file());
    assert!(peers.join("vmtest/bin/vmtest").is_file());
    // Installed: a second run asks no registry.
    let out = run(&mut deps_peers(
        &f.bin,
        state.path(),
        tools.path(),
        home.path(),
    ));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        calls(tools.path())[6..],
        [dpkg],
        "{:?}",
        calls(tools.path())
    );
}

#[test]
fn deps_peers_with_a_failing_pip_is_a_setup_fault_naming_pypi() {
    let f = fixture();
    let (tools, home, state) = (
        stand_ins(true),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let out = run(&mut deps_peers(
        &f.bin,
        state.path(),
        tools.path(),
        home.path(),
    ));
    assert_eq!(code(&out), 128, "{}", stderr(&out));
    let err = stderr(&out);
    // pip's own words, then ours in one line.
    assert!(err.contains("ERROR: No matching distribution"), "{err}");
    let last = err.trim().lines().last().unwrap_or("");
    assert!(
        last.starts_with("error: pip install virtme-ng failed: is PyPI reachable?"),
        "{err}"
    );
    assert!(!state.path().join("peers/virtme-ng/bin/vng").exists());
}
