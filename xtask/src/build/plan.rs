//! What a build runs, as data: make's argv and environment (the one function that decides
//! them, [`Make::run`]), the build's steps with when each runs, and the key material taken
//! from those same steps. Pure; [`super::runner`] executes it.

use super::key::CommandKey;
use crate::arch::Arch;
use crate::kconfig::Config;
use crate::options::InitramfsMode;

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

    /// `--host`: the real paths (which then are in the image, and so in the key).
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

/// One command as it runs: its argv and the environment it is given (nothing else: the
/// container starts from an empty environment, and a host command's is cleared but `PATH`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// The words of a command line that cannot change the image, so the key leaves them out:
/// make's job count.
pub fn exempt_arg(word: &str) -> bool {
    word.starts_with("-j")
}

/// The environment variables that cannot change the image: ccache's, which gives the
/// compiler's own output or that output from its cache: the search path that puts its
/// compiler links first, where it keeps its cache, its depend mode, where it logs this
/// build's hits and misses.
pub const EXEMPT_ENV: &[&str] = &["PATH", "CCACHE_DIR", "CCACHE_DEPEND", "CCACHE_STATSLOG"];

/// The directory of ccache's links named after the compilers (`gcc`,
/// `aarch64-linux-gnu-gcc`), which Debian's ccache package keeps for every installed one.
pub const CCACHE_LINKS: &str = "/usr/lib/ccache";

/// The container's search path (systemd-nspawn's default).
pub const CONTAINER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// ccache in front of the compiler, by its links first on the search path: make's command
/// line stays the same with and without it, so Kbuild recompiles nothing when it is turned
/// on or off (`CC=ccache gcc` on the command line would change every object's command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ccache {
    /// Where ccache keeps its cache, as make sees it.
    pub dir: String,
    /// The search path make runs with: [`CCACHE_LINKS`] first, then the usual one.
    pub path: String,
}

impl Ccache {
    /// ccache with its cache in `dir`, before the directories of `path`.
    pub fn new(dir: String, path: &str) -> Ccache {
        Ccache {
            dir,
            path: format!("{CCACHE_LINKS}:{path}"),
        }
    }
}

/// `make` for one source tree and one output dir (`O=`): kbuild with `O=` only reads the
/// sources. Both the build and trim-config run make through this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Make {
    /// The architecture built for: its image target, and `ARCH=`/`CROSS_COMPILE=` when it is
    /// not the host's.
    pub arch: &'static Arch,
    pub paths: Paths,
    /// `-jN`; None leaves make serial (config targets, which take seconds).
    pub jobs: Option<u32>,
    /// ccache in front of the compiler; None builds without it.
    pub ccache: Option<Ccache>,
    /// KBUILD_BUILD_TIMESTAMP in one UTC form (source.rs `utc_timestamp`), so that git's
    /// version or `TZ` change neither the image nor the key; None for config targets.
    pub timestamp: Option<String>,
}

impl Make {
    /// Config targets (tinyconfig, olddefconfig): serial, no ccache, no timestamp.
    pub fn config(arch: &'static Arch, paths: Paths) -> Make {
        Make {
            arch,
            paths,
            jobs: None,
            ccache: None,
            timestamp: None,
        }
    }

    /// `make -C SRC O=BUILD [-jN] [ARCH= CROSS_COMPILE=] [CC=ccache …gcc] TARGETS…`, with its
    /// environment.
    pub fn run(&self, targets: &[&str]) -> Invocation {
        let mut argv: Vec<String> = vec![
            "make".into(),
            "-C".into(),
            self.paths.src.clone(),
            format!("O={}", self.paths.build),
        ];
        if let Some(j) = self.jobs {
            argv.push(format!("-j{j}"));
        }
        argv.extend(self.arch.make_vars());
        argv.extend(targets.iter().map(|t| t.to_string()));
        Invocation {
            argv,
            env: self.env(),
        }
    }

