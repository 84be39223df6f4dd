//! `cargo xtask setup-rootfs`: builds the Debian root filesystem (build container and guest
//! root) from the recipe in `rootfs/`, atomically and only when the recipe changed; with
//! `--arch` another architecture's guest root (no toolchain) beside it.
//!
//! What other commands can rely on in a finished rootfs (`StateDir::rootfs()`):
//! - empty mount points [`MOUNT_POINTS`] for the read-only build container's binds;
//! - gcc, make and the kernel build tools; `rootfs.json` records the recipe digest and gcc;
//! - systemd as `/sbin/init`; `/usr/local/sbin/xtask-init` (from the overlay) for fast boots,
//!   and on the host's architecture `/usr/local/sbin/xtask-init-fast` ([`fast_init`]) for
//!   the fast boots on the read-only root, with the list of files it reads ahead;
//! - qemu-guest-agent, started by udev once the `org.qemu.guest_agent.0` port appears;
//! - root without a password, auto-logged-in on serial consoles; journald to the console;
//! - no fstab line for `/`: the kernel mounts the virtiofs root as the command line says.

pub mod binfmt;
mod bootstrap;
pub mod fast_init;
pub mod generation;
mod overlay;
mod progress;
mod recipe;
mod staging;

use crate::cmd::{self, CommandExt};
use crate::container::Container;
use crate::ctx::Ctx;
use crate::lock::FileLock;
use crate::progress::Progress;
use crate::state::StateDir;
use crate::{signals, tools};
use anyhow::{bail, Context, Result};
use bootstrap::Bootstrapper;
use recipe::{Meta, Source};
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

/// Where the recipe folder is bind-mounted while `customize.sh` runs.
const RECIPE_MOUNT: &str = "/run/xtask-recipe";
/// The build container over the rootfs in use; fails with the fix when the rootfs is not
/// built. The generation is the one this process uses throughout ([`generation::in_use`]).
pub fn build_container(state: &StateDir) -> Result<Container> {
    Ok(Container::at(generation::in_use(state)?.tree))
}

/// Mount points the read-only build container binds over (nspawn cannot create them).
pub const MOUNT_POINTS: &[&str] = &["/src", "/build", "/ccache", "/out", "/xtask"];

/// `setup-rootfs [--arch ARCH]`: the root for `arch` (the host's is the build container too),
/// from the recipe and the Debian `suite` at `mirror` (None: xtask.toml's, then the default).
pub fn setup(
    ctx: &Ctx,
    arch: &'static crate::arch::Arch,
    suite: Option<&str>,
    mirror: Option<&str>,
    force: bool,
) -> Result<u8> {
    let source = Source::resolve(suite, mirror, &ctx.file.rootfs)?;
    // The host's architecture's root is the build container too; another's is a guest
    // root only, in its own corner of the state dir.
    let build_container = arch.is_host();
    let state = ctx.state.guest_roots(arch);
    let recipe = recipe::recipe_dir();
    let packages = recipe::read_packages(&recipe, build_container)?;
    let digest = recipe::digest_for_arch(&recipe::digest(&recipe, &source)?, arch);
    let what = if build_container {
        "rootfs".to_string()
    } else {
        format!("{} rootfs", arch.name)
    };
    if !force {
        if let Some(meta) = up_to_date(&state, &digest) {
            println!(
                "{what} is up to date (recipe {}, {}): {}",
                crate::units::short(&digest),
                meta.gcc,
                state.rootfs().display()
            );
            if let Some(_lock) = try_lock(&state)? {
                generation::sweep_and_say(&state)?;
            }
            return Ok(0);
        }
    }

    require_root("building the rootfs")?;
    let (tool, tool_path) = tools::bootstrapper()?;
    let bootstrapper = Bootstrapper::from_tool(&tool);
    if !build_container {
        binfmt::ensure(arch, &binfmt::dir_from_env())?;
    }
    std::fs::create_dir_all(&state.root)
        .with_context(|| format!("creating {}", state.root.display()))?;
    let _lock = lock(&state)?;
    let started = Instant::now();
    let root = std::fs::canonicalize(&state.root)?;
    let staging = staging::Staging::new(root.join("rootfs.tmp"))?;
    println!(
        "building the {what}: Debian {} {} from {} with {} (recipe {})",
        source.suite,
        arch.debian_arch,
        source.mirror,
        bootstrapper.name(),
        crate::units::short(&digest)
    );

    let foreign = (!build_container).then_some(arch.debian_arch);
    let mut c = std::process::Command::new(&tool_path);
    c.args(bootstrapper.argv(&packages, &source, foreign, staging.path()));
    run_step(
        &format!("bootstrapping Debian {}", source.suite),
        c,
        &ctx.run_dir.join("bootstrap.log"),
        |log| bootstrap::classify(log, &source),
    )?;

    signals::check()?;
    let n = overlay::copy(&recipe.join("overlay"), staging.path())?;
    eprintln!("overlay: {n} files copied");
    if build_container {
        // The host's rustc compiles for the host's architecture only: another's root boots
        // the shell init in every case.
        install_fast_init(ctx, &recipe, staging.path())?;
    }

    let c = Container::at(staging.path().to_path_buf())
        .writable()
        .bind_ro(&recipe, RECIPE_MOUNT)
        .env("XTASK_SUITE", &source.suite)
        .command(&["/bin/sh", &format!("{RECIPE_MOUNT}/customize.sh")])?;
    run_step(
        "running rootfs/customize.sh",
        c,
        &ctx.run_dir.join("customize.log"),
        |_| None,
    )?;

    signals::check()?;
    let gcc = if build_container {
        gcc_version(staging.path())?
    } else {
        // A guest root only: the build container's cross toolchain builds its kernels.
        "no toolchain (guest root)".to_string()
    };
    check_tree(staging.path(), build_container)?;
    let toolchain_digest = match build_container {
        true => Some(recipe::toolchain_digest(&recipe, &source)?),
        false => None,
    };
    let meta = Meta {
        digest,
        suite: source.suite,
        mirror: source.mirror,
        bootstrapper: bootstrapper.name().into(),
        gcc,
        built: crate::state::timestamp(),
        toolchain_digest,
    };
    let g = generation::install(&state, staging, &meta)?;
    println!(
        "{what} ready in {:.0}s: {} (generation {}, recipe {}, {})",
        started.elapsed().as_secs_f64(),
        state.rootfs().display(),
        g.tree.file_name().unwrap_or_default().to_string_lossy(),
        crate::units::short(&meta.digest),
        meta.gcc
    );
    // Builds, VMs and bisects that started before keep the old one until they end.
    generation::sweep_and_say(&state)?;
    Ok(0)
}

