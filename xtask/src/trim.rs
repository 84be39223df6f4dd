//! `cargo xtask trim-config`: a base config, then `kconfig/vm.config`, the arch's and the
//! lane's fragments, xtask.toml's and the command line's fragments and `--set`s, then `make
//! olddefconfig`, then a check that every asked-for option kept its value. Deciding is in
//! `kconfig`; this file executes.

use crate::arch::{Arch, Lane};
use crate::build::plan::{Make, Paths};
use crate::build::runner::{Place, Runner};
use crate::cmd;
use crate::ctx::Ctx;
use crate::kconfig::{self, config, verify, Config, Layer, SymbolIndex};
use crate::lock::FileLock;
use crate::settings::{workspace_root, FileTrim, DEFAULT_BUILD_TIMEOUT};
use crate::state::StateDir;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The fragment every trimmed config gets first, relative to the workspace root; the
/// architecture's own ([`Arch::fragment`]) follows it.
pub const VM_FRAGMENT: &str = "kconfig/vm.config";

/// Where the base config comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// A make target that writes `.config`: `tinyconfig`, `defconfig` or `localmodconfig`.
    Target(String),
    /// The tree's own `.config` (`--base olddefconfig`).
    TreeConfig,
    /// A config file.
    File(PathBuf),
}

impl Base {
    /// `tinyconfig`, `defconfig`, `localmodconfig`, `olddefconfig`, else a path (relative
    /// paths against `dir`).
    pub fn parse(s: &str, dir: &Path) -> Base {
        match s {
            "tinyconfig" | "defconfig" | "localmodconfig" => Base::Target(s.to_string()),
            "olddefconfig" => Base::TreeConfig,
            path => Base::File(dir.join(path)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Base::Target(t) => t.clone(),
            Base::TreeConfig => "olddefconfig (the tree's .config)".into(),
            Base::File(p) => p.display().to_string(),
        }
    }
}

/// trim-config's fix for an asked-for option that olddefconfig dropped.
pub const DROPPED_FIX: &str = "fix their dependencies, or pass --allow-dropped";

/// Everything trim-config needs, resolved from the command line over xtask.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrimOptions {
    /// The architecture the config is for; its fragment follows `kconfig/vm.config`.
    pub arch: &'static Arch,
    /// The lane the config is for (default: the arch's first); its fragments follow the arch's.
    pub lane: Lane,
    /// Default: tinyconfig.
    pub base: Base,
    /// Fragment files in merge order: `kconfig/vm.config`, the arch's, the lane's,
    /// xtask.toml's, the command line's.
    pub fragments: Vec<PathBuf>,
    /// `(origin, CONFIG_X=VALUE)` in merge order: xtask.toml's, then the command line's.
    pub sets: Vec<(String, String)>,
    /// Warn instead of failing when an asked-for option does not survive.
    pub allow_dropped: bool,
    /// The fix the error names when one does not: [`DROPPED_FIX`], or the caller's own (a
    /// check has no `--allow-dropped`).
    pub dropped_fix: &'static str,
    /// Run make on the host instead of in the rootfs container.
    pub host: bool,
    /// Default: the arch's trimmed config in the state dir ([`StateDir::trimmed_config_for`]).
    ///
    /// [`StateDir::trimmed_config_for`]: crate::state::StateDir::trimmed_config_for
    pub output: PathBuf,
    /// Say what was written on stderr, not stdout (a check's stdout is its result).
    pub quiet: bool,
}

