"""XGBoost cost model over knob and shape features, as in TVM's retired AutoTVM.

It regresses log(time) (so that a 2x error costs the same at every speed), is retrained from all
records whenever new measurements arrive, and ranks the unmeasured candidates.
"""

from __future__ import annotations

import numpy as np
import xgboost as xgb


class XGBCostModel:
    def __init__(self, seed: int = 0, rounds: int = 120) -> None:
        self.seed = seed
        self.rounds = rounds
        self._booster: xgb.Booster | None = None

    @property
    def trained(self) -> bool:
        return self._booster is not None

    def fit(self, features: np.ndarray, times: np.ndarray) -> None:
        params = {
            "objective": "reg:squarederror",
            "max_depth": 6,
            "eta": 0.15,
            "subsample": 0.9,
            "min_child_weight": 1,
            "seed": self.seed,
            "nthread": 1,
            "verbosity": 0,
        }
        data = xgb.DMatrix(features, label=np.log(times))
        self._booster = xgb.train(params, data, num_boost_round=self.rounds)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted seconds (lower is better)."""
        if self._booster is None:
            raise RuntimeError("the cost model has not been trained yet")
        return np.exp(self._booster.predict(xgb.DMatrix(features)))
