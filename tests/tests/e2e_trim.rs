//! `cargo xtask trim-config` on the fixture tree: the default config has what a VM needs, and
//! asking for an option that does not exist, or one whose dependencies are off, fails clearly.

use tests::{code, fixture, run, stderr};

/// The exit code of an error (a setup problem, not a verdict).
const EXIT_SETUP: i32 = 128;

/// `trim-config ARGS -o <tmp>`: the config it wrote, after asserting it succeeded.
fn trimmed(args: &[&str]) -> String {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("trimmed.config");
    let out = run(f
        .xtask()
        .arg("trim-config")
        .args(args)
        .arg("-o")
        .arg(&out_path));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    std::fs::read_to_string(&out_path).unwrap()
}

fn assert_has(config: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            config.lines().any(|l| l == *line),
            "{line} missing from:\n{config}"
        );
    }
}

#[test]
fn default_config_has_what_the_vm_needs() {
    let config = trimmed(&[]);
    assert_has(
        &config,
        &[
            "CONFIG_VIRTIO_FS=y",
            "CONFIG_SERIAL_8250_CONSOLE=y",
            "CONFIG_VIRTIO_CONSOLE=y",
            "CONFIG_OVERLAY_FS=y",
            "CONFIG_DEVTMPFS=y",
            "CONFIG_CGROUPS=y",
            "# CONFIG_MODULES is not set",
            // What vm.config turns off, selected options included, stays off.
            "# CONFIG_VT is not set",
            "# CONFIG_INPUT is not set",
            "# CONFIG_CPU_FREQ is not set",
            "CONFIG_KERNEL_GZIP=y",
            // The default lane on x86_64 is the fast one: virtio-mmio, no PCI, no ACPI.
            "CONFIG_VIRTIO_MMIO=y",
            "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y",
            "# CONFIG_PCI is not set",
            "# CONFIG_ACPI is not set",
        ],
    );
}

#[test]
fn the_pci_lane_has_pci_and_acpi() {
    let config = trimmed(&["--lane", "pci"]);
    assert_has(
        &config,
        &[
            "CONFIG_VIRTIO_FS=y",
            "CONFIG_PCI=y",
            "CONFIG_VIRTIO_PCI=y",
            "CONFIG_ACPI=y",
            "# CONFIG_MODULES is not set",
        ],
    );
}

#[test]
fn an_undefined_symbol_is_named_before_make() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = run(f
        .xtask()
        .args(["trim-config", "--set", "CONFIG_DOES_NOT_EXIST=y", "-o"])
        .arg(dir.path().join("c")));
    assert_eq!(code(&out), EXIT_SETUP);
    let err = stderr(&out);
    assert!(
        err.contains("CONFIG_DOES_NOT_EXIST is not defined by any Kconfig file in"),
        "{err}"
    );
    assert!(!dir.path().join("c").exists());
}

#[test]
fn an_option_whose_dependencies_are_off_is_explained() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let out = run(f
        .xtask()
        .args(["trim-config", "--set", "CONFIG_KASAN=y", "-o"])
        .arg(dir.path().join("c")));
    assert_eq!(code(&out), EXIT_SETUP);
    let err = stderr(&out);
    assert!(
        err.contains("CONFIG_KASAN: asked y (--set), got n"),
        "{err}"
    );
    // tinyconfig has SLOB, not SLUB: KASAN's second `depends on` shows it.
    assert!(
        err.contains("depends on (SLUB [=n] && SYSFS [=y])"),
        "{err}"
    );
    assert!(err.contains("--allow-dropped"), "{err}");
    assert!(!dir.path().join("c").exists());
}
