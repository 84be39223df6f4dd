//! Can libvirt's QEMU process read the kernel and initramfs? QEMU runs as the user of
//! /etc/libvirt/qemu.conf (Debian: libvirt-qemu) and opens them itself; libvirt is told not to
//! chown our files, so their modes decide. Deciding is pure; gathering the facts is thin.
//!
//! The rest needs nothing from that user: libvirt (root) opens the console log in the private
//! run dir and passes QEMU the descriptor, and virtiofsd runs as root.

use anyhow::{bail, Result};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the qemu driver's settings live.
pub const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";
/// The user QEMU runs as when qemu.conf does not say (Debian's build default).
pub const DEFAULT_QEMU_USER: &str = "libvirt-qemu";

/// A user as the kernel's permission checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gids: Vec<u32>,
}

/// One path component's owner and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub path: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// The `user = "…"` of qemu.conf, if set (`+0`, a name, or a number).
pub fn qemu_user(conf: &str) -> Option<String> {
    conf.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        if k.trim() != "user" {
            return None;
        }
        Some(v.trim().trim_matches('"').to_string())
    })
}

/// The identity of `user` from /etc/passwd and /etc/group text; `+N` and plain numbers are uids.
pub fn identity(user: &str, passwd: &str, group: &str) -> Option<Identity> {
    let by_uid = user.trim_start_matches('+').parse::<u32>().ok();
    let (name, uid, gid) = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let uid: u32 = f.get(2)?.parse().ok()?;
        let gid: u32 = f.get(3)?.parse().ok()?;
        let hit = match by_uid {
            Some(u) => u == uid,
            None => f[0] == user,
        };
        hit.then(|| (f[0].to_string(), uid, gid))
    })?;
    let mut gids = vec![gid];
    for l in group.lines() {
        let f: Vec<&str> = l.split(':').collect();
        let (Some(g), Some(members)) = (f.get(2).and_then(|g| g.parse().ok()), f.get(3)) else {
            continue;
        };
        if members.split(',').any(|m| m == name) && !gids.contains(&g) {
            gids.push(g);
        }
    }
    Some(Identity { name, uid, gids })
}

/// The permission bits (r=4, x=1) that apply to `who` on `n`.
fn bits(who: &Identity, n: &Node) -> u32 {
    if who.uid == 0 {
        // Root reads anything and searches any directory.
        return 0o5;
    }
    if n.uid == who.uid {
        (n.mode >> 6) & 7
    } else if who.gids.contains(&n.gid) {
        (n.mode >> 3) & 7
    } else {
        n.mode & 7
    }
}

/// Why `who` cannot read the file at the end of `chain` (its directories from `/`, then the
/// file), or `None` when it can.
pub fn denial(who: &Identity, chain: &[Node]) -> Option<String> {
    let (file, dirs) = chain.split_last()?;
    for d in dirs {
        if bits(who, d) & 1 == 0 {
            return Some(format!(
                "{} cannot enter {} (mode {:o}, owner {}:{})",
                who.name,
                d.path.display(),
                d.mode & 0o7777,
                d.uid,
                d.gid
            ));
        }
    }
    if bits(who, file) & 4 == 0 {
        return Some(format!(
            "{} cannot read {} (mode {:o}, owner {}:{})",
            who.name,
            file.path.display(),
            file.mode & 0o7777,
            file.uid,
            file.gid
        ));
    }
    None
}

/// The owner and mode of every component of `path`, from `/` down.
fn chain(path: &Path) -> Result<Vec<Node>> {
    let path = std::fs::canonicalize(path)?;
    let mut out = Vec::new();
    let mut p = PathBuf::new();
    for c in path.components() {
        p.push(c);
        let m = std::fs::metadata(&p)?;
        out.push(Node {
            path: p.clone(),
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode(),
        });
    }
    Ok(out)
}

/// A URI's scheme and what follows `://`.
fn split_uri(uri: &str) -> (&str, &str) {
    uri.split_once("://").unwrap_or((uri, ""))
}

/// Whether the URI is the local system instance, where QEMU runs as qemu.conf's user.
pub fn is_local_system(uri: &str) -> bool {
    let (scheme, rest) = split_uri(uri);
    (scheme == "qemu" || scheme == "qemu+unix") && rest.starts_with("/system")
}

/// Whether the URI names a QEMU driver on this host (no host part): its domains' processes are
/// this host's.
pub fn is_local(uri: &str) -> bool {
    let (scheme, rest) = split_uri(uri);
    scheme.starts_with("qemu") && rest.starts_with('/')
}

/// Fails with what to change when QEMU under `uri` could not read one of `files`.
pub fn check_readable(uri: &str, files: &[(&str, &Path)]) -> Result<()> {
    // Another instance runs QEMU as someone else: a session one as us, a remote one elsewhere.
    // An unknown user: libvirt says so itself when it starts QEMU.
    let Some(who) = qemu_identity(uri) else {
        return Ok(());
    };
    for (what, f) in files {
        if let Some(why) = denial(&who, &chain(f)?) {
            bail!(
                "libvirt's QEMU runs as {user} and cannot read the {what} {}: {why}. \
                 Make the path readable for it (chmod o+x on the directories, o+r on the file), \
                 use a --state-dir outside private directories such as /root, \
                 or set user = \"+0\" in {QEMU_CONF} and restart libvirtd",
                f.display(),
                user = who.name,
            );
        }
    }
    Ok(())
}

