#!/bin/sh
# Finishes the rootfs. `cargo xtask setup-rootfs` runs this inside systemd-nspawn on the new
# tree, after the packages are installed and overlay/ is copied over it. It must not need the
# network. Any failure fails the build and leaves the previous rootfs in place.
set -eu

# systemd is not running here: systemctl edits unit symlinks directly.
export SYSTEMD_OFFLINE=1

echo "I: checking that the guest agent starts when its virtio port appears"
# Debian's qemu-guest-agent ships a udev rule that pulls the unit in when the
# org.qemu.guest_agent.0 port shows up, and a unit bound to that device: nothing to enable.
grep -q 'SYSTEMD_WANTS.*qemu-guest-agent.service' /lib/udev/rules.d/60-qemu-guest-agent.rules
grep -q '^BindsTo=dev-virtio' /lib/systemd/system/qemu-guest-agent.service

echo "I: root logs in without a password"
passwd --delete root >/dev/null

echo "I: boot to a plain multi-user system"
systemctl set-default multi-user.target
# No VGA console (the serial getty comes from console=ttyS0), and no periodic jobs in a
# throwaway VM.
systemctl disable getty@tty1.service
systemctl mask getty-static.service apt-daily.timer apt-daily-upgrade.timer \
    dpkg-db-backup.timer e2scrub_all.timer e2scrub_reap.service fstrim.timer

echo "I: mount points for the read-only build container"
# nspawn --read-only cannot create them: kernel source, O= build dir, ccache, artefacts,
# and the toolkit's own files.
mkdir -p /src /build /ccache /out /xtask

echo "I: a fresh machine id on every boot"
# Empty: systemd makes a transient one, which suits a root shared between many VMs.
: >/etc/machine-id

if [ -e /usr/local/sbin/xtask-init ] && [ ! -x /usr/local/sbin/xtask-init ]; then
    echo "E: /usr/local/sbin/xtask-init is not executable: chmod +x it in rootfs/overlay" >&2
    exit 1
fi

echo "I: cleaning the apt cache"
apt-get clean
rm -rf /var/lib/apt/lists/*