impl TrimOptions {
    /// xtask.toml's `[trim]` over the defaults: the config for `arch`'s `lane`, written to
    /// that lane's place in `state`; paths in xtask.toml are relative to `workspace`. The
    /// command line's options are laid over these (cli/resolve.rs).
    pub fn from_file(
        file: &FileTrim,
        arch: &'static Arch,
        lane: Lane,
        state: &StateDir,
        workspace: &Path,
    ) -> Result<TrimOptions> {
        let base = match &file.base {
            Some(b) => Base::parse(b, workspace),
            None => Base::Target("tinyconfig".into()),
        };
        let mut fragments = vec![workspace.join(VM_FRAGMENT), workspace.join(arch.fragment)];
        fragments.extend(arch.lane_fragments(lane)?.iter().map(|f| workspace.join(f)));
        fragments.extend(file.fragments.iter().map(|f| workspace.join(f)));
        let sets = file
            .set
            .iter()
            .map(|s| ("xtask.toml [trim] set".to_string(), s.clone()))
            .collect();
        Ok(TrimOptions {
            arch,
            lane,
            base,
            fragments,
            sets,
            allow_dropped: false,
            dropped_fix: DROPPED_FIX,
            host: false,
            output: state.trimmed_config_for_lane(arch, lane),
            quiet: false,
        })
    }

    /// What `cargo xtask trim-config --arch ARCH --lane LANE` with no other option does
    /// (xtask.toml still applies).
    pub fn defaults(ctx: &Ctx, arch: &'static Arch, lane: Lane) -> Result<TrimOptions> {
        TrimOptions::from_file(&ctx.file.trim, arch, lane, &ctx.state, &workspace_root())
    }
}

/// Makes the trimmed config and writes it to `opts.output`; returns that path. Fails, before
/// running make, on a symbol no Kconfig file defines, and, unless `allow_dropped`, when an
/// asked-for option does not keep its value (each explained on stderr).
pub fn trim(ctx: &Ctx, opts: &TrimOptions) -> Result<PathBuf> {
    let tree = ctx.require_tree()?;

    // 1. What is asked, and that every symbol exists: checked before any make.
    let mut layers = read_layers(opts)?;
    let index = read_kconfig(&tree, opts.arch)?;
    let names = layers
        .iter()
        .flat_map(|l| l.settings.iter().map(|s| &s.name));
    let undefined = verify::undefined(names, &index);
    if !undefined.is_empty() {
        let lines: Vec<String> = undefined
            .iter()
            .map(|n| {
                format!(
                    "CONFIG_{n} is not defined by any Kconfig file in {}",
                    tree.display()
                )
            })
            .collect();
        bail!("{}", lines.join("\n"));
    }
    for s in layers.iter_mut().flat_map(|l| l.settings.iter_mut()) {
        s.value = verify::normalize(&s.value, index.kind(&s.name));
    }

    // 2. The base, made in the scratch build dir (the tree stays clean).
    let scratch = ctx.state.build_dir("trim-config");
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    // Two trims never share the scratch dir; a trim takes seconds, so a long wait is a hang.
    let _lock = FileLock::acquire(
        &scratch.with_extension("lock"),
        "another trim-config",
        Duration::from_secs(10 * 60),
    )?;
    let make =
        KernelMake::new(ctx, &tree, &scratch, opts.arch, opts.host)?.with_status("trim-config");
    let log = ctx.run_dir.join("make.log");
    let dot_config = scratch.join(".config");
    let base = make_base(&opts.base, &make, &tree, &log)?;

    // 3. Merge, saying what overrides what, and let Kconfig resolve the result.
    let merged = kconfig::merge(&base, &layers);
    print_overrides(&merged, ctx.verbose);
    std::fs::write(&dot_config, merged.config.render())
        .with_context(|| format!("writing {}", dot_config.display()))?;
    make.run_to_log(&["olddefconfig"], &log)
        .context("make olddefconfig")?;
    let final_text = std::fs::read_to_string(&dot_config)
        .with_context(|| format!("reading {}", dot_config.display()))?;
    let final_config = Config::parse(&final_text)
        .with_context(|| format!("{} as olddefconfig left it", dot_config.display()))?;

    // 4. Did every asked-for option keep its value?
    let dropped = verify::dropped(&merged.asked, &final_config);
    for d in &dropped {
        eprint!("{}", verify::explain(d, &index, &final_config));
    }
    if !dropped.is_empty() {
        if !opts.allow_dropped {
            bail!(
                "{} asked-for option(s) did not keep their value (above); {}. The config as \
                 olddefconfig left it: {}",
                dropped.len(),
                opts.dropped_fix,
                dot_config.display()
            );
        }
        eprintln!(
            "warning: {} asked-for option(s) did not keep their value (--allow-dropped)",
            dropped.len()
        );
    }

    // 5. Write it and say what it is.
    crate::atomic::write(&opts.output, &final_text)?;
    let say = |line: String| {
        if opts.quiet {
            eprintln!("{line}")
        } else {
            println!("{line}")
        }
    };
    let fragments: Vec<String> = opts.fragments.iter().map(|f| short_path(f)).collect();
    say(format!("arch:      {}", opts.arch.name));
    say(format!("lane:      {}", lane_line(opts.arch, opts.lane)));
    say(format!("base:      {}", opts.base.describe()));
    say(format!("fragments: {}", fragments.join(", ")));
    if !opts.sets.is_empty() {
        let sets: Vec<&str> = opts.sets.iter().map(|(_, s)| s.as_str()).collect();
        say(format!("set:       {}", sets.join(" ")));
    }
    say(format!(
        "options:   {} =y, {} =m ({} asked for, {} dropped)",
        final_config.count("y"),
        final_config.count("m"),
        merged.asked.len(),
        dropped.len()
    ));
    say(format!("wrote:     {}", opts.output.display()));
    Ok(opts.output.clone())
}

