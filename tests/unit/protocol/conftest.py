"""Hypothesis profiles for the codec tests.

Tests set their own example counts; a profile only changes how they run. Select one with
``HYPOTHESIS_PROFILE=ci`` (reproducible) or ``=dev`` (quick local iteration).
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=50, deadline=None)

if os.environ.get("HYPOTHESIS_PROFILE") in {"ci", "dev"}:
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])
