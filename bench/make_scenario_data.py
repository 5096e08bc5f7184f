"""Write the synthetic curves and request-length tables of the shape scenarios (deterministic, seeded).

    python bench/make_scenario_data.py      # rewrites controller/bundled/scenarios/data/*.csv

The shapes no public trace in this repository has, each synthesised and said how:

- ``step-3x.csv``: 2 h of 60 s windows; 1 req/s, then 3 req/s from minute 40 (the step lands inside one
  minute), held 40 minutes, then 1 req/s again. An unforecastable step: nothing in the history announces it.
- ``gap.csv``: 6 h; 1 req/s for 90 min, down to 2% over 10 min, 3 h at 2%, back to full load within 10 min,
  then 80 min at 1 req/s (an overnight gap: a region's users leave and return).
- ``flash-crowd.csv``: 2 h; 1 req/s, a rise to 5 req/s within 2 minutes at minute 50, decaying back with a
  10-minute time constant (a launch or a viral link).
- ``flat.csv``: 2 h at 1 req/s with +-10% minute-to-minute noise (seeded), for the length scenarios below.
- ``long-prompts.csv``: 4,000 requests, prompts log-uniform over 32k-96k tokens, outputs log-normal around
  200 tokens (document QA and code-repository prompts that fill most of a 128K window).
- ``reasoning.csv``: 4,000 requests, prompts log-normal around 800 tokens, outputs log-normal with median
  1,600 and sigma 1.0 (mean ~2,600, p99 ~16k, capped at 32k): reasoning-model output lengths.

Rates are per the curve's own unit; each scenario's ``rate_scale`` sizes it (bench/scale_scenarios.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "controller" / "bundled" / "scenarios" / "data"
W = 60.0


def _curve(name: str, rates: list[float]) -> None:
    lines = ["window_start_s,requests_per_s"] + [f"{i * W:.0f},{r:.6g}" for i, r in enumerate(rates)]
    (OUT / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _lengths(name: str, prompts: np.ndarray, outputs: np.ndarray) -> None:
    n = len(prompts)
    arrivals = np.arange(n, dtype=np.float64)  # one a second; the scenarios take their arrivals from a curve
    rows = ["arrival_s,input_tokens,output_tokens"]
    rows += [f"{a:.0f},{int(p)},{int(o)}" for a, p, o in zip(arrivals, prompts, outputs, strict=True)]
    (OUT / name).write_text("\n".join(rows) + "\n", encoding="utf-8")


def main() -> None:
    """Write every file."""
    OUT.mkdir(parents=True, exist_ok=True)
    _curve("step-3x.csv", [3.0 if 40 <= m < 80 else 1.0 for m in range(120)])
    gap = []
    for m in range(360):
        if m < 90 or m >= 280:
            r = 1.0 if m < 90 or m >= 290 else 0.02 + 0.98 * (m - 280) / 10
        elif m < 100:
            r = 1.0 - 0.98 * (m - 90) / 10
        else:
            r = 0.02
        gap.append(r)
    _curve("gap.csv", gap)
    _curve(
        "flash-crowd.csv",
        [1.0 if m < 50 else (1.0 + 4.0 * min(1.0, (m - 50 + 1) / 2)) if m < 52 else 1.0 + 4.0 * math.exp(-(m - 52) / 10)
         for m in range(120)],
    )  # fmt: skip
    rng = np.random.default_rng(20261203)
    _curve("flat.csv", list(np.round(1.0 + rng.uniform(-0.1, 0.1, 120), 4)))
    n = 4000
    prompts = np.exp(rng.uniform(math.log(32_768), math.log(98_304), n)).round()
    outputs = np.clip(rng.lognormal(math.log(200), 0.5, n), 16, 2048).round()
    _lengths("long-prompts.csv", prompts, outputs)
    prompts = np.clip(rng.lognormal(math.log(800), 0.8, n), 32, 16_384).round()
    outputs = np.clip(rng.lognormal(math.log(1600), 1.0, n), 64, 32_768).round()
    _lengths("reasoning.csv", prompts, outputs)


if __name__ == "__main__":
    main()
