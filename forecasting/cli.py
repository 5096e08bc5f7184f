"""``pdscale forecast backtest``: walk-forward accuracy of the forecasters on a series or a trace."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from typing import Any

from pdscale.forecasting.backtest import backtest, score
from pdscale.forecasting.base import Signal
from pdscale.forecasting.ensemble import MEMBER_CLASSES, Ensemble
from pdscale.forecasting.grid import FloatArray
from pdscale.forecasting.online import GridForecaster
from pdscale.forecasting.series_io import SeriesFormatError, read_series, read_trace
from pdscale.forecasting.signals import DecodeTimeModel, build_signals

__all__ = ["ALL_MODELS", "add_parser", "main", "make_model", "progress_bar", "run", "run_backtests"]

ALL_MODELS: tuple[str, ...] = (*MEMBER_CLASSES, "ensemble")
DEFAULT_MODEL = "ensemble"


def make_model(name: str, *, step_s: float, season_s: float, horizon_s: float, signal: Signal) -> GridForecaster:
    """A built-in forecaster by entry-point name, set up for one backtest."""
    kwargs: dict[str, Any] = {"step_s": step_s, "season_s": season_s, "horizons_s": (horizon_s,)}
    if name == "ensemble":
        return Ensemble(signal=signal, **kwargs)
    if name not in MEMBER_CLASSES:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(ALL_MODELS)}")
    return MEMBER_CLASSES[name](**kwargs)


def run_backtests(
    t_s: FloatArray,
    values: FloatArray,
    *,
    models: tuple[str, ...],
    step_s: float,
    horizon_s: float,
    season_s: float = 86400.0,
    signal: Signal = Signal.PREFILL_TPS,
    drivers: tuple[FloatArray, FloatArray] | None = None,
    warmup_steps: int = 0,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Backtests every model and returns ``{"default": NAME, "models": {NAME: scores}}``. ``on_progress(model,
    done, total)`` is told the walk-forward folds (forecast origins) done over all models, every 16 and at the end."""
    out: dict[str, dict[str, float | None]] = {}
    total = len(models) * len(values)
    for k, name in enumerate(models):
        model = make_model(name, step_s=step_s, season_s=season_s, horizon_s=horizon_s, signal=signal)
        base = k * len(values)

        def on_step(i: int, name: str = name, base: int = base) -> None:
            if on_progress is not None and (i % 16 == 15 or i == len(values) - 1):
                on_progress(name, base + i + 1, total)

        res = backtest(model, t_s, values, horizon_s=horizon_s, step_s=step_s, drivers=drivers, on_step=on_step)
        out[name] = score(res, values, warmup_steps=warmup_steps).as_dict()
    if DEFAULT_MODEL in out:
        default = DEFAULT_MODEL
    else:

        def mase_of(name: str) -> float:
            v = out[name]["mase"]
            return v if v is not None else math.inf

        default = min(out, key=mase_of)
    return {"default": default, "models": out}


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds ``forecast backtest`` to a CLI's subparsers; returns the ``forecast`` parser."""
    forecast = subparsers.add_parser("forecast", help="forecast demand signals and check their accuracy")
    sub = forecast.add_subparsers(dest="forecast_command", required=True)
    bt = sub.add_parser("backtest", help="walk-forward backtest of the forecasters")
    src = bt.add_mutually_exclusive_group(required=True)
    src.add_argument("--series", help="CSV with columns t_s,value (value empty/NaN = missing)")
    src.add_argument("--trace", help="CSV with columns arrival_s,input_tokens,output_tokens")
    bt.add_argument(
        "--signal",
        choices=[Signal.PREFILL_TPS.value, Signal.DECODE_CONCURRENCY.value],
        default=Signal.PREFILL_TPS.value,
        help="signal a --trace is turned into (default prefill_tps)",
    )
    bt.add_argument("--step-s", type=float, default=60.0, help="grid step in seconds (default 60)")
    bt.add_argument("--horizon-s", type=float, default=300.0, help="forecast horizon in seconds (default 300)")
    bt.add_argument("--season-s", type=float, default=86400.0, help="season length in seconds (default 86400)")
    bt.add_argument("--models", default=",".join(ALL_MODELS), help="comma-separated model names (default all)")
    bt.add_argument("--itl-ms", type=float, default=40.0, help="inter-token latency for decode time (default 40)")
    bt.add_argument("--ttft-ms", type=float, default=0.0, help="delay before decode starts (default 0)")
    bt.add_argument("--warmup-steps", type=int, default=0, help="origins left out of the scores (default 0)")
    bt.add_argument("--json", default=None, help="write the scores as JSON here ('-': stdout; default: a table)")
    bt.set_defaults(func=run)
    parser: argparse.ArgumentParser = forecast
    return parser