    /// The environment every command of a build gets.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut e = Vec::new();
        if let Some(t) = &self.timestamp {
            e.push(("KBUILD_BUILD_TIMESTAMP".into(), t.clone()));
        }
        e.extend([
            // Reproducible images: no build user, host or build counter of our own.
            ("KBUILD_BUILD_USER".into(), BUILD_USER.into()),
            ("KBUILD_BUILD_HOST".into(), BUILD_HOST.into()),
            ("KBUILD_BUILD_VERSION".into(), "1".into()),
            // Messages as the log parser expects them, whatever the user's locale.
            ("LC_ALL".into(), "C".into()),
        ]);
        if let Some(Ccache { dir, path }) = &self.ccache {
            // No CCACHE_BASEDIR: it rewrites the compiler's absolute paths to relative ones,
            // so that the kernel's -fmacro-prefix-map no longer applies and __FILE__ (a
            // WARNING's place) becomes `../src/init/main.c`: another image. In the container
            // the paths are /src and /build in every worktree, so hits happen without it.
            e.push(("PATH".into(), path.clone()));
            e.push(("CCACHE_DIR".into(), dir.clone()));
            // Depend mode: a miss hashes the headers the compiler's own -MMD output names
            // instead of running the preprocessor first (Kbuild passes -Wp,-MMD for every
            // object).
            e.push(("CCACHE_DEPEND".into(), "1".into()));
            e.push((
                "CCACHE_STATSLOG".into(),
                format!("{}/{}", self.paths.staging(), super::ccache::STATS_LOG),
            ));
        }
        e
    }
}

/// When a step runs, decided by the final `.config` (which olddefconfig writes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    /// CONFIG_MODULES=y.
    Modules,
    /// CONFIG_MODULES is not set.
    NoModules,
    /// Modules, and an option the boot needs is one (`--initramfs auto`).
    BootNeedsModules,
}

impl When {
    pub fn holds(self, facts: &ConfigFacts) -> bool {
        match self {
            When::Always => true,
            When::Modules => facts.modules,
            When::NoModules => !facts.modules,
            When::BootNeedsModules => facts.modules && facts.boot_needs_modules,
        }
    }

    fn name(self) -> &'static str {
        match self {
            When::Always => "always",
            When::Modules => "modules",
            When::NoModules => "no-modules",
            When::BootNeedsModules => "boot-needs-modules",
        }
    }
}

/// Stands for the kernel's release (`include/config/kernel.release`) in a step's argv until
/// make has written it: [`Invocation::with_release`].
pub const RELEASE: &str = "{kernelrelease}";

impl Invocation {
    /// The command with [`RELEASE`] replaced by `release`.
    pub fn with_release(&self, release: &str) -> Invocation {
        Invocation {
            argv: self
                .argv
                .iter()
                .map(|a| a.replace(RELEASE, release))
                .collect(),
            env: self.env.clone(),
        }
    }
}

/// The label of the step that makes the initramfs.
pub const DRACUT: &str = "dracut";

/// One step of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub label: &'static str,
    pub when: When,
    pub run: Invocation,
    /// A failure is the kernel's (cached, 125 for a bisect); false for our own tools
    /// (dracut), whose failure is a setup problem and never cached.
    pub kernels: bool,
}

impl Step {
    /// What of this step goes into the cache key: everything it runs with, but the exempt
    /// words and variables.
    pub fn key(&self) -> CommandKey {
        CommandKey {
            step: self.label.to_string(),
            when: self.when.name().to_string(),
            argv: self
                .run
                .argv
                .iter()
                .filter(|a| !exempt_arg(a))
                .cloned()
                .collect(),
            env: self
                .run
                .env
                .iter()
                .filter(|(k, _)| !EXEMPT_ENV.contains(&k.as_str()))
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        }
    }
}

/// What one build makes, decided before it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub make: Make,
    pub initramfs: InitramfsMode,
}

/// A build's steps: olddefconfig first, whose `.config` then decides which of the rest run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steps {
    pub configure: Step,
    pub then: Vec<Step>,
}

impl Plan {
    /// Every step the build may run, in order.
    pub fn steps(&self) -> Steps {
        let image = self.make.arch.image_target;
        let kernel = |label, when, run| Step {
            label,
            when,
            run,
            kernels: true,
        };
        let mut install = self.make.run(&["modules_install"]);
        install.argv.push(format!(
            "INSTALL_MOD_PATH={}/modules",
            self.make.paths.staging()
        ));
        let mut then = vec![
            kernel("make", When::NoModules, self.make.run(&[image])),
            kernel("make", When::Modules, self.make.run(&[image, "modules"])),
            kernel("modules_install", When::Modules, install),
        ];
        let dracut = |when, modules| Step {
            label: DRACUT,
            when,
            run: self.dracut(modules),
            kernels: false,
        };
        match self.initramfs {
            InitramfsMode::None => {}
            InitramfsMode::Dracut => {
                then.push(dracut(When::Modules, true));
                then.push(dracut(When::NoModules, false));
            }
            InitramfsMode::Auto => then.push(dracut(When::BootNeedsModules, true)),
        }
        Steps {
            // Fills in what the input config leaves unset, as the tree defines it.
            configure: kernel(
                "olddefconfig",
                When::Always,
                self.make.run(&["olddefconfig"]),
            ),
            then,
        }
    }

