//! The one place that picks a VM's backend: the tools a run needs and who starts the VM
//! (QEMU as our child, or a transient libvirt domain). vm/ never names libvirt/, which builds
//! on vm/'s pure parts: the libvirt starter reaches vm/ through [`Tools::start_domain`].

use crate::options::Backend;
use crate::tools;
use crate::vm::guest::{Launcher, Tools};
use crate::vm::VmRequest;
use crate::vm::NEEDS_LIBVIRT_FEATURE;
use anyhow::{bail, Result};

/// Who starts the VM, from `--backend`, `--connect` and `--keep`.
fn launcher(opts: &VmRequest) -> Result<Launcher> {
    match opts.backend {
        Backend::Qemu => Ok(Launcher::Qemu),
        Backend::Libvirt if cfg!(feature = "libvirt") => Ok(Launcher::Libvirt {
            uri: opts.connect.clone(),
            keep: opts.keep,
        }),
        Backend::Libvirt => bail!(NEEDS_LIBVIRT_FEATURE),
    }
}

/// The programs a VM run needs: found before anything is built, so that a missing or
/// unusable tool ends the run at once.
pub fn find_tools(opts: &VmRequest) -> Result<Tools> {
    Ok(Tools {
        qemu: tools::find(&tools::qemu(opts.arch))?,
        virtiofsd: tools::find(&tools::VIRTIOFSD)?,
        launcher: launcher(opts)?,
        start_domain: start_domain(),
    })
}

/// The libvirt backend's starter, in a build that has it.
fn start_domain() -> Option<crate::vm::guest::StartDomain> {
    #[cfg(feature = "libvirt")]
    return Some(|spec, paths, tools, uri, keep| {
        Ok(Box::new(crate::libvirt::LibvirtVm::start(
            spec, paths, tools, uri, keep,
        )?))
    });
    #[cfg(not(feature = "libvirt"))]
    None
}

#[cfg(test)]
mod backend_tests {
    use super::*;
    use crate::settings::FileVm;

    fn opts(backend: Backend) -> VmRequest {
        let args = crate::cli::VmArgs {
            backend: Some(backend),
            keep: true,
            ..Default::default()
        };
        args.resolve(&FileVm::default(), crate::options::InitMode::Fast)
            .unwrap()
    }

    #[test]
    fn the_backend_picks_the_launcher() {
        assert_eq!(launcher(&opts(Backend::Qemu)).unwrap(), Launcher::Qemu);
        let l = launcher(&opts(Backend::Libvirt));
        if cfg!(feature = "libvirt") {
            assert_eq!(
                l.unwrap(),
                Launcher::Libvirt {
                    uri: "qemu:///system".into(),
                    keep: true
                }
            );
        } else {
            // One line that says how to get the feature.
            let e = l.unwrap_err().to_string();
            assert!(e.contains("--features libvirt") && !e.contains('\n'), "{e}");
        }
    }
}
