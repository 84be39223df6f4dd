#!/usr/bin/env bash
# One step of a plain `git bisect run`, done the way the article this toolkit grew from does
# it: build the kernel in the rootfs container, boot it with QEMU over virtiofs, ask the
# guest agent for dmesg, and grep it for a warning. The baseline of `cargo xtask bench
# bisect`. Inputs come from the environment (set by the benchmark):
#   XTASK_ROOTFS XTASK_BUILD XTASK_CONFIG XTASK_RUN XTASK_QEMU XTASK_VIRTIOFSD
#   XTASK_ACCEL XTASK_APPEND XTASK_JOBS
set -u
src=$(pwd)
run=$XTASK_RUN
mkdir -p "$XTASK_BUILD" "$run"
[ -f "$XTASK_BUILD/.config" ] || cp "$XTASK_CONFIG" "$XTASK_BUILD/.config"

# Build in the container, as the article does (no modules here, so no dracut).
systemd-nspawn --quiet --register=no --keep-unit --read-only --as-pid2 --console=pipe \
  -D "$XTASK_ROOTFS" --bind="$src:/src" --bind="$XTASK_BUILD:/build" -- \
  sh -c "make -C /src O=/build olddefconfig && make -C /src O=/build -j$XTASK_JOBS bzImage" \
  >"$run/build.log" 2>&1 || exit 125

# Boot: virtiofsd for the root, QEMU with the agent's port.
rm -f "$run/vfs.sock" "$run/qga.sock"
"$XTASK_VIRTIOFSD" --socket-path="$run/vfs.sock" --shared-dir="$XTASK_ROOTFS" \
  --cache=auto --sandbox=none --readonly >"$run/virtiofsd.log" 2>&1 &
vfs=$!
for _ in $(seq 100); do [ -S "$run/vfs.sock" ] && break; sleep 0.1; done
"$XTASK_QEMU" -M microvm,pcie=on,memory-backend=mem -accel "$XTASK_ACCEL" -cpu max -smp 2 -m 1024M \
  -object memory-backend-memfd,id=mem,size=1024M,share=on -nodefaults -no-reboot -display none \
  -serial "file:$run/console.log" \
  -chardev "socket,id=fs,path=$run/vfs.sock" -device vhost-user-fs-pci,chardev=fs,tag=rootfs \
  -device virtio-serial-pci,id=vser -chardev "socket,id=qga,path=$run/qga.sock,server=on,wait=off" \
  -device virtserialport,bus=vser.0,chardev=qga,name=org.qemu.guest_agent.0 \
  -device virtio-rng-pci \
  -kernel "$XTASK_BUILD/arch/x86/boot/bzImage" -append "$XTASK_APPEND" >"$run/qemu.log" 2>&1 &
qemu=$!
trap 'kill $qemu $vfs 2>/dev/null; wait 2>/dev/null' EXIT

# Ask the agent: guest-sync until it answers, then guest-exec dmesg and its status.
out=$(python3 - "$run/qga.sock" <<'PY'
import base64, json, socket, sys, time
path = sys.argv[1]
def call(req, timeout):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall((json.dumps(req) + "\n").encode())
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    return json.loads(buf)
end = time.time() + 120
while True:
    try:
        if call({"execute": "guest-sync", "arguments": {"id": 42}}, 2).get("return") == 42:
            break
    except Exception:
        pass
    if time.time() > end:
        sys.exit(125)
    time.sleep(0.5)
pid = call({"execute": "guest-exec", "arguments": {"path": "dmesg", "capture-output": True}}, 10)["return"]["pid"]
while True:
    st = call({"execute": "guest-exec-status", "arguments": {"pid": pid}}, 10)["return"]
    if st["exited"]:
        break
    time.sleep(0.2)
sys.stdout.write(base64.b64decode(st.get("out-data", "")).decode(errors="replace"))
PY
) || exit 125

# The article's verdict: a backtrace in dmesg is bad.
if printf '%s' "$out" | grep -q -E '\[ cut here \]'; then exit 1; else exit 0; fi