/// libvirt 9 caches QEMU's capabilities only while "KVM usable" (the qemu user may open
/// /dev/kvm) agrees with what the probe found; a /dev/kvm only root may open (no udev to set
/// root:kvm 0660) makes it probe QEMU again and again on every domain start: minutes here.
pub fn kvm_device_problem(who: &Identity, kvm: &Node) -> Option<String> {
    if who.uid == 0 || bits(who, kvm) & 6 == 6 {
        return None;
    }
    Some(format!(
        "libvirt's QEMU user {} cannot open {} (mode {:o}, owner {}:{}), so libvirt probes QEMU \
         anew on every domain start (minutes under load): `chgrp kvm {p} && chmod 0660 {p}` \
         (what udev does on a standard host) fixes it",
        who.name,
        kvm.path.display(),
        kvm.mode & 0o7777,
        kvm.uid,
        kvm.gid,
        p = kvm.path.display()
    ))
}

/// The qemu user of the local system instance, or None (another instance, or unknown).
pub fn qemu_identity(uri: &str) -> Option<Identity> {
    if !is_local_system(uri) {
        return None;
    }
    let conf = std::fs::read_to_string(QEMU_CONF).unwrap_or_default();
    let user = qemu_user(&conf).unwrap_or_else(|| DEFAULT_QEMU_USER.to_string());
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    identity(&user, &passwd, &group)
}

/// The warning about /dev/kvm for `uri`, if it applies.
pub fn kvm_warning(uri: &str) -> Option<String> {
    let who = qemu_identity(uri)?;
    let m = std::fs::metadata("/dev/kvm").ok()?;
    let node = Node {
        path: "/dev/kvm".into(),
        uid: m.uid(),
        gid: m.gid(),
        mode: m.mode(),
    };
    kvm_device_problem(&who, &node)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        libvirt-qemu:x:64055:107:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nkvm:x:107:\nlibvirt-qemu:x:64055:libvirt-qemu\nbuild:x:1001:alice,libvirt-qemu\n";

    fn qemu() -> Identity {
        identity("libvirt-qemu", PASSWD, GROUP).unwrap()
    }

    fn node(path: &str, uid: u32, gid: u32, mode: u32) -> Node {
        Node {
            path: path.into(),
            uid,
            gid,
            mode,
        }
    }

    #[test]
    fn qemu_conf_user() {
        assert_eq!(qemu_user("#user = \"qemu\"\n"), None);
        assert_eq!(
            qemu_user("# x\nuser = \"+0\"\ngroup = \"+0\"\n").as_deref(),
            Some("+0")
        );
    }

    #[test]
    fn identities() {
        assert_eq!(
            qemu(),
            Identity {
                name: "libvirt-qemu".into(),
                uid: 64055,
                gids: vec![107, 64055, 1001],
            }
        );
        assert_eq!(identity("+0", PASSWD, GROUP).unwrap().name, "root");
        assert_eq!(identity("nobody", PASSWD, GROUP), None);
    }

    #[test]
    fn a_private_directory_blocks_the_way() {
        let chain = [
            node("/", 0, 0, 0o40755),
            node("/root", 0, 0, 0o40700),
            node("/root/k", 0, 0, 0o100644),
        ];
        let why = denial(&qemu(), &chain).unwrap();
        assert!(why.contains("cannot enter /root (mode 700"), "{why}");
        // Root passes everywhere.
        let root = identity("+0", PASSWD, GROUP).unwrap();
        assert_eq!(denial(&root, &chain), None);
    }

    #[test]
    fn modes_owner_and_groups_decide() {
        let dirs = [node("/", 0, 0, 0o40755), node("/s", 0, 0, 0o40711)];
        let with = |file: Node| {
            let mut c = dirs.to_vec();
            c.push(file);
            denial(&qemu(), &c)
        };
        assert_eq!(with(node("/s/k", 0, 0, 0o100644)), None);
        assert!(with(node("/s/k", 0, 0, 0o100600))
            .unwrap()
            .contains("cannot read /s/k"));
        // Readable by a group the qemu user is in, or by the user itself.
        assert_eq!(with(node("/s/k", 0, 1001, 0o100640)), None);
        assert_eq!(with(node("/s/k", 64055, 0, 0o100600)), None);
        // The owner's bits apply to the owner even when "other" may read.
        assert!(with(node("/s/k", 64055, 0, 0o100044)).is_some());
    }

    #[test]
    fn local_uris_have_no_host() {
        assert!(is_local("qemu:///system") && is_local("qemu:///session"));
        assert!(!is_local("qemu+ssh://host/system") && !is_local("xen:///system"));
    }

    #[test]
    fn only_the_local_system_instance_is_checked() {
        assert!(is_local_system("qemu:///system"));
        assert!(is_local_system("qemu+unix:///system?socket=/run/x"));
        assert!(!is_local_system("qemu:///session"));
        assert!(!is_local_system("qemu+ssh://host/system"));
    }

    #[test]
    fn a_root_only_dev_kvm_is_reported() {
        let kvm = |uid, gid, mode| node("/dev/kvm", uid, gid, mode);
        let why = kvm_device_problem(&qemu(), &kvm(0, 0, 0o20600)).unwrap();
        assert!(
            why.contains("chgrp kvm /dev/kvm && chmod 0660 /dev/kvm"),
            "{why}"
        );
        assert_eq!(kvm_device_problem(&qemu(), &kvm(0, 107, 0o20660)), None);
        let root = identity("+0", PASSWD, GROUP).unwrap();
        assert_eq!(kvm_device_problem(&root, &kvm(0, 0, 0o20600)), None);
    }
}
