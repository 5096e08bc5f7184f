"""Range queries read a pool's past demand back from a real Prometheus (history backfilled with promtool).

Two days of vLLM-named series, written as OpenMetrics and turned into TSDB blocks by ``promtool tsdb
create-blocks-from openmetrics``, then served by Debian's ``prometheus``: the source's ``history`` gives each
forecast signal as a live tick would compute it, and the start-up backfill fills the seasonal book with it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pdscale.controller.core.types import PoolRole, Signal
from pdscale.controller.runtime.backfill import backfill_seasonal
from pdscale.controller.runtime.loop_parts import SeasonalBook
from pdscale.controller.runtime.settings import PoolSettings
from pdscale.controller.sources.prometheus import PrometheusMetricsSource
from tests.helpers.prometheus_server import PrometheusServer, require_prometheus

pytestmark = pytest.mark.integration_prometheus

STEP_S = 15.0
DAY_S = 86_400.0
# Day one at 2 req/s, day two at 6; 1000-token prompts; decode holds 40 running and 2 waiting throughout.
RATES = (2.0, 6.0)
ISL = 1000.0
END_S = float(int(time.time() // 60 * 60)) - 3 * 3600.0  # well clear of the head block
START_S = END_S - 2 * DAY_S


def _openmetrics() -> str:
    lab = {p: f'pool="{p}",role="{p}",model_name="m"' for p in ("prefill", "decode")}
    types = [
        "# TYPE vllm:request_success counter",
        "# TYPE vllm:prompt_tokens counter",
        "# TYPE vllm:request_prompt_tokens summary",
        "# TYPE vllm:num_requests_running gauge",
        "# TYPE vllm:num_requests_waiting gauge",
    ]
    series: dict[str, list[str]] = {}
    n = 0.0
    t = START_S
    while t <= END_S:
        rate = RATES[0] if t < START_S + DAY_S else RATES[1]
        for pool, running, waiting, done in (("prefill", 3.0, 0.0, n), ("decode", 40.0, 2.0, n)):
            lb = lab[pool]
            for name, value in (
                (f"vllm:request_success_total{{{lb}}}", done),
                (f"vllm:prompt_tokens_total{{{lb}}}", done * ISL),
                (f"vllm:request_prompt_tokens_sum{{{lb}}}", done * ISL),
                (f"vllm:request_prompt_tokens_count{{{lb}}}", done),
                (f"vllm:num_requests_running{{{lb}}}", running),
                (f"vllm:num_requests_waiting{{{lb}}}", waiting),
            ):
                series.setdefault(name, []).append(f"{name} {value} {t:.0f}")
        n += rate * STEP_S
        t += STEP_S
    # OpenMetrics wants each metric family's samples together, after its TYPE line.
    out: list[str] = []
    for family in types:
        out.append(family)
        base = family.split()[2]
        out += [
            line
            for name, lines in series.items()
            if name.startswith(base + "_") or name.startswith(base + "{")
            for line in lines
        ]
    return "\n".join(out) + "\n# EOF\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    require_prometheus()
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    root = tmp_path_factory.mktemp("promhist")
    data = root / "history.om"
    data.write_text(_openmetrics(), encoding="utf-8")
    tsdb = root / "tsdb"
    tsdb.mkdir()
    done = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(data), str(tsdb)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    srv = PrometheusServer([], tsdb, retention="10d").start()
    try:
        yield srv
    finally:
        srv.stop()


def _pools() -> dict[str, PoolSettings]:
    return {
        n: PoolSettings(name=n, role=PoolRole(n), gpus_per_replica=1, max_replicas=8, selector={"role": n})
        for n in ("prefill", "decode")
    }


def _source(server: PrometheusServer, **params: Any) -> PrometheusMetricsSource:
    return PrometheusMetricsSource(_pools(), {"url": server.url, "retries": 0, "timeout_s": 10.0, **params})


def _mean(times: list[float], values: list[float | None], t0: float, t1: float) -> float:
    picked = [v for t, v in zip(times, values, strict=True) if t0 <= t <= t1 and v is not None]
    assert picked, f"no values in [{t0}, {t1}]"
    return sum(picked) / len(picked)


def test_history_gives_each_days_arrival_rate(server: PrometheusServer) -> None:
    """Day one reads 2 req/s and day two 6 req/s (arrivals = completions + queue growth), 2000 / 6000 tok/s."""
    got = _source(server).history("prefill", START_S, END_S, 60.0)
    times, rates = got[Signal.REQUEST_RATE]
    assert abs(_mean(times, rates, START_S + 3600, START_S + DAY_S - 3600) - RATES[0]) < 0.02 * RATES[0]
    assert abs(_mean(times, rates, START_S + DAY_S + 3600, END_S - 600) - RATES[1]) < 0.02 * RATES[1]
    times, tps = got[Signal.PREFILL_TPS]
    assert abs(_mean(times, tps, START_S + DAY_S + 3600, END_S - 600) - RATES[1] * ISL) < 0.02 * RATES[1] * ISL


def test_history_spans_the_range_a_day_per_query(server: PrometheusServer) -> None:
    """Two days at 60 s: a point per minute (more than one query's worth at Prometheus' 11,000-point cap)."""
    src = _source(server)
    times, _ = src.history("prefill", START_S, END_S, 60.0)[Signal.REQUEST_RATE]
    assert len(times) >= 2 * 1440 - 5
    assert src.health().queries_total >= 2 * 3  # three fields, at least two one-day chunks each


def test_decode_concurrency_is_running_plus_waiting(server: PrometheusServer) -> None:
    """The decode pool's concurrency history is the 40 running plus 2 waiting it held."""
    times, conc = _source(server).history("decode", START_S, END_S, 60.0)[Signal.DECODE_CONCURRENCY]
    assert abs(_mean(times, conc, START_S + 600, END_S - 600) - 42.0) < 1e-6


