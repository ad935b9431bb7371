"""Targets: classic strings, dicts and Target objects; clear errors; host checks."""

import warnings

import pytest
import torch
import tvm

import tvm_dual
from models import odd_mlp
from tvm_dual.target import host_target, missing_host_features, resolve_target, target_arch, target_to_string, vector_bits


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("llvm -mcpu=skylake-avx512", {"kind": "llvm", "mcpu": "skylake-avx512"}),
        ("llvm -mcpu=skylake-avx512 -num-cores=2", {"num-cores": 2}),
        ("llvm -mcpu=znver3 -mattr=+avx2,+fma", {"mattr": ["+avx2", "+fma"]}),
        ({"kind": "llvm", "mcpu": "znver3", "num-cores": 2}, {"mcpu": "znver3", "num-cores": 2}),
    ],
)
def test_accepted_forms(spec, expected):
    target = resolve_target(spec)
    assert target.kind.name == "llvm"
    for key, value in expected.items():
        if key == "kind":
            continue
        got = target.attrs[key]
        assert (list(got) if isinstance(value, list) else got) == value
    assert resolve_target(target).same_as(target) or target_to_string(resolve_target(target)) == target_to_string(target)


def test_default_is_the_host():
    target = resolve_target(None)
    assert target.attrs["mcpu"] == host_target().attrs["mcpu"]
    assert not missing_host_features(target)


@pytest.mark.parametrize(
    "spec, message",
    [
        ("cuda", "kind 'llvm' only"),
        ("llvm -mcpu=skylake-avx513", "unknown -mcpu=skylake-avx513"),
        ("llvm mcpu=znver3", "malformed target option 'mcpu=znver3'"),
        ("llvm -num-cores=two", "-num-cores must be an integer"),
        ("llvm -num-cores=0", "-num-cores must be at least 1, got 0"),
        ("llvm -mcpu='znver3", "malformed target string .*No closing quotation"),
        ({"kind": "llvm", "frobnicate": 1}, "Unknown config option 'frobnicate'"),
        ("", "empty target string"),
        (42, "must be a string, dict or tvm.target.Target"),
    ],
)
def test_bad_targets_name_the_problem(spec, message):
    with pytest.raises(tvm_dual.TargetError, match=message):
        resolve_target(spec)


def test_another_architecture_compiles_and_is_refused_here():
    other = "aarch64" if target_arch(host_target()) != "aarch64" else "x86_64"
    target = resolve_target(f"llvm -mtriple={other}-linux-gnu")
    model = odd_mlp("tanh", (16, 32, 4))
    with pytest.warns(tvm_dual.DualCompileWarning, match=f"which this CPU cannot run .*the {other} architecture"):
        mod = tvm_dual.compile_dual(model, (torch.randn(1, 16),), target=target, insensitive_ratio=0.0)
    with pytest.raises(RuntimeError, match=f"needs the {other} architecture .*this CPU lacks it"):
        mod(torch.randn(1, 16))


def test_compile_dual_reports_bad_target():
    with pytest.raises(tvm_dual.TargetError, match="unknown -mcpu"):
        tvm_dual.compile_dual(odd_mlp("tanh"), (torch.randn(1, 37),), target="llvm -mcpu=nonsense")


def test_avx512_target_compiles_and_exports(tmp_path):
    """Cross-compiling for skylake-avx512 works anywhere; running it is refused where it would crash."""
    target = "llvm -mcpu=skylake-avx512 -num-cores=2"
    missing = missing_host_features(resolve_target(target))
    model = odd_mlp("relu", (64, 128, 10))
    with warnings.catch_warnings(record=True) as record:  # pytest.warns() fails where nothing warns: an AVX-512 host
        warnings.simplefilter("always")
        mod = tvm_dual.compile_dual(model, (torch.randn(1, 64),), target=target, insensitive_ratio=0.0)
    assert bool(missing) == any("cannot run" in str(w.message) for w in record)
    path = tmp_path / "avx512.so"
    mod.export_library(path)
    loaded = tvm_dual.load(path)
    assert loaded.target.startswith("llvm") and "skylake-avx512" in loaded.target
    x = torch.randn(1, 64)
    if missing:
        with pytest.raises(RuntimeError, match="this CPU lacks it"):
            loaded(x)
    else:
        with torch.no_grad():
            assert (loaded(x) - model(x)).abs().max().item() <= 1e-5


def test_avx512_code_uses_zmm_registers():
    """The skylake-avx512 build really emits 512-bit vector code for the kernels (with the GEMV
    knobs DenseGemvRewrite picks for that target)."""
    from tvm_dual.kernels.gemv import GemvShape, default_gemv_config, make_gemv

    target = resolve_target("llvm -mcpu=skylake-avx512")
    config = default_gemv_config(vector_bits(target))
    lib = tvm.compile(tvm.IRModule({"main": make_gemv(GemvShape(1, 64, 256, "tanh"), config)}), target=target)
    asm = lib.mod.inspect_source("asm")
    assert "zmm" in asm
