import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from geopak.jsonable import to_jsonable


@dataclasses.dataclass
class _D:
    a: float
    b: tuple


def test_to_jsonable_converts_arrays_scalars_and_non_finite():
    value = {
        "i": np.int64(3), "f": np.float32(1.5), "nan": float("nan"), "inf": np.inf, "b": np.bool_(True),
        "arr": np.arange(3), "t": torch.tensor([1.0, float("nan")]), "p": Path("/x/y"), "d": _D(1.0, (1, 2)),
        1: {"nested": (np.float64(2.0),)},
    }
    out = to_jsonable(value)
    assert json.loads(json.dumps(out, allow_nan=False)) == {
        "i": 3, "f": 1.5, "nan": None, "inf": None, "b": True, "arr": [0, 1, 2], "t": [1.0, None], "p": "/x/y",
        "d": {"a": 1.0, "b": [1, 2]}, "1": {"nested": [2.0]},
    }
