"""Hypothesis profiles for the codec tests.

Tests set their own example counts; a profile only changes how they run. Select one with
``HYPOTHESIS_PROFILE=ci`` (reproducible) or ``=dev`` (quick local iteration).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=50, deadline=None)

# Examples per parser: a bounded number in the default run; FIELDGATE_FUZZ=long (what
# tests/fuzz/test_fuzz_long.py sets under `-m slow`) gives every parser 10,000.
FUZZ_EXAMPLES = 10_000 if os.environ.get("FIELDGATE_FUZZ") == "long" else 1000
# A call slower than this is a hang, not a slow machine (shared CI cores can stall a call
# for a second or two).
MAX_CALL_S = 5.0

if os.environ.get("HYPOTHESIS_PROFILE") in {"ci", "dev"}:
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])
