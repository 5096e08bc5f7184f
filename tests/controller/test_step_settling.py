"""After an unforecastable 3x step, `slo` settles decode on what the load needs, not on the step's echo."""

from __future__ import annotations

import numpy as np
import pytest

from pdscale.controller.lab.bench import simulate_scenario
from pdscale.controller.lab.scenario import resolve_scenarios

HELD = (3000.0, 4700.0)
"""The 3x plateau of `step-3x` after the cold start (the step is at 2,400 s, the plateau ends at 4,800 s)."""


def _decode_ready(policy: str) -> float:
    res = simulate_scenario(resolve_scenarios("step-3x")[0], policy)
    ready = [s.ready for s in res.samples if str(s.pool) == "decode" and HELD[0] <= s.t_s < HELD[1]]
    return float(np.mean(ready))


@pytest.mark.slow
def test_decode_settles_near_hindsight_after_a_step() -> None:
    """On the plateau, decode holds at most one replica more than hindsight, which knows the load exactly."""
    assert _decode_ready("slo") <= _decode_ready("hindsight") + 1.0