/// What the build cache keys builds by: the recipe's digest without the guest's overlay
/// ([`recipe::toolchain_digest`]) and the gcc inside. Read
/// from `rootfs.json`, so it starts no process.
/// The generation is the one this process builds with ([`generation::in_use`]).
pub fn toolchain_identity(state: &StateDir) -> Result<String> {
    let g = generation::in_use(state)?;
    match Meta::read(&g.meta) {
        Ok(m) => Ok(m.toolchain_identity()),
        Err(_) => bail!(
            "the rootfs at {} has no record ({}): run `cargo xtask setup-rootfs --force`",
            g.tree.display(),
            g.meta.display()
        ),
    }
}

/// The record of the current rootfs, when it was built from this very recipe.
fn up_to_date(state: &StateDir, digest: &str) -> Option<Meta> {
    let (g, _) = generation::current(state).ok()??;
    let meta = Meta::read(&g.meta).ok()?;
    (meta.digest == digest && g.tree.join("usr/bin").is_dir()).then_some(meta)
}

/// Runs one long step with its output in `log`. On failure: the cause in one line when
/// `explain` recognises it, else the log's last lines; either way the log's path.
fn run_step(
    name: &str,
    cmd: std::process::Command,
    log: &Path,
    explain: impl Fn(&str) -> Option<String>,
) -> Result<()> {
    let step = Progress::start(name);
    let status = progress::run_logged_to(cmd, log, &step)?;
    if status.success() {
        step.done();
        return Ok(());
    }
    drop(step);
    let text = std::fs::read_to_string(log).unwrap_or_default();
    if let Some(why) = explain(&text) {
        bail!("{why} (log: {})", log.display());
    }
    eprintln!("{}", cmd::tail(&text, 15));
    bail!(
        "{name} failed ({status}): see the lines above and {}",
        log.display()
    )
}

