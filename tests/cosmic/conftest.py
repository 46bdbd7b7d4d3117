"""Constants of the cosmic-ray tests; the `auger` and `model` fixtures are in tests/conftest.py."""

from __future__ import annotations

import numpy as np

#: The first minimum quoted for the Auger combined fit (EPOS-LHC), used as a realistic truth.
COMBINED_FIT = np.array([0.96, 18.68, 0.0, 0.673, 0.281, 0.046, 0.0])
