"""What a result was measured on: CPU, caches, memory, load, package versions, git revision."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "tvm-dual", "apache-tvm", "apache-tvm-ffi", "torch", "numpy", "scipy",
    "onnx", "onnxruntime", "openvino", "matplotlib",
)


def _lscpu() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _cpuinfo_field(name: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cache_sizes() -> list[dict]:
    """Caches of cpu0 from sysfs: level, type, size in bytes, CPUs sharing it."""
    caches = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            size = (index / "size").read_text().strip()
            mult = {"K": 1024, "M": 1024**2, "G": 1024**3}.get(size[-1], 1)
            caches.append(
                {
                    "level": int((index / "level").read_text()),
                    "type": (index / "type").read_text().strip(),
                    "bytes": int(size.rstrip("KMG")) * mult,
                    "shared_cpu_list": (index / "shared_cpu_list").read_text().strip(),
                }
            )
        except (OSError, ValueError):
            continue
    return caches


def last_level_cache_bytes(default: int = 32 << 20) -> int:
    sizes = [c["bytes"] for c in cache_sizes() if c["type"] in ("Unified", "Data")]
    return max(sizes) if sizes else default


def memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def machine_info() -> dict:
    lscpu = _lscpu()
    flags = (lscpu.get("Flags") or _cpuinfo_field("flags") or "").split()
    simd = sorted(f for f in flags if f.startswith(("avx", "fma", "sse4", "amx", "f16c")))
    try:
        from tvm.target import codegen

        llvm_cpu = str(codegen.llvm_get_system_cpu())
    except Exception:  # tvm missing or broken: the rest of the record is still useful
        llvm_cpu = None
    return {
        "cpu_model": lscpu.get("Model name") or _cpuinfo_field("model name") or platform.processor(),
        "llvm_cpu": llvm_cpu,
        "cpus": os.cpu_count(),
        "threads_per_core": lscpu.get("Thread(s) per core"),
        "hypervisor": lscpu.get("Hypervisor vendor"),
        "simd_flags": simd,
        "flags": flags,
        "caches": cache_sizes(),
        "memory_bytes": memory_bytes(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "hostname": platform.node(),
    }


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision() -> dict:
    """The revision of the checkout tvm_dual runs from, and whether it had uncommitted changes."""
    root = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    revision = git("rev-parse", "HEAD")
    if revision is None:
        return {"revision": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"revision": revision, "dirty": bool(status)}


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None
