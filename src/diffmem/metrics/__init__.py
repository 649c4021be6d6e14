"""Metrics: nearest neighbours, the memorisation fraction, sample quality.

* :func:`two_nearest` -- blocked matmul distances to the two nearest references.
* :func:`memorization_fraction` -- BUBM25's ratio test ``d1/d2 < 1/3`` with a bootstrap.
* :mod:`diffmem.metrics.quality` -- Fréchet distance, KID, the self-trained feature net,
  optional Inception FID from local weights.
"""

from .memorization import memorization_fraction, nearest_ratios
from .nn import two_nearest

__all__ = ["two_nearest", "memorization_fraction", "nearest_ratios"]
