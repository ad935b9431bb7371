"""export_library / tvm_dual.load: identical outputs, metadata, and clear errors on bad files."""

import pytest
import torch
import tvm

import tvm_dual
from models import FunctionalMLP


@pytest.fixture(scope="module")
def compiled():
    model = FunctionalMLP().eval()
    calib = [torch.randn(32, 37) for _ in range(8)]
    return tvm_dual.compile_dual(model, (torch.randn(1, 37),), calibration=calib, insensitive_ratio=0.5)


def test_round_trip_is_identical(compiled, tmp_path):
    path = tmp_path / "model.so"
    compiled.export_library(path)
    loaded = tvm_dual.load(path)
    assert loaded.metadata["layers"] == compiled.metadata["layers"]
    assert [s.to_dict() for s in loaded.input_specs] == [s.to_dict() for s in compiled.input_specs]
    for x in torch.randn(30, 1, 37):
        a, b = compiled(x), loaded(x)
        assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["hidden"][1], b["hidden"][1])
    assert [s.calls for s in loaded.stats()] == [30] * len(loaded.stats())
    # a loaded module exports the same library again
    again = tmp_path / "again.so"
    loaded.export_library(again)
    assert again.read_bytes() == path.read_bytes()


def test_rewritten_file_is_reloaded(compiled, tmp_path):
    """dlopen caches libraries by path; load() must still see a file rewritten at the same path."""
    path = tmp_path / "m.so"
    compiled.export_library(path)
    first = tvm_dual.load(path)
    dense = tvm_dual.compile_dual(FunctionalMLP().eval(), (torch.randn(1, 37),), insensitive_ratio=0.0)
    dense.export_library(path)
    second = tvm_dual.load(path)
    assert first.metadata["layers"] and not second.metadata["layers"]


def test_any_suffix_gives_a_loadable_library_and_bad_paths_are_named(compiled, tmp_path):
    x = torch.randn(1, 37)
    for name in ("model.tar", "model"):  # TVM alone would write a tar archive for ".tar"
        compiled.export_library(tmp_path / name)
        assert torch.equal(tvm_dual.load(tmp_path / name)(x)["logits"], compiled(x)["logits"])
    with pytest.raises(IsADirectoryError, match="is a directory; export to a file in it"):
        compiled.export_library(tmp_path)
    with pytest.raises(FileNotFoundError, match="the directory .*missing.* does not exist"):
        compiled.export_library(tmp_path / "missing" / "model.so")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.tar"]  # nothing partial left behind


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tvm_dual library at"):
        tvm_dual.load(tmp_path / "nope.so")


def test_corrupt_file(tmp_path, compiled):
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"\x7fELF" + bytes(range(256)) * 8)
    with pytest.raises(tvm_dual.LibraryError, match="not a loadable shared library"):
        tvm_dual.load(junk)
    good = tmp_path / "good.so"
    compiled.export_library(good)
    truncated = tmp_path / "truncated.so"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(tvm_dual.LibraryError):
        tvm_dual.load(truncated)


def test_foreign_tvm_library(tmp_path):
    """A valid TVM library that tvm_dual did not write is refused with a message saying so."""
    from tvm.script import tirx as T

    @T.prim_func
    def add_one(a: T.Buffer((4,), "float32"), b: T.Buffer((4,), "float32")):
        for i in range(4):
            b[i] = a[i] + T.float32(1)

    path = tmp_path / "foreign.so"
    tvm.compile(tvm.IRModule({"main": add_one}), target="llvm").export_library(str(path))
    with pytest.raises(tvm_dual.LibraryError, match="not a tvm_dual library"):
        tvm_dual.load(path)