/// What trim-config says of the lane: its name and the machine that boots the config.
pub fn lane_line(arch: &Arch, lane: Lane) -> String {
    let what = match lane {
        Lane::Fast => "virtio-mmio, no PCI, no ACPI",
        Lane::Pci => "virtio-pci",
    };
    format!(
        "{} ({what}; boots on {}{})",
        lane.name(),
        arch.machine_for(lane).name(),
        match lane {
            Lane::Pci => format!(" and {} with libvirt", arch.full_machine.name()),
            Lane::Fast => String::new(),
        }
    )
}

/// The fragments, then the `--set`s (one layer per origin), parsed.
fn read_layers(opts: &TrimOptions) -> Result<Vec<Layer>> {
    let mut layers = Vec::new();
    for f in &opts.fragments {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading config fragment {}", f.display()))?;
        let settings =
            config::parse(&text).with_context(|| format!("config fragment {}", f.display()))?;
        layers.push(Layer {
            origin: short_path(f),
            settings,
        });
    }
    for (origin, arg) in &opts.sets {
        let s = config::parse_set(arg)?;
        match layers.last_mut() {
            Some(l) if &l.origin == origin => l.settings.push(s),
            _ => layers.push(Layer {
                origin: origin.clone(),
                settings: vec![s],
            }),
        }
    }
    Ok(layers)
}

/// The base config: a make target run in `make`'s output dir, the tree's `.config`, or a file.
fn make_base(base: &Base, make: &KernelMake, tree: &Path, log: &Path) -> Result<Config> {
    match base {
        Base::Target(target) => {
            let dot_config = make.out_dir().join(".config");
            let _ = std::fs::remove_file(&dot_config);
            make.run_to_log(&[target], log).with_context(|| {
                if target == "localmodconfig" {
                    "make localmodconfig failed: it needs lsmod and the running kernel's config, \
                     which the container may lack; try --host, or pass a config file as --base"
                        .to_string()
                } else {
                    format!("making the base config (make {target})")
                }
            })?;
            read_config(&dot_config)
        }
        Base::TreeConfig => read_config(&tree.join(".config")).context(
            "--base olddefconfig starts from the tree's .config; configure the tree or pass --base",
        ),
        Base::File(p) if !p.exists() => bail!(
            "--base {}: not tinyconfig, defconfig, localmodconfig or olddefconfig, and no such file",
            p.display()
        ),
        Base::File(p) => read_config(p).context("reading the --base config file"),
    }
}

