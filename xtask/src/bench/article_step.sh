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
import base64, json, random, socket, sys, time
path = sys.argv[1]

def lines(s):
    buf = b""
    while True:
        while b"\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        if line.strip():
            yield json.loads(line)

# guest-sync with a fresh id on a fresh connection until the answer carries that id: answers
# to earlier attempts, buffered while the agent was not up yet, are read past.
end = time.time() + 120
while True:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(2)
        s.connect(path)
        sync = random.randrange(1, 2**31)
        s.sendall((json.dumps({"execute": "guest-sync", "arguments": {"id": sync}}) + "\n").encode())
        answers = lines(s)
        while next(answers).get("return") != sync:
            pass
        break
    except Exception:
        s.close()
    if time.time() > end:
        sys.exit(125)
    time.sleep(0.5)
s.settimeout(30)

def call(req):
    s.sendall((json.dumps(req) + "\n").encode())
    return next(answers)["return"]

pid = call({"execute": "guest-exec", "arguments": {"path": "dmesg", "capture-output": True}})["pid"]
while True:
    st = call({"execute": "guest-exec-status", "arguments": {"pid": pid}})
    if st["exited"]:
        break
    time.sleep(0.2)
sys.stdout.write(base64.b64decode(st.get("out-data", "")).decode(errors="replace"))
PY
) || exit 125

# The article's verdict: a backtrace in dmesg is bad.
if printf '%s' "$out" | grep -q -E '\[ cut here \]'; then exit 1; else exit 0; fi
