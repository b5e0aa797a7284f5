"""`make bench QUICK=1`: the same figures from fewer rounds and shorter loads (noisier)."""

import os

QUICK = os.environ.get("QUICK") == "1"
