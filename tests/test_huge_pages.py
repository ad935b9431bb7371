"""Large constants moved onto 2 MiB pages (tvm_dual/huge_pages.py): found, collapsed, harmless."""

import warnings

import numpy as np
import pytest
import torch

import tvm_dual
from tvm_dual import huge_pages
from tvm_dual.huge_pages import HUGE_PAGE, enclosing_range, huge_range


def _collapse_supported() -> bool:
    """Whether this kernel collapses a fresh 2 MiB-aligned anonymous buffer (Linux 6.1+, THP not off)."""
    if not huge_pages.enabled():
        return False
    raw = np.ones(3 * HUGE_PAGE, dtype=np.uint8)
    start, _ = huge_range(raw.ctypes.data, raw.nbytes)
    return huge_pages.collapse(start, HUGE_PAGE) == HUGE_PAGE


def test_huge_range_is_the_aligned_interior():
    assert huge_range(HUGE_PAGE + 64, 5 * HUGE_PAGE) == (2 * HUGE_PAGE, 6 * HUGE_PAGE)
    assert huge_range(0, 3 * HUGE_PAGE) == (0, 3 * HUGE_PAGE)
    start, end = huge_range(64, HUGE_PAGE)  # no whole aligned huge page inside
    assert start == end


def test_enclosing_range_covers_every_byte():
    assert enclosing_range(HUGE_PAGE + 64, HUGE_PAGE) == (HUGE_PAGE, 3 * HUGE_PAGE)
    assert enclosing_range(2 * HUGE_PAGE, HUGE_PAGE) == (2 * HUGE_PAGE, 3 * HUGE_PAGE)


@pytest.mark.skipif(not _collapse_supported(), reason="this kernel does not collapse to transparent huge pages")
def test_collapsing_around_a_buffer_keeps_its_neighbours():
    """The 2 MiB pages around a buffer hold other data too: collapsing them must not change it."""
    arena = np.random.default_rng(0).integers(0, 255, 6 * HUGE_PAGE, dtype=np.uint8)
    before = arena.copy()
    start, _ = huge_range(arena.ctypes.data, arena.nbytes)
    offset = start - arena.ctypes.data + HUGE_PAGE // 2  # a buffer straddling two 2 MiB pages
    assert huge_pages.collapse(arena.ctypes.data + offset, HUGE_PAGE) == HUGE_PAGE
    np.testing.assert_array_equal(arena, before)


def _linear_model(n: int, k: int):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(k, n), torch.nn.Tanh()).eval()
    calibration = [torch.randn(1, k) for _ in range(64)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", tvm_dual.DualCompileWarning)
        module = tvm_dual.compile_dual(model, (calibration[0],), calibration=calibration, insensitive_ratio=0.5)
    return model, module


@pytest.mark.skipif(not _collapse_supported(), reason="this kernel does not collapse to transparent huge pages")
def test_weights_collapse_and_outputs_do_not_change(monkeypatch):
    _, module = _linear_model(2048, 1024)  # an 8 MiB weight: at least 3 aligned 2 MiB pages inside it
    x = np.random.default_rng(0).standard_normal((1, 1024)).astype(np.float32)
    y = module(x)
    assert 3 * HUGE_PAGE <= module.huge_page_bytes <= 8 * 2**20
    monkeypatch.setenv(huge_pages.ENV_SWITCH, "0")
    _, small_pages = _linear_model(2048, 1024)
    np.testing.assert_array_equal(small_pages(x), y)
    assert small_pages.huge_page_bytes == 0


def test_small_models_are_left_alone():
    """Nothing under 2 MiB is touched (and intermediates, which differ between VMs, never are)."""
    model, module = _linear_model(64, 32)
    x = torch.randn(1, 32)
    module(x)
    assert module.huge_page_bytes == 0
