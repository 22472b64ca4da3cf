#!/usr/bin/env python3
"""A runner-like host, reproduced: a KVM virtual machine like a CI runner or a workstation.

Debian 12 from a debootstrapped disk image, booted with Debian's own kernel: cgroup v2 (unified,
Debian's default), AppArmor enabled (Docker confines containers with `docker-default`), Debian's
`docker.io`, and a user `runner` who is in the `docker` group and is not root - unlike the
project's own machines (cgroup v1, no AppArmor, root).

    python tools/runner_vm.py build                  # the disk image (root; cached by content hash)
    python tools/runner_vm.py run -- COMMAND...      # boot, copy this checkout in, run COMMAND as runner
    python tools/runner_vm.py run --engine -- CMD    # run CMD here, DOCKER_HOST set to the VM's engine

Traffic stays on this machine: the VM's network is QEMU's user mode, its SSH forwarded to a port on
127.0.0.1 only. SSH uses a key made for the run, handed to the VM through QEMU's fw_cfg (never
written into the cached image), and the VM's host key pinned at build time. The VM's disk is a
snapshot of the cached image (`snapshot=on`): nothing a run does is kept. The VM is killed at the
end, also on failure or SIGTERM; a VM left by a killed run is found by its name and removed by the
next one.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
MIRROR = os.environ.get("PGREPL_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = [
    "systemd-sysv", "udev", "dbus", "kmod", "iproute2", "netbase", "procps", "openssh-server", "sudo",
    "ca-certificates", "curl", "git", "python3", "python3-venv", "apparmor", "docker.io", "linux-image-amd64",
    "initramfs-tools", "zstd",
]  # fmt: skip
KERNEL_ARGS = "root=/dev/vda rw console=ttyS0 apparmor=1 security=apparmor"
USER = "runner"
DISK_SIZE = "24G"
MEMORY = os.environ.get("PGREPL_VM_MEMORY", "6G")
ACCEL = os.environ.get("PGREPL_VM_ACCEL", "tcg,thread=multi")
CPU_MODEL = os.environ.get("PGREPL_VM_CPU", "max")
CPUS = os.environ.get("PGREPL_VM_CPUS", str(os.cpu_count() or 2))
NAME_PREFIX = "pgrepl-harness-runner-vm-"  # the VM's label: qemu's -name, seen in its command line
FW_CFG_KEYS = "opt/io.pgrepl-harness/authorized_keys"
KEY_SOURCE = f"/sys/firmware/qemu_fw_cfg/by_name/{FW_CFG_KEYS}/raw"
BOOT_TIMEOUT = 120
ROOT = Path(__file__).resolve().parent.parent

# Written into the image. The unit copies the run's public key from fw_cfg before sshd starts.
FILES = {
    "etc/hostname": "runner-vm\n",
    "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 runner-vm\n",
    "etc/fstab": "/dev/vda / ext4 defaults 0 1\n",
    "etc/resolv.conf": "nameserver 10.0.2.3\n",  # QEMU user mode's DNS
    "etc/systemd/network/10-wired.network": "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n",
    "etc/systemd/system/pgrepl-authorized-keys.service": f"""\
[Unit]
Description=The run's SSH key for {USER}, from QEMU's fw_cfg
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'modprobe qemu_fw_cfg && install -d -m 700 -o {USER} -g {USER} /home/{USER}/.ssh \\
    && install -m 600 -o {USER} -g {USER} {KEY_SOURCE} /home/{USER}/.ssh/authorized_keys'