def _positive(name: str, v: float) -> None:
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive number, got {v!r}")


def progress_bar(*, quiet: bool) -> Any:
    """Steps (backtest folds, bench runs) done / total with elapsed time and ETA on stderr; off when stderr is
    not a terminal or ``quiet``."""
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=quiet or not sys.stderr.isatty(),
    )


def run(args: argparse.Namespace) -> int:
    """Runs ``forecast backtest``; 0 on success, 2 on bad input (message on stderr)."""
    try:
        _positive("--step-s", args.step_s)
        _positive("--horizon-s", args.horizon_s)
        _positive("--season-s", args.season_s)
        models = tuple(m.strip() for m in args.models.split(",") if m.strip())
        unknown = [m for m in models if m not in ALL_MODELS]
        if not models or unknown:
            raise ValueError(f"--models: unknown {unknown or '(none given)'}; known: {', '.join(ALL_MODELS)}")
        signal = Signal(args.signal)
        drivers = None
        if args.series:
            t_s, values = read_series(args.series)
        else:
            a, i, o = read_trace(args.trace)
            s = build_signals(a, i, o, step_s=args.step_s, decode=DecodeTimeModel(args.itl_ms, args.ttft_ms))
            t_s, values = s.t_s, s.signal(signal)
            if signal is Signal.DECODE_CONCURRENCY:
                drivers = (s.request_rate_rps, s.decode_s)
        with progress_bar(quiet=args.json == "-") as bar:
            task = bar.add_task("backtest folds", total=len(models) * len(values))
            result = run_backtests(
                t_s,
                values,
                models=models,
                step_s=args.step_s,
                horizon_s=args.horizon_s,
                season_s=args.season_s,
                signal=signal,
                drivers=drivers,
                warmup_steps=args.warmup_steps,
                on_progress=lambda name, done, total: bar.update(
                    task, completed=done, total=total, description=f"backtest folds ({name})"
                ),
            )
    except (SeriesFormatError, ValueError) as exc:
        print(f"pdscale forecast backtest: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2, sort_keys=False)
    if args.json is None:
        _print_table(result)
    elif args.json == "-":
        print(text)
    else:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0


def _print_table(result: dict[str, Any]) -> None:
    """Scores per model, best MASE first, with the default named."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(float(v), fmt)

    table = Table("model", "MASE", "sMAPE", "pinball", "p90 coverage", "fit s", title="walk-forward backtest")
    rows = sorted(result["models"].items(), key=lambda kv: math.inf if kv[1]["mase"] is None else kv[1]["mase"])
    for name, sc in rows:
        cov = sc.get("p90_coverage")
        table.add_row(
            name + (" (default)" if name == result["default"] else ""),
            num(sc.get("mase"), ".3f"),
            "-" if sc.get("smape") is None else f"{float(sc['smape']):.1f}%",
            num(sc.get("pinball"), ".4g"),
            "-" if cov is None else f"{100 * float(cov):.1f}%",
            num(sc.get("fit_s"), ".2f"),
        )
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    print("MASE: MAE over the series' one-step naive MAE (lower is better); --json - gives every figure as JSON")


def main(argv: list[str] | None = None) -> int:
    """``python -m pdscale.forecasting.cli forecast backtest ...``"""
    parser = argparse.ArgumentParser(prog="pdscale")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
