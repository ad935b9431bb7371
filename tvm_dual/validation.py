"""Number checks shared by the option and config classes: Python and numpy scalars alike, never bools."""

from __future__ import annotations

import numbers

import numpy as np


def is_integer(value) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value) -> bool:
    """A Python or numpy int or float, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def real_number(value) -> float | None:
    """A Python, numpy or 0-d array/tensor int or float as a float; None for anything else (bools too)."""
    if is_real(value):
        return float(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # a 0-d numpy array or torch tensor
        return real_number(value.item())
    return None
