"""`python -m localrun` (what `make run` runs)."""

import sys

from localrun.server import main

sys.exit(main())
