"""`make bench`: cold starts, warm latency, round trips, timing parity and built sizes, as measured here."""

import sys
from pathlib import Path

# The layer's package is imported from shared/, as Lambda imports it from the layer (/opt/python).
_SHARED = str(Path(__file__).resolve().parents[1] / "shared")
if _SHARED not in sys.path:
    sys.path.insert(0, _SHARED)
