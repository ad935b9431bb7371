"""Targets: the classic string form, dicts and tvm.target.Target, normalized for TVM 0.27.

TVM 0.27 rejects "llvm -mcpu=..." strings and accepts unknown -mcpu values silently; a wrong
-mcpu would then surface as an illegal instruction at run time. So strings are parsed here, and
every target is checked against LLVM before anything is compiled for it.
"""

from __future__ import annotations

import os
import shlex
from typing import Any, Union

from tvm.target import Target, codegen

TargetLike = Union[str, dict, Target, None]

# Options whose values are lists in TVM's target schema ("-mattr=+avx2,+fma").
_LIST_OPTIONS = {"mattr", "keys", "libs"}
_INT_OPTIONS = {"num-cores", "opt-level", "vector-width"}
# LLVM CPU features that change which instructions are emitted (tuning flags are left out).
_ISA_PREFIXES = ("avx", "sse", "fma", "f16c", "bmi", "amx", "popcnt", "lzcnt", "movbe", "gfni", "vaes", "vpclmulqdq", "sha", "aes", "xop", "fma4")


class TargetError(ValueError):
    """A target that tvm_dual cannot compile for."""


def host_cpu() -> str:
    return str(codegen.llvm_get_system_cpu())


def host_target(num_cores: int | None = None) -> Target:
    """The target for this machine: LLVM's name for the host CPU and all its cores."""
    cores = num_cores or os.cpu_count() or 1
    return Target({"kind": "llvm", "mcpu": host_cpu(), "num-cores": int(cores)})


def parse_target_string(text: str) -> dict[str, Any]:
    """'llvm -mcpu=skylake-avx512 -num-cores=2 -mattr=+avx512f,+fma' -> TVM 0.27 config dict."""
    try:
        tokens = shlex.split(text)
    except ValueError as err:  # an unclosed quote
        raise TargetError(f"malformed target string {text!r}: {err}") from None
    if not tokens:
        raise TargetError("empty target string")
    config: dict[str, Any] = {"kind": tokens[0]}
    for token in tokens[1:]:
        if not token.startswith("-") or "=" not in token:
            raise TargetError(f"malformed target option {token!r} in {text!r}: expected -name=value")
        key, value = token.lstrip("-").split("=", 1)
        if not key or not value:
            raise TargetError(f"malformed target option {token!r} in {text!r}: expected -name=value")
        if key in _LIST_OPTIONS:
            config[key] = [v for v in value.split(",") if v]
        elif key in _INT_OPTIONS:
            try:
                config[key] = int(value)
            except ValueError:
                raise TargetError(f"target option -{key} must be an integer, got {value!r}") from None
        else:
            config[key] = value
    return config


def resolve_target(spec: TargetLike = None) -> Target:
    """Any accepted target form -> a validated llvm Target. None means the host."""
    if spec is None:
        return host_target()
    if isinstance(spec, Target):
        target = spec
    elif isinstance(spec, (str, dict)):
        config = parse_target_string(spec) if isinstance(spec, str) else dict(spec)
        if config.get("kind") != "llvm":
            raise TargetError(
                f"tvm_dual compiles for CPU targets of kind 'llvm' only, got kind {config.get('kind')!r} in {spec!r}"
            )
        try:
            target = Target(config)
        except Exception as err:  # TVM raises ValueError/TVMError with a long message
            raise TargetError(f"invalid target {spec!r}: {str(err).splitlines()[0]}") from None
    else:
        raise TargetError(f"target must be a string, dict or tvm.target.Target, got {type(spec).__name__}")
    if target.kind.name != "llvm":
        raise TargetError(f"tvm_dual compiles for CPU targets of kind 'llvm' only, got {target.kind.name!r}")
    cores = target.attrs.get("num-cores")
    if cores is not None and int(cores) < 1:
        raise TargetError(f"-num-cores must be at least 1, got {int(cores)}")
    mcpu = target.attrs.get("mcpu")
    triple = str(target.attrs.get("mtriple") or codegen.llvm_get_system_triple())
    if mcpu and not codegen.llvm_is_valid_cpu(str(mcpu), triple):
        raise TargetError(f"unknown -mcpu={mcpu} for {triple}; the host CPU is {host_cpu()!r}")
    return target


def isa_features(target: Target) -> set[str]:
    return {f for f in codegen.llvm_get_cpu_features(target) if f.startswith(_ISA_PREFIXES)}


def target_arch(target: Target) -> str:
    """The target's architecture: the first field of its LLVM triple (x86_64, aarch64, ...)."""
    return str(target.attrs.get("mtriple") or codegen.llvm_get_system_triple()).split("-")[0]


def missing_host_features(target: Target) -> set[str]:
    """What the target needs that this machine lacks (empty: safe to run here): its instruction-set
    features, or its architecture when that is another one."""
    host = host_target()
    if target_arch(target) != target_arch(host):
        return {f"the {target_arch(target)} architecture (this machine is {target_arch(host)})"}
    return isa_features(target) - isa_features(host)


def target_to_string(target: Target) -> str:
    """The classic string form, for messages and metadata."""
    config = target_config(target)
    parts = [config.pop("kind")]
    for key, value in sorted(config.items()):
        parts.append(f"-{key}={','.join(value) if isinstance(value, list) else value}")
    return " ".join(parts)


def num_cores(target: Target) -> int:
    return int(target.attrs.get("num-cores") or os.cpu_count() or 1)


def target_config(target: Target) -> dict[str, Any]:
    """A JSON-serializable dict that resolve_target turns back into the same target."""
    config: dict[str, Any] = {"kind": target.kind.name}
    for key, value in target.attrs.items():
        if isinstance(value, bool) or isinstance(value, int):
            config[str(key)] = int(value)
        elif isinstance(value, str):
            config[str(key)] = str(value)
        elif hasattr(value, "__iter__"):
            config[str(key)] = [str(v) for v in value]
        else:
            config[str(key)] = str(value)
    return config


def vector_bits(target: Target) -> int:
    """SIMD width the target's instruction set has (LLVM's llvm_get_vector_width reports 512 for
    znver3, which has no AVX-512)."""
    features = isa_features(target)
    if "avx512bw" in features:
        return 512
    if "avx2" in features:
        return 256
    return 128


def default_little_compute(target: Target) -> str:
    """The little module's arithmetic where nothing was tuned: integer ("i16", vpmaddwd) wherever
    x86 multiplies int16 pairs, else float32 (kernels/little_module.py)."""
    triple = str(target.attrs.get("mtriple") or codegen.llvm_get_system_triple())
    return "i16" if "x86" in triple else "f32"
