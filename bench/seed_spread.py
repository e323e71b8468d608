"""How the benches print a figure over seeds: median [min, max]."""

from __future__ import annotations

import numpy as np


def spread(values) -> str:
    v = np.asarray(values, float)
    return f"{np.median(v):.3f} [{v.min():.3f}, {v.max():.3f}]"