/// Compiles the fast-boot init ([`fast_init`]) into the tree, with the list of files it reads
/// ahead; without a rustc, says so and leaves it out (fast boots then run the shell init,
/// about 0.6 s slower under TCG).
fn install_fast_init(ctx: &Ctx, recipe: &Path, tree: &Path) -> Result<()> {
    let Some(rustc) = fast_init::rustc(&|k| std::env::var_os(k)) else {
        eprintln!(
            "no rustc found ($RUSTC, beside $CARGO, on PATH, in $CARGO_HOME/bin): fast boots \
             will run the shell init; install Rust with rustup and run `setup-rootfs --force`"
        );
        return Ok(());
    };
    let out = tree.join(fast_init::INSTALLED);
    let mut c = std::process::Command::new(rustc);
    c.args(fast_init::rustc_args(&recipe.join(fast_init::SOURCE), &out));
    run_step(
        "compiling the fast init",
        c,
        &ctx.run_dir.join("fast-init.log"),
        |_| None,
    )?;
    let ldd = Container::at(tree.to_path_buf())
        .command(&[&["ldd"][..], &fast_init::PREFETCHED[..]].concat())?
        .read_logged()
        .context("listing the guest agent's libraries with ldd in the new rootfs")?;
    let list = tree.join(fast_init::PREFETCH_LIST);
    std::fs::create_dir_all(list.parent().expect("a path in the tree"))?;
    std::fs::write(&list, fast_init::prefetch_list(&ldd))
        .with_context(|| format!("writing {}", list.display()))
}

/// The first line of `gcc --version` inside the tree, recorded so lookups start no process.
fn gcc_version(tree: &Path) -> Result<String> {
    let out = Container::at(tree.to_path_buf())
        .command(&["gcc", "--version"])?
        .read_logged()
        .context(
            "running gcc in the new rootfs: is build-essential in rootfs/build-packages.txt?",
        )?;
    Ok(out.lines().next().unwrap_or_default().trim().to_string())
}

/// What later commands rely on, checked before the tree is put in place: a guest root's
/// agent, and the build container's tools.
fn check_tree(tree: &Path, build_container: bool) -> Result<()> {
    let mut need = vec![("usr/sbin/qemu-ga", recipe::GUEST_PACKAGES)];
    if build_container {
        need.push(("usr/bin/make", recipe::BUILD_PACKAGES));
        need.push(("usr/bin/gcc", recipe::BUILD_PACKAGES));
    }
    for (p, list) in need {
        if !tree.join(p).exists() {
            bail!("the new rootfs has no /{p}: add its package to rootfs/{list}");
        }
    }
    for m in MOUNT_POINTS {
        if !tree.join(&m[1..]).is_dir() {
            bail!("the new rootfs has no mount point {m}: rootfs/customize.sh must mkdir it");
        }
    }
    Ok(())
}

/// `--shell [-- CMD ARGS]`: a shell, or one command, in the read-only build container.
pub fn shell(state: &StateDir, command: &[String]) -> Result<u8> {
    require_root("the rootfs container")?;
    let interactive = command.is_empty() && std::io::stdin().is_terminal();
    let mut container = build_container(state)?;
    if interactive {
        container = container.interactive();
    }
    let argv: Vec<String> = if command.is_empty() {
        vec!["/bin/bash".into(), "--login".into()]
    } else {
        command.to_vec()
    };
    let mut c = container.command(&argv)?;
    let status = if interactive {
        // In the terminal's foreground group: nspawn owns the terminal in raw mode, and
        // Ctrl-C goes to the shell inside, not to us.
        let start = cmd::log_start(&c);
        let status = c.status().context("starting systemd-nspawn")?;
        cmd::log_end(&c, start, &format!("{status}"));
        status
    } else {
        if std::io::stdin().is_terminal() {
            // Its own process group may not read the terminal.
            c.stdin(std::process::Stdio::null());
        }
        let mut child = c.spawn_logged()?;
        // The user's own command in the container: it runs as long as they want it to.
        cmd::wait(&mut child, None)?.expect("no deadline")
    };
    use std::os::unix::process::ExitStatusExt;
    Ok(crate::exit::passed_on(status.code(), status.signal()))
}

fn require_root(what: &str) -> Result<()> {
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (debootstrap and systemd-nspawn do): run it with sudo");
    }
    Ok(())
}

/// One setup-rootfs at a time per state dir; a second one stops at once, naming the first.
fn lock(state: &StateDir) -> Result<FileLock> {
    match try_lock(state)? {
        Some(lock) => Ok(lock),
        None => bail!(
            "another setup-rootfs is running on {} ({}): wait for it to finish",
            state.root.display(),
            crate::lock::holder(&rootfs_lock(state))
        ),
    }
}

fn try_lock(state: &StateDir) -> Result<Option<FileLock>> {
    FileLock::try_acquire(&rootfs_lock(state))
}

fn rootfs_lock(state: &StateDir) -> std::path::PathBuf {
    state.root.join("rootfs.lock")
}
