//! What a build runs, as data: make's and dracut's argv, the environment that makes the image
//! reproducible, and the facts read from a .config. Pure; [`super::runner`] executes it.

use serde::{Deserialize, Serialize};

/// When a build makes an initramfs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InitramfsMode {
    /// An initramfs only when booting needs modules
    Auto,
    /// Always make one with dracut
    Dracut,
    /// Never make one
    None,
}

use crate::arch::Arch;

/// Where the sources and the build dir are, as the build commands see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub src: String,
    pub build: String,
}

impl Paths {
    /// In the container the tree is always at /src and the build dir at /build, so the image
    /// (debug info, `__FILE__`) does not depend on where the tree sits on the host.
    pub fn container() -> Paths {
        Paths {
            src: "/src".into(),
            build: "/build".into(),
        }
    }

    /// `--host`: the real paths.
    pub fn host(src: &std::path::Path, build: &std::path::Path) -> Paths {
        Paths {
            src: src.display().to_string(),
            build: build.display().to_string(),
        }
    }

    /// Where `modules_install` and dracut put their output, inside the build dir (the rootfs
    /// is read-only and needs no mount point for it); emptied before every build.
    pub fn staging(&self) -> String {
        format!("{}/{STAGING}", self.build)
    }
}

/// The staging subdirectory of the build dir.
pub const STAGING: &str = ".xtask-staging";
/// Who and where the image says it was built by (`uname -v`), the same for everyone.
pub const BUILD_USER: &str = "xtask";
pub const BUILD_HOST: &str = "xtask";

/// What one build makes, decided before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The architecture built for: its image target, and `ARCH=`/`CROSS_COMPILE=` when it is
    /// not the host's.
    pub arch: &'static Arch,
    pub paths: Paths,
    pub jobs: u32,
    /// The ccache directory as the build sees it; None builds without ccache.
    pub ccache_dir: Option<String>,
    /// KBUILD_BUILD_TIMESTAMP: the commit's date, so a commit always gives the same image.
    pub timestamp: String,
    pub initramfs: InitramfsMode,
}

impl Plan {
    /// `make` with the source and build dirs; `-j` and ccache do not change the image.
    pub fn make(&self, targets: &[&str]) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "make".into(),
            "-C".into(),
            self.paths.src.clone(),
            format!("O={}", self.paths.build),
            format!("-j{}", self.jobs),
        ];
        a.extend(self.arch.make_vars());
        if self.ccache_dir.is_some() {
            a.push(format!("CC=ccache {}gcc", self.arch.toolchain_prefix()));
        }
        a.extend(targets.iter().map(|t| t.to_string()));
        a
    }

    /// `make olddefconfig`: fills in what the input config leaves unset, as the tree defines it.
    pub fn olddefconfig(&self) -> Vec<String> {
        self.make(&["olddefconfig"])
    }

    /// The image, plus the modules when the config has any.
    pub fn build(&self, modules: bool) -> Vec<String> {
        if modules {
            self.make(&[self.arch.image_target, "modules"])
        } else {
            self.make(&[self.arch.image_target])
        }
    }

    pub fn modules_install(&self) -> Vec<String> {
        let mut a = self.make(&["modules_install"]);
        a.push(format!("INSTALL_MOD_PATH={}/modules", self.paths.staging()));
        a
    }

    /// dracut over the staged modules, for kernels that need a module to mount the root.
    pub fn dracut(&self, kernelrelease: &str, modules: bool) -> Vec<String> {
        let staging = self.paths.staging();
        let mut a: Vec<String> = vec![
            "dracut".into(),
            "--quiet".into(),
            "--force".into(),
            // A generic image: the build container is not the machine that boots it.
            "--no-hostonly".into(),
            "--reproducible".into(),
            // The rootfs is read-only; the container's /tmp is a private tmpfs.
            "--tmpdir".into(),
            "/tmp".into(),
            "--kver".into(),
            kernelrelease.into(),
        ];
        if modules {
            a.extend([
                "--kmoddir".into(),
                format!("{staging}/modules/lib/modules/{kernelrelease}"),
                // What the VM's virtiofs root needs before it is mounted.
                "--add-drivers".into(),
                "virtio_pci virtiofs fuse".into(),
            ]);
        } else {
            // Everything is built in: an initramfs of userspace only.
            a.push("--no-kernel".into());
        }
        a.push(format!("{staging}/initramfs.img"));
        a
    }

    /// The environment every build command gets.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut e = vec![
            // Reproducible images: no build time, user, host or build counter of our own.
            ("KBUILD_BUILD_TIMESTAMP".into(), self.timestamp.clone()),
            ("KBUILD_BUILD_USER".into(), BUILD_USER.into()),
            ("KBUILD_BUILD_HOST".into(), BUILD_HOST.into()),
            ("KBUILD_BUILD_VERSION".into(), "1".into()),
            // Messages as the log parser expects them, whatever the user's locale.
            ("LC_ALL".into(), "C".into()),
        ];
        if let Some(dir) = &self.ccache_dir {
            e.push(("CCACHE_DIR".into(), dir.clone()));
            // The same object whatever the path of the tree: hits across worktrees.
            e.push(("CCACHE_BASEDIR".into(), self.paths.src.clone()));
        }
        e
    }
}

