"""tools/runner_vm.py says before booting why KVM cannot boot its VM on a host whose KVM is PVM, instead of a VM
that hangs right after the kernel's decompression (this project's machines: kvm_pvm, nested_pvm=1)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from harness import project


def runner_vm():
    path = project.current().root / "tools" / "runner_vm.py"
    spec = importlib.util.spec_from_file_location("runner_vm", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("runner_vm", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def host(tmp_path: Path, *, modules: tuple[str, ...], flags: str) -> tuple[Path, Path]:
    for name in modules:
        (tmp_path / "module" / name).mkdir(parents=True)
    (tmp_path / "module").mkdir(exist_ok=True)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 {flags}\n")
    return tmp_path / "module", cpuinfo


def test_a_pvm_host_refuses_kvm_and_says_why_and_what_to_do(tmp_path):
    refusal = runner_vm().kvm_refusal(*host(tmp_path, modules=("kvm", "kvm_pvm"), flags="hypervisor"))
    assert refusal is not None and "CONFIG_PVM_GUEST" in refusal and "unset PGREPL_VM_ACCEL" in refusal


def test_hardware_virtualisation_boots_debian_s_kernel(tmp_path):
    tool = runner_vm()
    assert tool.kvm_refusal(*host(tmp_path / "vmx", modules=("kvm", "kvm_intel"), flags="vmx")) is None
    assert tool.kvm_refusal(*host(tmp_path / "svm", modules=("kvm", "kvm_pvm"), flags="svm")) is None