/// One line per value a layer replaced; the base's changes counted, listed with -v.
fn print_overrides(merged: &kconfig::merge::Merged, verbose: bool) {
    for o in &merged.overrides {
        eprintln!("note: {o}");
    }
    if merged.base_changes.is_empty() {
        return;
    }
    eprintln!(
        "note: the fragments and sets change {} values of the base{}",
        merged.base_changes.len(),
        if verbose { ":" } else { " (-v lists them)" }
    );
    if verbose {
        for o in &merged.base_changes {
            eprintln!("  {o}");
        }
    }
}

/// The tree's Kconfig files for `arch`, followed from the top `Kconfig` like make does.
pub fn read_kconfig(tree: &Path, arch: &Arch) -> Result<SymbolIndex> {
    let index = kconfig::symbols::parse_tree(arch.srcarch, &mut |rel: &str| {
        match std::fs::read(tree.join(rel)) {
            // A few Kconfig help texts are not UTF-8; they do not matter here.
            Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading {rel}"))),
        }
    })
    .with_context(|| format!("reading the Kconfig files of {}", tree.display()))?;
    if index.files == 0 {
        bail!("{} has no top-level Kconfig file", tree.display());
    }
    for w in &index.warnings {
        cmd::log_line(&format!("kconfig: {w}"));
    }
    Ok(index)
}

fn read_config(path: &Path) -> Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Config::parse(&text).with_context(|| format!("{} is not a kernel config", path.display()))
}

/// A path for messages: relative to the workspace root when inside it.
fn short_path(p: &Path) -> String {
    p.strip_prefix(workspace_root())
        .unwrap_or(p)
        .display()
        .to_string()
}

/// `make` for one kernel tree and one output dir (`O=`), in the rootfs container (the tree at
/// /src read-only, the output dir at /build) or on the host: the build's [`Make`] decides its
/// argv and environment, the build's [`Runner`] runs it.
pub struct KernelMake {
    make: Make,
    /// The output dir on the host.
    out_dir: PathBuf,
    place: Place,
    /// The status line's title; None shows none (the caller has its own).
    status: Option<&'static str>,
}

impl KernelMake {
    pub fn new(
        ctx: &Ctx,
        tree: &Path,
        out: &Path,
        arch: &'static Arch,
        host: bool,
    ) -> Result<KernelMake> {
        if host {
            return Ok(KernelMake::on_host(tree, out, arch));
        }
        Ok(KernelMake {
            make: Make::config(arch, Paths::container()),
            out_dir: out.to_path_buf(),
            place: Place::container(crate::rootfs::build_container(&ctx.state)?, tree, out),
            status: None,
        })
    }

    pub fn on_host(tree: &Path, out: &Path, arch: &'static Arch) -> KernelMake {
        KernelMake {
            make: Make::config(arch, Paths::host(tree, out)),
            out_dir: out.to_path_buf(),
            place: Place::Host {
                build_dir: out.to_path_buf(),
            },
            status: None,
        }
    }

    /// Shows a status line titled `title` while make runs.
    pub fn with_status(mut self, title: &'static str) -> KernelMake {
        self.status = Some(title);
        self
    }