def test_backfill_fills_the_seasonal_book(server: PrometheusServer) -> None:
    """The start-up backfill feeds a day ago's arrivals into the seasonal history the floor reads."""
    src = _source(server)
    book = SeasonalBook([("prefill", Signal.REQUEST_RATE), ("decode", Signal.DECODE_CONCURRENCY)], 30.0)
    rec = type("Rec", (), {"source": src, "pools": _pools(), "seasonal": book})()
    counts = backfill_seasonal(rec, END_S, 2.0)
    assert counts["prefill"] >= 2 * 1440 - 5
    hist = book.get("prefill", Signal.REQUEST_RATE)
    assert hist is not None
    day_one = hist.values(END_S - DAY_S - 3900, END_S - DAY_S - 3300)  # an hour before the day boundary
    day_two = hist.values(END_S - 3900, END_S - 3300)
    assert abs(float(day_one.mean()) - RATES[0]) < 0.02 * RATES[0]
    assert abs(float(day_two.mean()) - RATES[1]) < 0.02 * RATES[1]


def test_a_simulators_time_scale_reads_nothing(server: PrometheusServer) -> None:
    """With time_scale != 1 Prometheus time is not wall time: no history."""
    assert _source(server, time_scale=60.0).history("prefill", START_S, END_S, 60.0) == {}


def test_an_unreachable_prometheus_leaves_the_book_empty(tmp_path: Path) -> None:
    """A failed range query logs and backfills nothing; start-up goes on."""
    src = PrometheusMetricsSource(_pools(), {"url": "http://127.0.0.1:9", "retries": 0, "timeout_s": 1.0})
    book = SeasonalBook([("prefill", Signal.REQUEST_RATE)], 30.0)
    rec = type("Rec", (), {"source": src, "pools": _pools(), "seasonal": book})()
    assert backfill_seasonal(rec, END_S, 2.0) == {}