    /// The key material: every step's [`Step::key`].
    pub fn key(&self) -> Vec<CommandKey> {
        let steps = self.steps();
        std::iter::once(&steps.configure)
            .chain(&steps.then)
            .map(Step::key)
            .collect()
    }

    /// dracut over the staged modules, for kernels that need a module to mount the root.
    fn dracut(&self, modules: bool) -> Invocation {
        let staging = self.make.paths.staging();
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
            RELEASE.into(),
        ];
        if modules {
            a.extend([
                "--kmoddir".into(),
                format!("{staging}/modules/lib/modules/{RELEASE}"),
                // What the VM's virtiofs root needs before it is mounted.
                "--add-drivers".into(),
                "virtio_pci virtiofs fuse".into(),
            ]);
        } else {
            // Everything is built in: an initramfs of userspace only.
            a.push("--no-kernel".into());
        }
        a.push(format!("{staging}/initramfs.img"));
        Invocation {
            argv: a,
            env: self.make.env(),
        }
    }
}

/// Options the VM needs before its virtiofs root is mounted: built as modules (`=m`), they
/// must come from an initramfs.
const BOOT_OPTIONS: &[&str] = &["VIRTIO", "VIRTIO_PCI", "VIRTIO_FS", "FUSE_FS"];

/// What a final .config says about the steps a build runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigFacts {
    /// CONFIG_MODULES=y: build and install modules.
    pub modules: bool,
    /// A boot option is a module, so booting needs an initramfs.
    pub boot_needs_modules: bool,
    /// CONFIG_PVH=y (x86): the entry keeps the vmlinux, which QEMU enters through PVH
    /// (`cache::PVH_IMAGE`).
    pub pvh_image: bool,
}