[Install]
WantedBy=multi-user.target
""",
    "etc/ssh/sshd_config.d/pgrepl.conf": "PasswordAuthentication no\nPermitRootLogin no\nUseDNS no\n",
    "usr/sbin/policy-rc.d": "#!/bin/sh\nexit 101\n",  # nothing starts inside the build's chroot
}
LOCAL_CA_DIR = "/usr/local/share/ca-certificates"
SETUP = f"""\
set -e
update-ca-certificates >/dev/null
systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer man-db.timer fstrim.timer >/dev/null
useradd --create-home --shell /bin/bash --groups docker {USER}
systemctl enable systemd-networkd.service pgrepl-authorized-keys.service ssh.service docker.service
rm -f /usr/sbin/policy-rc.d /etc/ssh/ssh_host_*_key* && ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key
apt-get clean
"""


class VmError(RuntimeError):
    """A one-line reason the VM cannot be built, booted or reached; printed without a traceback."""


def local_cas() -> dict[str, bytes]:
    """This machine's own certificate authorities (an egress proxy's, say): the VM trusts them too."""
    return {p.name: p.read_bytes() for p in sorted(Path(LOCAL_CA_DIR).glob("*.crt"))}


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    recipe = repr((SUITE, MIRROR, PACKAGES, KERNEL_ARGS, USER, DISK_SIZE, FILES, SETUP, local_cas())).encode()
    return base / "pgrepl-harness" / "runner-vm" / hashlib.sha256(recipe).hexdigest()[:12]


def log(message: str) -> None:
    print(f"runner-vm: {message}", file=sys.stderr, flush=True)


def run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kwargs)


def need(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        raise VmError(
            f"missing {', '.join(missing)}: apt-get install qemu-system-x86 debootstrap e2fsprogs openssh-client"
        )


# --- the image ------------------------------------------------------------------------------------
def build() -> Path:
    """The cached image's directory (disk.raw, vmlinuz, initrd.img, host_key.pub), built if missing."""
    where = cache_dir()
    if (where / "disk.raw").exists():
        return where
    if os.geteuid() != 0:
        raise VmError(f"the VM image {where} is not built yet and building it needs root (sudo {sys.argv[0]} build)")
    need("debootstrap", "mkfs.ext4")
    where.mkdir(parents=True, exist_ok=True)
    with open(where.parent / f"{where.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (where / "disk.raw").exists():  # another process built it meanwhile
            return where
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="pgrepl-runner-vm-", dir=where.parent) as tmp:
            rootfs = Path(tmp) / "rootfs"
            log(f"debootstrap {SUITE} with {len(PACKAGES)} packages (a few minutes, once)")
            run(
                "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(rootfs), MIRROR,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            for path, text in FILES.items():
                (rootfs / path).parent.mkdir(parents=True, exist_ok=True)
                (rootfs / path).write_text(text)
            (rootfs / "usr/sbin/policy-rc.d").chmod(0o755)
            for name, pem in local_cas().items():
                (rootfs / LOCAL_CA_DIR.lstrip("/") / name).write_bytes(pem)
            run("chroot", str(rootfs), "/bin/sh", "-c", SETUP)
            kernel = sorted((rootfs / "boot").glob("vmlinuz-*"))[-1]
            shutil.copy(kernel, Path(tmp) / "vmlinuz")
            shutil.copy(rootfs / "boot" / kernel.name.replace("vmlinuz", "initrd.img"), Path(tmp) / "initrd.img")
            shutil.copy(rootfs / "etc/ssh/ssh_host_ed25519_key.pub", Path(tmp) / "host_key.pub")
            disk = Path(tmp) / "disk.raw"
            run("truncate", "-s", DISK_SIZE, str(disk))
            run("mkfs.ext4", "-q", "-F", "-L", "runner-vm", "-d", str(rootfs), str(disk))
            for name in ("vmlinuz", "initrd.img", "host_key.pub", "disk.raw"):  # disk.raw last: it marks done
                os.replace(Path(tmp) / name, where / name)
        log(f"built {where} in {time.monotonic() - started:.0f} s")
        for stale in where.parent.iterdir():  # earlier recipes' images: one cached image at a time
            if stale.is_dir() and stale != where and not stale.name.startswith("pgrepl-runner-vm-"):
                shutil.rmtree(stale, ignore_errors=True)
    return where


# --- a running VM ---------------------------------------------------------------------------------
@dataclass
class Vm:
    name: str
    port: int
    key: Path
    known_hosts: Path
    console: Path

    def ssh_argv(self, *, tty: bool = False) -> list[str]:
        return [
            "ssh", "-p", str(self.port), "-i", str(self.key), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "ConnectTimeout=5", *(["-t"] if tty else []), f"{USER}@127.0.0.1",
        ]  # fmt: skip

    def ssh(self, command: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([*self.ssh_argv(), command], **kwargs)

    @property
    def docker_host(self) -> str:
        return f"ssh://{USER}@127.0.0.1:{self.port}"

    def ssh_config(self) -> str:
        """An ssh_config stanza for 127.0.0.1 (docker's ssh:// engine reads ~/.ssh/config or -F)."""
        return (
            f"Host 127.0.0.1\n  Port {self.port}\n  User {USER}\n  IdentityFile {self.key}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n  StrictHostKeyChecking yes\n  BatchMode yes\n"
        )


def kvm_refusal(modules: Path = Path("/sys/module"), cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """Why KVM cannot boot this VM here, or None. A host whose KVM is PVM (the `kvm_pvm` module, no vmx or svm
    flag: a VM itself, as this project's machines are) runs only guests whose kernel is built as a PVM guest
    (CONFIG_PVM_GUEST); Debian's linux-image-amd64 is not, and hangs right after its decompression."""
    flags = set(cpuinfo.read_text().split()) if cpuinfo.is_file() else set()
    if (modules / "kvm_pvm").is_dir() and not flags & {"vmx", "svm"}:
        return (
            "this host's KVM is PVM (kvm_pvm loaded; no vmx or svm in /proc/cpuinfo): it boots only a guest kernel "
            "built with CONFIG_PVM_GUEST, and Debian's linux-image-amd64 is not one (it hangs after decompression); "
            "use TCG (unset PGREPL_VM_ACCEL) or a host with VT-x or AMD-V"
        )
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def remove_orphans() -> None:
    """Kill VMs a killed run left: named by this tool, their starting process gone."""
    out = subprocess.run(["pgrep", "-a", "-f", f"-name {NAME_PREFIX}"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, _, argv = line.partition(" ")
        owner = argv.split(NAME_PREFIX, 1)[1].split("-", 1)[0].split(",")[0]
        if owner.isdigit() and not Path(f"/proc/{owner}").exists():
            log(f"removing VM {pid} left by the ended process {owner}")
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(pid), signal.SIGKILL)


@contextlib.contextmanager
def booted(image: Path) -> Iterator[Vm]:
    """Boot a VM from `image`'s snapshot; yield once its sshd answers; kill it at the end."""
    need("qemu-system-x86_64", "ssh", "ssh-keygen")
    if ACCEL.startswith("kvm"):
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            raise VmError("/dev/kvm is not usable by this user (is KVM enabled, are you in the kvm group?)")
        if refusal := kvm_refusal():
            raise VmError(f"PGREPL_VM_ACCEL={ACCEL}: {refusal}")
    remove_orphans()
    with tempfile.TemporaryDirectory(prefix="pgrepl-runner-vm-run-") as tmp:
        run_dir = Path(tmp)
        key = run_dir / "key"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pgrepl-runner-vm", "-f", str(key))
        port = free_port()
        known_hosts = run_dir / "known_hosts"
        kind, host_key = (image / "host_key.pub").read_text().split()[:2]
        known_hosts.write_text(f"[127.0.0.1]:{port} {kind} {host_key}\n")
        vm = Vm(f"{NAME_PREFIX}{os.getpid()}-{port}", port, key, known_hosts, run_dir / "console.log")
        argv = [
            "qemu-system-x86_64", "-name", vm.name, "-machine", "q35", "-accel", ACCEL, "-cpu", CPU_MODEL,
            "-smp", CPUS, "-m", MEMORY, "-display", "none", "-no-reboot", "-serial", f"file:{vm.console}",
            "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"), "-append", KERNEL_ARGS,
            "-drive", f"file={image / 'disk.raw'},format=raw,if=virtio,snapshot=on",
            "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22", "-device", "virtio-net-pci,netdev=net0",
            "-fw_cfg", f"name={FW_CFG_KEYS},file={key}.pub",
        ]  # fmt: skip
        started = time.monotonic()
        qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            _wait_for_ssh(vm, qemu, started)
            log(f"booted {vm.name} in {time.monotonic() - started:.1f} s (ssh: 127.0.0.1:{port})")
            yield vm
        finally:
            qemu.kill()
            qemu.wait()
            signal.signal(signal.SIGTERM, previous)


def _wait_for_ssh(vm: Vm, qemu: subprocess.Popen, started: float) -> None:
    last = ""
    while time.monotonic() - started < BOOT_TIMEOUT:
        if qemu.poll() is not None:
            raise VmError(f"qemu exited ({qemu.returncode}): {qemu.stderr.read().decode().strip()[-500:]}")
        answer = vm.ssh("true", capture_output=True, text=True, timeout=30)
        if answer.returncode == 0:
            return
        last = answer.stderr.strip()
        time.sleep(0.5)  # poll interval of a deadline-bound wait
    tail = vm.console.read_text(errors="replace").splitlines()[-15:] if vm.console.exists() else []
    raise VmError(f"no SSH answer within {BOOT_TIMEOUT} s (last: {last}); console:\n" + "\n".join(tail))


def copy_checkout(vm: Vm, dest: str = "work") -> None:
    """This checkout's tracked files (the working tree's content) into ~/dest in the VM: the CI's checkout."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], check=True, capture_output=True).stdout
    tar = subprocess.Popen(
        ["tar", "-C", str(ROOT), "--null", "-T", "-", "-czf", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    receive = subprocess.Popen([*vm.ssh_argv(), f"mkdir -p {dest} && tar -xzf - -C {dest}"], stdin=tar.stdout)
    tar.stdin.write(files)
    tar.stdin.close()
    if receive.wait() != 0 or tar.wait() != 0:
        raise VmError("copying the checkout into the VM failed")


def newest_tag(repository: str) -> str:
    """`repository:tag` of the newest local image of `repository` (docker lists newest first)."""
    listed = subprocess.run(
        ["docker", "images", repository, "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True
    ).stdout.split()
    if not listed:
        raise VmError(f"no local image of {repository} to preload (build it here first, e.g. pgrepl-harness up)")
    return listed[0]


def preload_images(vm: Vm, images: list[str]) -> None:
    """Images from this engine into the VM's (no registry is reachable from either); a name without a
    tag means its newest local image (the harness finds a built image by its content-hash tag)."""
    for image in (i if ":" in i else newest_tag(i) for i in images):
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        load = subprocess.run([*vm.ssh_argv(), "docker load -q"], stdin=save.stdout, capture_output=True, text=True)
        if save.wait() != 0 or load.returncode != 0:
            raise VmError(f"could not load {image} into the VM's engine: {load.stderr.strip()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runner_vm.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build the VM's disk image (needs root; cached)")
    runp = sub.add_parser("run", help="boot the VM and run a command in it (or, with --engine, here against it)")
    runp.add_argument("--engine", action="store_true", help="run COMMAND here with DOCKER_HOST at the VM's engine")
    runp.add_argument("--preload", action="append", default=[], metavar="IMAGE", help="docker save/load IMAGE")
    runp.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    args = parser.parse_args(argv)

    def body() -> int:
        image = build()
        if args.command == "build":
            return 0
        command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not command:
            parser.error("run: give a command after --")
        with booted(image) as vm:
            preload_images(vm, args.preload)
            if args.engine:
                return run_against_engine(vm, command)
            copy_checkout(vm)
            return vm.ssh(f"cd work && {shlex.join(command) if len(command) > 1 else command[0]}").returncode

    return reported("runner_vm.py", body)


def reported(prog: str, body: Callable[[], int]) -> int:
    """body()'s exit status; a VmError or a failed command is one line on stderr and status 2."""
    try:
        return body()
    except VmError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"{prog}: {shlex.join(map(str, exc.cmd))[:200]} exited {exc.returncode}", file=sys.stderr)
        return 2


def run_against_engine(vm: Vm, command: list[str]) -> int:
    """COMMAND here, its docker client on the VM's engine over SSH (`DOCKER_HOST=ssh://...`).

    OpenSSH reads ~/.ssh/config from the user's passwd entry, not $HOME: an `ssh` first on PATH adds
    `-F` with the VM's stanza for every ssh the command starts (the docker CLI's, docker-py's, the
    harness's tunnel), and the user's own ssh_config is left alone."""
    bin_dir = Path(vm.key).parent / "bin"
    bin_dir.mkdir()
    config = Path(vm.key).parent / "ssh_config"
    config.write_text(vm.ssh_config())
    wrapper = bin_dir / "ssh"
    wrapper.write_text(f'#!/bin/sh\nexec {shutil.which("ssh")} -F {shlex.quote(str(config))} "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "DOCKER_HOST": vm.docker_host, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