    /// The output dir (`O=`) on the host.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// Runs make with its output appended to `log`; a failure names the log and ends with
    /// its tail.
    pub fn run_to_log(&self, args: &[&str], log: &Path) -> Result<()> {
        let bar = self.status.map(crate::progress::Progress::start);
        let mut runner = Runner::new(
            self.place.clone(),
            log.to_path_buf(),
            bar,
            DEFAULT_BUILD_TIMEOUT,
        )?;
        let run = self.make.run(args);
        let label = format!("make {}", args.join(" "));
        let step = runner.step(&label, &run)?;
        if !step.ok {
            bail!(
                "`{}` failed ({})\n{}\n(full log: {})",
                run.argv.join(" "),
                step.status,
                cmd::tail(&step.output, 15),
                log.display()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases() {
        let d = Path::new("/w");
        assert_eq!(
            Base::parse("tinyconfig", d),
            Base::Target("tinyconfig".into())
        );
        assert_eq!(Base::parse("olddefconfig", d), Base::TreeConfig);
        assert_eq!(
            Base::parse("my.config", d),
            Base::File("/w/my.config".into())
        );
        assert_eq!(Base::parse("/a/b", d), Base::File("/a/b".into()));
    }

    /// xtask.toml's `[trim]` over the defaults: its base and fragments against the workspace,
    /// after the VM's, the arch's and the lane's; its sets named as its; the lane's own output.
    #[test]
    fn xtask_toml_over_the_defaults() {
        let file = FileTrim {
            base: Some("my.config".into()),
            fragments: vec!["kconfig/debug.config".into()],
            set: vec!["CONFIG_SLUB=y".into()],
        };
        let state = StateDir::new("/state".into());
        let host = crate::arch::HOST;
        let o = TrimOptions::from_file(&file, host, Lane::Pci, &state, Path::new("/ws")).unwrap();
        assert_eq!(o.base, Base::File("/ws/my.config".into()));
        let f: Vec<&str> = o.fragments.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(f[0], "/ws/kconfig/vm.config");
        assert_eq!(f.last(), Some(&"/ws/kconfig/debug.config"));
        assert_eq!(
            o.sets,
            [("xtask.toml [trim] set".into(), "CONFIG_SLUB=y".into())]
        );
        assert_eq!(o.output, state.trimmed_config_for_lane(host, Lane::Pci));
        assert!(!o.host && !o.allow_dropped && !o.quiet);
        let o = TrimOptions::from_file(
            &FileTrim::default(),
            host,
            host.default_lane(),
            &state,
            Path::new("/ws"),
        )
        .unwrap();
        assert_eq!(o.base, Base::Target("tinyconfig".into()));
        assert_eq!(o.output, state.trimmed_config());
    }

    #[test]
    fn vm_fragment_parses_and_says_why() {
        let path = workspace_root().join(VM_FRAGMENT);
        let text = std::fs::read_to_string(&path).unwrap();
        let settings = config::parse(&text).unwrap();
        assert!(settings
            .iter()
            .any(|s| s.name == "VIRTIO_FS" && s.value == "y"));
        // Every group of options is preceded by a comment saying why.
        for group in text.split("\n\n") {
            assert!(
                group.trim_start().starts_with('#'),
                "no comment on:\n{group}"
            );
        }
    }

    #[test]
    fn debug_fragment_parses() {
        let text = std::fs::read_to_string(workspace_root().join("kconfig/debug.config")).unwrap();
        let settings = config::parse(&text).unwrap();
        assert!(settings.iter().any(|s| s.name == "PROVE_LOCKING"));
        // KASAN is offered, commented out.
        assert!(text.contains("# CONFIG_KASAN=y"));
        assert!(!settings.iter().any(|s| s.name == "KASAN"));
    }
}

/// Against a real tree: `cargo xtask test` runs these on its tree and its kernel's final
/// .config (by hand: `XTASK_TEST_TREE=... XTASK_TEST_CONFIG=.config cargo test -p xtask -- --ignored`).
#[cfg(test)]
mod real_tree {
    use super::*;

    #[test]
    #[ignore = "needs a kernel tree and a .config made from it"]
    fn every_symbol_of_a_real_config_is_known() {
        let tree = PathBuf::from(std::env::var_os("XTASK_TEST_TREE").unwrap());
        let config = PathBuf::from(std::env::var_os("XTASK_TEST_CONFIG").unwrap());
        let index = read_kconfig(&tree, crate::arch::HOST).unwrap();
        assert!(index.warnings.is_empty(), "{:?}", index.warnings);
        let c = read_config(&config).unwrap();
        let unknown: Vec<&str> = c
            .entries()
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| !index.is_defined(n))
            .collect();
        eprintln!("{} files, {} symbols", index.files, index.defs.len());
        assert!(unknown.is_empty(), "{unknown:?}");
    }
}
