"""Feast exports PROMETHEUS_MULTIPROC_DIR when feast.metrics is imported; our processes keep prometheus_client in
the mode the user's environment chose (privacy.pin_prometheus_mode), so our counters stay in this process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROBE = Path(__file__).resolve().parents[1] / "support" / "programs" / "prometheus_mode_probe.py"


def _probe(mode: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMETHEUS_MULTIPROC")}
    done = subprocess.run([sys.executable, str(PROBE), mode], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_feast_first_flips_prometheus_into_multiprocess_mode_unless_pinned() -> None:
    # unpinned: values go to files in Feast's temp dir, shared by every process that inherits the variable (a
    # restarted in-process app keeps its old counts; the canary's deltas go wrong) - the failure this guards against
    assert _probe("unpinned") == "multiprocess True"
    assert _probe("pinned") == "single True"  # Feast still exports the variable; our mode no longer follows it
