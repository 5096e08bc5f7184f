"""`pdscale perf`: step times and memory figures of one replica, and profile export.

pdscale perf --model llama-3.1-70b --tp 4 --prompt-tokens 2048 --batch 1 --context 2048 --json -
pdscale perf --model llama-3.1-70b --tp 4 --export-profile profile.json
python -m pdscale.simulator.perf_cli ...   (the same, without the pdscale entry point)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pdscale.simulator.perf import DTYPES, PerfModel, PerfModelError, load_perf_model
from pdscale.simulator.profile import ProfileError, ProfilePerfModel, export_profile, load_profile_csv

__all__ = ["add_parser", "build_parser", "main", "perf_report", "run"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0.0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="llama-3.1-70b", help="model name (default: llama-3.1-70b)")
    parser.add_argument("--tp", type=int, choices=(1, 2, 4, 8), default=4, help="tensor-parallel degree (default 4)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="bf16", help="weights and KV dtype (default bf16)")
    parser.add_argument("--prompt-tokens", type=_positive_int, default=2048, help="prompt length (default 2048)")
    parser.add_argument("--batch", type=_positive_int, default=1, help="sequences per batch (default 1)")
    parser.add_argument("--context", type=_positive_int, default=2048, help="KV tokens per decoding sequence")
    parser.add_argument("--slowdown", type=_positive_float, default=1.0, help="multiply every time (1.2 = 20%% slower)")
    parser.add_argument("--params", type=Path, help="performance parameter file (default: the shipped one)")
    parser.add_argument("--profile-csv", type=Path, help="use a measured profile table instead of the roofline")
    parser.add_argument("--kv-bytes-per-token", type=_positive_int, help="with --profile-csv: KV bytes per token")
    parser.add_argument("--max-kv-tokens", type=_positive_int, help="with --profile-csv: KV tokens per replica")
    parser.add_argument("--json", metavar="PATH", help="write JSON to PATH ('-' for stdout) instead of a table")
    parser.add_argument("--export-profile", metavar="PATH", type=Path, help="write the JSON profile to PATH")


def add_parser(subparsers: Any) -> None:
    """Register `perf` on an argparse subparsers object; the handler is `run`."""
    parser = subparsers.add_parser(
        "perf",
        help="step times and KV capacity of one replica; export a profile",
        description=__doc__.splitlines()[0],
    )
    _configure(parser)
    parser.set_defaults(func=run)


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser with the same options (for `python -m pdscale.simulator.perf_cli`)."""
    parser = argparse.ArgumentParser(prog="pdscale perf", description=__doc__.splitlines()[0])
    _configure(parser)
    return parser


def _load(args: argparse.Namespace) -> PerfModel | ProfilePerfModel:
    if args.profile_csv is not None:
        if args.kv_bytes_per_token is None or args.max_kv_tokens is None:
            raise ProfileError("--profile-csv needs --kv-bytes-per-token and --max-kv-tokens")
        return load_profile_csv(
            args.profile_csv,
            kv_bytes_per_token=args.kv_bytes_per_token,
            max_kv_tokens=args.max_kv_tokens,
            gpus_per_replica=args.tp,
        ).scaled(args.slowdown)
    return load_perf_model(args.model, args.tp, args.dtype, args.params).scaled(args.slowdown)


def perf_report(perf: PerfModel | ProfilePerfModel, prompt_tokens: int, batch: int, context: int) -> dict[str, Any]:
    """The figures `pdscale perf` prints: times for `batch` prompts and `batch` sequences of `context` tokens each."""
    prefill_ms = perf.prefill_uniform_ms(prompt_tokens, batch)
    decode_ms = perf.decode_step_ms(batch, float(batch * context))
    return {
        "model": perf.model,
        "tp": perf.tp,
        "dtype": perf.dtype,
        "gpus_per_replica": perf.gpus_per_replica,
        "prompt_tokens": prompt_tokens,
        "batch": batch,
        "context_tokens": context,
        "prefill_ms": round(prefill_ms, 4),
        "prefill_tokens_per_s": round(prompt_tokens * batch / prefill_ms * 1e3, 1),
        "decode_step_ms": round(decode_ms, 4),
        "decode_tokens_per_s": round(batch / decode_ms * 1e3, 1),
        "kv_bytes_per_token": perf.kv_bytes_per_token,
        "max_kv_tokens": perf.max_kv_tokens,
        "kv_fits": batch * context <= perf.max_kv_tokens,
        "slowdown": perf.slowdown,
    }


def _table(report: dict[str, Any]) -> str:
    rows = [
        ("model", f"{report['model']}  tp={report['tp']}  {report['dtype']}"),
        ("prefill", f"{report['prefill_ms']:.1f} ms for {report['batch']} x {report['prompt_tokens']} tokens"),
        ("prefill rate", f"{report['prefill_tokens_per_s']:,.0f} tokens/s"),
        (
            "decode step",
            f"{report['decode_step_ms']:.2f} ms at batch {report['batch']}, {report['context_tokens']} ctx",
        ),
        ("decode rate", f"{report['decode_tokens_per_s']:,.0f} tokens/s"),
        ("KV per token", f"{report['kv_bytes_per_token']:,} bytes"),
        (
            "max KV tokens",
            f"{report['max_kv_tokens']:,}" + ("" if report["kv_fits"] else "  (this batch does not fit)"),
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def run(args: argparse.Namespace) -> int:
    """Handle `pdscale perf`: print or write the figures, optionally export a profile. Exit status 2 on bad input."""
    try:
        perf = _load(args)
    except (PerfModelError, ProfileError) as exc:
        print(f"pdscale perf: error: {exc}", file=sys.stderr)
        return 2
    report = perf_report(perf, args.prompt_tokens, args.batch, args.context)
    if args.export_profile is not None:
        try:
            export_profile(perf, args.export_profile)
        except OSError as exc:
            print(f"pdscale perf: error: cannot write {args.export_profile}: {exc}", file=sys.stderr)
            return 2
        report["profile_path"] = str(args.export_profile)
    if args.json is None:
        print(_table(report))
        if args.export_profile is not None:
            print(f"profile written to {args.export_profile}")
    elif args.json == "-":
        print(json.dumps(report, indent=2))
    else:
        try:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            print(f"pdscale perf: error: cannot write {args.json}: {exc}", file=sys.stderr)
            return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m pdscale.simulator.perf_cli`."""
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