/// The make arguments and environment that change the image, for the cache key: targets,
/// the reproducibility settings, and the initramfs choice. `-j` and ccache are left out.
pub fn key_args(arch: &Arch, timestamp: &str, initramfs: InitramfsMode) -> Vec<String> {
    vec![
        format!("ARCH={}", arch.name),
        "olddefconfig".into(),
        arch.image_target.into(),
        "modules".into(),
        format!("KBUILD_BUILD_TIMESTAMP={timestamp}"),
        format!("KBUILD_BUILD_USER={BUILD_USER}"),
        format!("KBUILD_BUILD_HOST={BUILD_HOST}"),
        "KBUILD_BUILD_VERSION=1".into(),
        format!("initramfs={}", initramfs_name(initramfs)),
    ]
}

pub fn initramfs_name(m: InitramfsMode) -> &'static str {
    match m {
        InitramfsMode::Auto => "auto",
        InitramfsMode::Dracut => "dracut",
        InitramfsMode::None => "none",
    }
}

/// Options the VM needs before its virtiofs root is mounted: built as modules (`=m`), they
/// must come from an initramfs.
const BOOT_OPTIONS: &[&str] = &[
    "CONFIG_VIRTIO",
    "CONFIG_VIRTIO_PCI",
    "CONFIG_VIRTIO_FS",
    "CONFIG_FUSE_FS",
];

/// What a final .config says about the artifacts a build must make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigFacts {
    /// CONFIG_MODULES=y: build and install modules.
    pub modules: bool,
    /// A boot option is a module, so booting needs an initramfs.
    pub boot_needs_modules: bool,
}

