"""localrun: `make run` — the whole API on this machine, without Docker, as API Gateway would serve it."""

import sys
from pathlib import Path

# The layer's contents, as Lambda puts them on the path (/opt/python).
_SHARED = str(Path(__file__).resolve().parents[1] / "shared")
if _SHARED not in sys.path:
    sys.path.insert(0, _SHARED)
