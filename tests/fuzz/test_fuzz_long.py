"""Every parser with 10,000 examples: the fuzz modules again with FIELDGATE_FUZZ=long.

Slow (minutes): `make test` runs the fuzz modules with a bounded number of examples; this
runs under `pytest -m slow` (a nightly or pre-release run).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_every_parser_survives_ten_thousand_examples() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(HERE / "test_codec_fuzz.py"), str(HERE / "test_more_parsers_fuzz.py"),
         str(HERE / "test_mqtt_wire_fuzz.py")],
        env={**os.environ, "FIELDGATE_FUZZ": "long"},
        capture_output=True, text=True, check=False, cwd=HERE.parents[1],
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
