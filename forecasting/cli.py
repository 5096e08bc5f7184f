"""``pdscale forecast backtest``: walk-forward accuracy of the forecasters on a series or a trace."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from pdscale.forecasting.backtest import backtest, score
from pdscale.forecasting.base import Signal
from pdscale.forecasting.ensemble import MEMBER_CLASSES, Ensemble
from pdscale.forecasting.grid import FloatArray
from pdscale.forecasting.online import GridForecaster
from pdscale.forecasting.series_io import SeriesFormatError, read_series, read_trace
from pdscale.forecasting.signals import DecodeTimeModel, build_signals

__all__ = ["ALL_MODELS", "add_parser", "main", "make_model", "run", "run_backtests"]

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
) -> dict[str, Any]:
    """Backtests every model and returns ``{"default": NAME, "models": {NAME: scores}}``."""
    out: dict[str, dict[str, float | None]] = {}
    for name in models:
        model = make_model(name, step_s=step_s, season_s=season_s, horizon_s=horizon_s, signal=signal)
        res = backtest(model, t_s, values, horizon_s=horizon_s, step_s=step_s, drivers=drivers)
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
    bt.add_argument("--json", required=True, help="output file, '-' for stdout")
    bt.set_defaults(func=run)
    parser: argparse.ArgumentParser = forecast
    return parser


def _positive(name: str, v: float) -> None:
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive number, got {v!r}")


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
        )
    except (SeriesFormatError, ValueError) as exc:
        print(f"pdscale forecast backtest: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2, sort_keys=False)
    if args.json == "-":
        print(text)
    else:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m pdscale.forecasting.cli forecast backtest ...``"""
    parser = argparse.ArgumentParser(prog="pdscale")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