impl ConfigFacts {
    pub fn of(config: &Config) -> ConfigFacts {
        ConfigFacts {
            modules: config.value("MODULES") == "y",
            boot_needs_modules: BOOT_OPTIONS.iter().any(|o| config.value(o) == "m"),
            pvh_image: config.value("PVH") == "y",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::X86_64;
    use crate::build::key::{sha256_hex, KeyInputs};

    fn plan() -> Plan {
        Plan {
            make: Make {
                arch: &X86_64,
                paths: Paths::container(),
                jobs: Some(2),
                ccache: None,
                timestamp: Some("2023-01-01T00:00:00Z".into()),
            },
            initramfs: InitramfsMode::Auto,
        }
    }

    fn facts(text: &str) -> ConfigFacts {
        ConfigFacts::of(&Config::parse(text).unwrap())
    }

    /// The steps that run for a final config, release filled in.
    fn run(plan: &Plan, facts: ConfigFacts) -> Vec<Vec<String>> {
        let steps = plan.steps();
        std::iter::once(&steps.configure)
            .chain(steps.then.iter().filter(|s| s.when.holds(&facts)))
            .map(|s| s.run.with_release("6.1.0").argv)
            .collect()
    }

    fn inputs(commands: Vec<CommandKey>) -> KeyInputs {
        KeyInputs {
            tree_id: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".into(),
            dirty: None,
            config: sha256_hex([b"CONFIG_64BIT=y\n".as_slice()]),
            toolchain: "gcc (Debian 12.2.0-14) 12.2.0; GNU ld 2.40".into(),
            arch: X86_64.name.into(),
            commands,
        }
    }

    #[test]
    fn make_argv_in_the_container() {
        let no_modules = facts("# CONFIG_MODULES is not set\n");
        let argv = run(&plan(), no_modules);
        assert_eq!(argv.len(), 2, "{argv:?}");
        assert_eq!(
            argv[0],
            ["make", "-C", "/src", "O=/build", "-j2", "olddefconfig"]
        );
        assert_eq!(
            argv[1],
            ["make", "-C", "/src", "O=/build", "-j2", "bzImage"]
        );
        let modules = facts("CONFIG_MODULES=y\nCONFIG_VIRTIO_FS=y\n");
        let argv = run(&plan(), modules);
        assert!(argv[1].ends_with(&["bzImage".into(), "modules".into()]));
        assert_eq!(
            argv[2].last().unwrap(),
            "INSTALL_MOD_PATH=/build/.xtask-staging/modules"
        );
        assert_eq!(argv.len(), 3, "no initramfs when the boot needs no module");
        let mut p = plan();
        p.make.ccache = Some(Ccache::new("/build/.ccache".into(), CONTAINER_PATH));
        let inv = &p.steps().then[1].run;
        // ccache by its links first on the search path: make's command line is the same.
        assert_eq!(inv.argv, plan().steps().then[1].run.argv);
        assert!(inv
            .env
            .contains(&("CCACHE_DIR".into(), "/build/.ccache".into())));
        assert!(inv.env.contains(&("CCACHE_DEPEND".into(), "1".into())));
        assert!(inv.env.contains(&(
            "PATH".into(),
            "/usr/lib/ccache:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        )));
        // Config targets: serial, no timestamp.
        let c = Make::config(&X86_64, Paths::container()).run(&["tinyconfig"]);
        assert_eq!(c.argv, ["make", "-C", "/src", "O=/build", "tinyconfig"]);
        assert!(!c.env.iter().any(|(k, _)| k == "KBUILD_BUILD_TIMESTAMP"));
    }

    #[test]
    fn an_arm64_build_is_a_cross_build_of_its_image() {
        let mut p = plan();
        p.make.arch = &crate::arch::ARM64;
        p.make.ccache = Some(Ccache::new("/ccache".into(), CONTAINER_PATH));
        let argv = run(&p, facts("# CONFIG_MODULES is not set\n"));
        let make = &argv[1];
        assert!(make.contains(&"ARCH=arm64".to_string()), "{make:?}");
        // The cross compiler is found through ccache's links as the host's is: by name.
        assert!(make.contains(&"CROSS_COMPILE=aarch64-linux-gnu-".to_string()));
        assert!(!make.iter().any(|w| w.starts_with("CC=")), "{make:?}");
        assert_eq!(make.last().unwrap(), "Image");
        // The arch is in the key through make's words, and on its own.
        p.make.ccache = None;
        assert_ne!(p.key(), plan().key());
        assert!(p.key()[0].argv.contains(&"ARCH=arm64".to_string()));
    }

    #[test]
    fn dracut_runs_as_the_initramfs_mode_and_the_config_say() {
        let boot_module = facts("CONFIG_MODULES=y\nCONFIG_VIRTIO_FS=m\n");
        let argv = run(&plan(), boot_module);
        let dracut = argv.last().unwrap();
        assert_eq!(dracut[0], "dracut");
        assert!(dracut.contains(&"/build/.xtask-staging/modules/lib/modules/6.1.0".to_string()));
        assert!(dracut.contains(&"6.1.0".to_string()));
        assert_eq!(
            dracut.last().unwrap(),
            "/build/.xtask-staging/initramfs.img"
        );
        let p = Plan {
            initramfs: InitramfsMode::Dracut,
            ..plan()
        };
        let argv = run(&p, facts("# CONFIG_MODULES is not set\n"));
        let dracut = argv.last().unwrap();
        assert!(dracut.contains(&"--no-kernel".to_string()));
        assert!(!dracut.iter().any(|a| a.contains("lib/modules")));
        let p = Plan {
            initramfs: InitramfsMode::None,
            ..plan()
        };
        assert!(!run(&p, boot_module).iter().any(|a| a[0] == "dracut"));
    }

    #[test]
    fn env_is_reproducible() {
        let env = plan().make.env();
        for (k, v) in [
            ("KBUILD_BUILD_TIMESTAMP", "2023-01-01T00:00:00Z"),
            ("KBUILD_BUILD_USER", BUILD_USER),
            ("KBUILD_BUILD_HOST", BUILD_HOST),
            ("KBUILD_BUILD_VERSION", "1"),
            ("LC_ALL", "C"),
        ] {
            assert!(env.contains(&(k.into(), v.into())), "{k}");
        }
    }

    /// Every word and variable a step runs with is in the key, but the exempt ones: each
    /// changed in turn, and one added, changes the key.
    #[test]
    fn every_make_variable_and_env_var_changes_the_key() {
        let p = Plan {
            initramfs: InitramfsMode::Dracut,
            ..plan()
        };
        let steps = p.steps();
        let all: Vec<Step> = std::iter::once(steps.configure).chain(steps.then).collect();
        let key_of = |steps: &[Step]| inputs(steps.iter().map(Step::key).collect()).key();
        let base = key_of(&all);
        assert_eq!(base, inputs(p.key()).key());
        let mut tried = 0;
        for i in 0..all.len() {
            for w in 0..all[i].run.argv.len() {
                let mut changed = all.clone();
                changed[i].run.argv[w].push('x');
                if exempt_arg(&all[i].run.argv[w]) {
                    // The exempt list: -j (the next test).
                    assert_eq!(key_of(&changed), base);
                    continue;
                }
                tried += 1;
                assert_ne!(key_of(&changed), base, "{:?} word {w}", all[i].run.argv);
            }
            for v in 0..all[i].run.env.len() {
                let mut changed = all.clone();
                changed[i].run.env[v].1.push('x');
                tried += 1;
                assert_ne!(key_of(&changed), base, "{:?}", all[i].run.env[v]);
            }
            let mut added = all.clone();
            added[i].run.env.push(("KCFLAGS".into(), "-O3".into()));
            assert_ne!(key_of(&added), base);
            let mut added = all.clone();
            added[i].run.argv.push("W=1".into());
            assert_ne!(key_of(&added), base);
            let mut when = all.clone();
            when[i].when = When::Always;
            if all[i].when != When::Always {
                assert_ne!(key_of(&when), base, "{}", all[i].label);
            }
        }
        assert!(tried > 60, "{tried}");
        // And through the plan: the timestamp, the initramfs mode.
        let mut t = p.clone();
        t.make.timestamp = Some("2023-01-01T00:00:01Z".into());
        assert_ne!(inputs(t.key()).key(), base);
        for mode in [InitramfsMode::Auto, InitramfsMode::None] {
            let m = Plan {
                initramfs: mode,
                ..p.clone()
            };
            assert_ne!(inputs(m.key()).key(), base, "{mode:?}");
        }
    }

    /// The exempt list, and only it, leaves the key alone: `-j` and ccache.
    #[test]
    fn jobs_and_ccache_leave_the_key_alone() {
        let base = inputs(plan().key()).key();
        let mut p = plan();
        p.make.jobs = Some(64);
        assert_eq!(inputs(p.key()).key(), base);
        p.make.jobs = None;
        assert_eq!(inputs(p.key()).key(), base);
        p.make.ccache = Some(Ccache::new("/ccache".into(), CONTAINER_PATH));
        assert_eq!(inputs(p.key()).key(), base);
        // ccache added no words, and variables that are all exempt.
        let with = p.steps().then[1].run.clone();
        let mut no_ccache = p.clone();
        no_ccache.make.ccache = None;
        let without = no_ccache.steps().then[1].run.clone();
        assert_eq!(with.argv, without.argv);
        let added_env: Vec<&str> = with
            .env
            .iter()
            .filter(|e| !without.env.contains(e))
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(added_env, EXEMPT_ENV);
        // Whatever their values.
        for i in 0..with.env.len() {
            let mut changed = p.steps().then[1].clone();
            changed.run.env[i].1.push('x');
            let (name, _) = &with.env[i];
            let same = changed.key() == p.steps().then[1].key();
            assert_eq!(same, EXEMPT_ENV.contains(&name.as_str()), "{name}");
        }
        assert!(exempt_arg("-j2") && !exempt_arg("bzImage") && !exempt_arg("CC=clang"));
        assert!(!exempt_arg("CC=ccache gcc"));
    }

    #[test]
    fn config_facts() {
        let f = facts("CONFIG_MODULES=y\nCONFIG_VIRTIO_FS=m\nCONFIG_MODULES_USE_ELF_RELA=y\n");
        assert!(f.modules && f.boot_needs_modules);
        assert!(When::BootNeedsModules.holds(&f));
        let f = facts(
            "# CONFIG_MODULES is not set\nCONFIG_MODULES_USE_ELF_RELA=y\nCONFIG_VIRTIO_FS=y\n",
        );
        assert!(!f.modules && !f.boot_needs_modules);
        assert!(When::NoModules.holds(&f) && !When::Modules.holds(&f));
        let f = facts("CONFIG_MODULES=y\nCONFIG_VIRTIO_FS=y\nCONFIG_VIRTIO_PCI=y\n");
        assert!(f.modules && !f.boot_needs_modules);
        assert!(!When::BootNeedsModules.holds(&f));
        assert!(!f.pvh_image);
        assert!(facts("CONFIG_PVH=y\n").pvh_image);
        assert!(!facts("# CONFIG_PVH is not set\nCONFIG_PVH_X=y\n").pvh_image);
    }
}