impl ConfigFacts {
    pub fn parse(config: &str) -> ConfigFacts {
        let value = |name: &str| {
            config.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('='))
                    .map(str::trim)
            })
        };
        ConfigFacts {
            modules: value("CONFIG_MODULES") == Some("y"),
            boot_needs_modules: BOOT_OPTIONS.iter().any(|o| value(o) == Some("m")),
        }
    }

    /// Whether to make an initramfs: always with `dracut`, never with `none`, and with
    /// `auto` only when booting needs modules.
    pub fn wants_initramfs(&self, mode: InitramfsMode) -> bool {
        match mode {
            InitramfsMode::Dracut => true,
            InitramfsMode::None => false,
            InitramfsMode::Auto => self.modules && self.boot_needs_modules,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            arch: crate::arch::HOST,
            paths: Paths::container(),
            jobs: 2,
            ccache_dir: None,
            timestamp: "2023-01-01T00:00:00+00:00".into(),
            initramfs: InitramfsMode::Auto,
        }
    }

    #[test]
    fn make_argv_in_the_container() {
        assert_eq!(
            plan().build(false),
            ["make", "-C", "/src", "O=/build", "-j2", "bzImage"]
        );
        assert_eq!(
            plan().modules_install().last().unwrap(),
            "INSTALL_MOD_PATH=/build/.xtask-staging/modules"
        );
        let p = Plan {
            ccache_dir: Some("/build/.ccache".into()),
            ..plan()
        };
        assert!(p.build(true).contains(&"CC=ccache gcc".to_string()));
        assert!(p
            .build(true)
            .ends_with(&["bzImage".into(), "modules".into()]));
        assert!(p
            .env()
            .contains(&("CCACHE_DIR".into(), "/build/.ccache".into())));
    }

    #[test]
    fn an_arm64_build_is_a_cross_build_of_its_image() {
        let p = Plan {
            arch: &crate::arch::ARM64,
            ccache_dir: Some("/ccache".into()),
            ..plan()
        };
        let argv = p.build(false);
        assert!(argv.contains(&"ARCH=arm64".to_string()), "{argv:?}");
        assert!(argv.contains(&"CROSS_COMPILE=aarch64-linux-gnu-".to_string()));
        // ccache wraps the cross compiler, not the host's.
        assert!(argv.contains(&"CC=ccache aarch64-linux-gnu-gcc".to_string()));
        assert_eq!(argv.last().unwrap(), "Image");
        let x86 = key_args(&crate::arch::X86_64, "t", InitramfsMode::Auto);
        let arm = key_args(&crate::arch::ARM64, "t", InitramfsMode::Auto);
        assert_ne!(x86, arm);
        assert!(arm.contains(&"ARCH=arm64".to_string()));
    }

    #[test]
    fn dracut_uses_the_staged_modules_or_none() {
        let with = plan().dracut("6.1.0", true);
        assert!(with.contains(&"/build/.xtask-staging/modules/lib/modules/6.1.0".to_string()));
        assert_eq!(with.last().unwrap(), "/build/.xtask-staging/initramfs.img");
        let without = plan().dracut("6.1.0", false);
        assert!(without.contains(&"--no-kernel".to_string()));
        assert!(!without.iter().any(|a| a.contains("lib/modules")));
    }

    #[test]
    fn env_is_reproducible() {
        let env = plan().env();
        for k in [
            "KBUILD_BUILD_TIMESTAMP",
            "KBUILD_BUILD_USER",
            "KBUILD_BUILD_HOST",
            "KBUILD_BUILD_VERSION",
        ] {
            assert!(env.iter().any(|(n, _)| n == k), "{k}");
        }
    }

    #[test]
    fn key_args_ignore_jobs_and_ccache_but_not_initramfs() {
        let a = key_args(&crate::arch::X86_64, "t", InitramfsMode::Auto);
        assert!(!a
            .iter()
            .any(|x| x.starts_with("-j") || x.contains("ccache")));
        assert_ne!(
            a,
            key_args(&crate::arch::X86_64, "t", InitramfsMode::Dracut)
        );
        assert_ne!(a, key_args(&crate::arch::X86_64, "t2", InitramfsMode::Auto));
    }

    #[test]
    fn config_facts() {
        let f = ConfigFacts::parse(
            "CONFIG_MODULES=y\nCONFIG_VIRTIO_FS=m\nCONFIG_MODULES_USE_ELF_RELA=y\n",
        );
        assert!(f.modules && f.boot_needs_modules);
        assert!(f.wants_initramfs(InitramfsMode::Auto));
        assert!(!f.wants_initramfs(InitramfsMode::None));
        let f = ConfigFacts::parse(
            "# CONFIG_MODULES is not set\nCONFIG_MODULES_USE_ELF_RELA=y\nCONFIG_VIRTIO_FS=y\n",
        );
        assert!(!f.modules && !f.boot_needs_modules);
        assert!(!f.wants_initramfs(InitramfsMode::Auto));
        assert!(f.wants_initramfs(InitramfsMode::Dracut));
        let f = ConfigFacts::parse("CONFIG_MODULES=y\nCONFIG_VIRTIO_FS=y\nCONFIG_VIRTIO_PCI=y\n");
        assert!(f.modules && !f.boot_needs_modules);
    }
}
