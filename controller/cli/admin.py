"""``pdscale admin``: talk to a running daemon's admin API (readable tables, or ``--json PATH``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]

_SUBCOMMANDS = (
    "status",
    "pools",
    "forecast",
    "decisions",
    "watch",
    "explain",
    "pause",
    "resume",
    "override",
    "policy",
    "slo",
    "budget",
    "dry-run",
    "plugins",
)


def _connection_flags(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Where the daemon is, how to authenticate, and where the answer goes."""

    def d(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    p.add_argument("--address", default=d(os.environ.get("PDSCALE_ADMIN_ADDRESS", "127.0.0.1:50051")))
    p.add_argument("--token", default=d(None), help="bearer token (default: $PDSCALE_ADMIN_TOKEN)")
    p.add_argument("--token-file", type=Path, default=d(None), help="read the bearer token from a file")
    p.add_argument("--tls-ca", type=Path, default=d(None), help="CA bundle to verify the server (turns TLS on)")
    p.add_argument("--tls-cert", type=Path, default=d(None), help="client certificate (mutual TLS)")
    p.add_argument("--tls-key", type=Path, default=d(None), help="client private key (mutual TLS)")
    p.add_argument("--server-name", default=d(None), help="TLS name to verify when it differs from the address")
    p.add_argument("--timeout", type=float, default=d(10.0), help="seconds per call (default: 10)")
    p.add_argument("--json", metavar="PATH", default=d(None), help="write the response as JSON to PATH (- for stdout)")


def add_parser(subparsers: Any) -> None:
    """Register ``admin`` and its subcommands."""
    p = subparsers.add_parser("admin", help="talk to a running daemon's admin API")
    _connection_flags(p, defaults=True)
    # The same flags after the subcommand too (`pdscale admin status --json -`), without resetting them there.
    common = argparse.ArgumentParser(add_help=False)
    _connection_flags(common, defaults=False)
    sub = p.add_subparsers(dest="admin_command", metavar="SUBCOMMAND", required=True)

    def add(name: str, **kw: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, parents=[common], **kw)
        return parser

    add("status", help="pools, targets, replicas, forecasts, SLO attainment, pause state")
    add("pools", help="pool specs")
    s = add("forecast", help="one pool's latest forecasts")
    s.add_argument("pool")
    s = add("decisions", help="recorded decisions, newest first")
    s.add_argument("--pool", default="")
    s.add_argument("--since", type=float, default=None, help="loop-clock seconds")
    s.add_argument("--until", type=float, default=None, help="loop-clock seconds")
    s.add_argument("--limit", type=int, default=20, help="page size (default: %(default)s)")
    s.add_argument("--page-token", default="")
    s = add("watch", help="stream decisions as they are made (Ctrl-C to stop)")
    s.add_argument("--pool", default="")
    s.add_argument("--after-id", type=int, default=0)
    s.add_argument("--count", type=int, default=0, help="stop after N decisions (0: never)")
    s = add("explain", help="one decision with inputs, guards and outcomes")
    s.add_argument("id", type=int, nargs="?", default=0, help="decision id (default: the latest)")
    s = add("pause", help="hold a pool (or all) at its current target")
    s.add_argument("pool", nargs="?", default="")
    s.add_argument("--reason", default="")
    s = add("resume", help="resume a pool (or all)")
    s.add_argument("pool", nargs="?", default="")
    s = add("override", help="pin a pool's replicas (exact/min/max) or clear the pin")
    s.add_argument("pool")
    s.add_argument("mode", choices=["exact", "min", "max", "clear"])
    s.add_argument("replicas", type=int, nargs="?", default=None)
    s.add_argument("--ttl", type=float, default=None, help="seconds of loop clock until it expires")
    s.add_argument("--reason", default="")
    s = add("policy", help="switch the policy plugin: NAME [--params JSON]")
    s.add_argument("name")
    s.add_argument("--params", default="{}", help="JSON object of policy parameters")
    s = add("slo", help="change latency objectives")
    s.add_argument("--ttft-ms", type=float, default=None)
    s.add_argument("--itl-ms", type=float, default=None)
    s.add_argument("--quantile", type=float, default=None)
    s = add("budget", help="change the GPU budget: N or 'unlimited'")
    s.add_argument("max_gpus")
    s = add("dry-run", help="what the policy would decide now with changes; acts on nothing")
    s.add_argument("--policy", default="")
    s.add_argument("--params", default=None, help="JSON object of policy parameters")
    s.add_argument("--ttft-ms", type=float, default=None)
    s.add_argument("--itl-ms", type=float, default=None)
    s.add_argument("--budget", default=None, help="N or 'unlimited'")
    s.add_argument("--override", action="append", default=[], metavar="POOL=MODE:N", help="e.g. decode=exact:4")
    s.add_argument("--ignore-pause", action="store_true")
    add("plugins", help="registered plugins")


def _token(args: argparse.Namespace) -> str | None:
    if args.token:
        return str(args.token)
    if args.token_file is not None:
        path: Path = args.token_file
        return path.read_text(encoding="utf-8").strip()
    return os.environ.get("PDSCALE_ADMIN_TOKEN") or None


def _channel(args: argparse.Namespace) -> Any:
    import grpc  # noqa: PLC0415

    if args.tls_ca is None and args.tls_cert is None:
        return grpc.insecure_channel(args.address)
    creds = grpc.ssl_channel_credentials(
        root_certificates=args.tls_ca.read_bytes() if args.tls_ca else None,
        private_key=args.tls_key.read_bytes() if args.tls_key else None,
        certificate_chain=args.tls_cert.read_bytes() if args.tls_cert else None,
    )
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return grpc.secure_channel(args.address, creds, options=options)


def _parse_json_object(text: str, flag: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag}: expected a JSON object, got {type(value).__name__}")
    return value


def _request(args: argparse.Namespace, pb: Any) -> tuple[str, Any]:
    """(method name, request message) for the subcommand."""
    from pdscale.controller.admin.convert import dict_to_struct  # noqa: PLC0415

    modes = {"exact": pb.OVERRIDE_MODE_EXACT, "min": pb.OVERRIDE_MODE_MIN, "max": pb.OVERRIDE_MODE_MAX}
    c = args.admin_command
    if c == "status":
        return "GetStatus", pb.GetStatusRequest()
    if c == "pools":
        return "ListPools", pb.ListPoolsRequest()
    if c == "forecast":
        return "GetForecast", pb.GetForecastRequest(pool=args.pool)
    if c == "decisions":
        req = pb.ListDecisionsRequest(pool=args.pool, page_size=args.limit, page_token=args.page_token)
        if args.since is not None:
            req.since_s = args.since
        if args.until is not None:
            req.until_s = args.until
        return "ListDecisions", req
    if c == "watch":
        return "WatchDecisions", pb.WatchDecisionsRequest(pool=args.pool, after_id=args.after_id)
    if c == "explain":
        return "ExplainDecision", pb.ExplainDecisionRequest(id=args.id)
    if c == "pause":
        return "Pause", pb.PauseRequest(pool=args.pool, reason=args.reason)
    if c == "resume":
        return "Resume", pb.ResumeRequest(pool=args.pool)
    if c == "override":
        if args.mode == "clear":
            return "ClearOverride", pb.ClearOverrideRequest(pool=args.pool)
        if args.replicas is None:
            raise ValueError(f"override {args.mode} needs a replica count, e.g. 'override {args.pool} exact 4'")
        req = pb.SetOverrideRequest(pool=args.pool, mode=modes[args.mode], replicas=args.replicas, reason=args.reason)
        if args.ttl is not None:
            req.ttl_s = args.ttl
        return "SetOverride", req
    if c == "policy":
        params = dict_to_struct(_parse_json_object(args.params, "--params"))
        return "SetPolicy", pb.SetPolicyRequest(name=args.name, params=params)
    if c == "slo":
        req = pb.UpdateSLORequest()
        for field, value in (("ttft_ms", args.ttft_ms), ("itl_ms", args.itl_ms), ("quantile", args.quantile)):
            if value is not None:
                setattr(req, field, value)
        return "UpdateSLO", req
    if c == "budget":
        if args.max_gpus == "unlimited":
            return "UpdateBudget", pb.UpdateBudgetRequest(unlimited=True)
        return "UpdateBudget", pb.UpdateBudgetRequest(max_gpus=_int(args.max_gpus, "max_gpus"))
    if c == "dry-run":
        req = pb.DryRunRequest(policy=args.policy, ignore_pause=args.ignore_pause)
        if args.params is not None:
            req.policy_params.CopyFrom(dict_to_struct(_parse_json_object(args.params, "--params")))
        if args.ttft_ms is not None:
            req.ttft_ms = args.ttft_ms
        if args.itl_ms is not None:
            req.itl_ms = args.itl_ms
        if args.budget == "unlimited":
            req.unlimited_budget = True
        elif args.budget is not None:
            req.budget_gpus = _int(args.budget, "--budget")
        for spec in args.override:
            pool, _, rest = spec.partition("=")
            mode, _, n = rest.partition(":")
            if mode not in modes or not pool:
                raise ValueError(f"--override {spec!r}: expected POOL=MODE:N with MODE exact, min or max")
            req.overrides.append(pb.Override(pool=pool, mode=modes[mode], replicas=_int(n, "--override")))
        return "DryRun", req
    return "ListPlugins", pb.ListPluginsRequest()


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what}: expected an integer, got {text!r}") from None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def _render(method: str, data: dict[str, Any], write: Callable[..., None]) -> None:
    from rich.table import Table  # noqa: PLC0415

    if method == "GetStatus":
        budget = data.get("budget_gpus", "none")
        write(
            f"model {data.get('model', '')}  policy {data.get('policy', '')}  ticks {data.get('ticks', 0)}  "
            f"ready {data.get('ready', False)}  GPUs {data.get('gpus_allocated', 0)}/{budget}"
            + ("  PAUSED" if data.get("paused_all") else "")
        )
        src = data.get("sources", {})
        if src:  # where the policy, SLO and budget in force come from (absent from older daemons)
            slo = data.get("slo", {})
            write(
                f"policy {data.get('policy', '')} (from {src.get('policy', '?')})  "
                f"SLO TTFT {_fmt(slo.get('ttft_ms', 0.0))} ms, ITL {_fmt(slo.get('itl_ms', 0.0))} ms, "
                f"quantile {_fmt(slo.get('quantile', 0.0))} (from {src.get('slo', '?')})  "
                f"budget {budget} GPUs (from {src.get('budget_gpus', '?')})"
                + (f"  paused all (from {src['paused_all']})" if data.get("paused_all") else ""),
                markup=False,
            )
            if "admin" in src.values():
                write("admin: changed over the admin API and kept in the state store (wins over the file across "
                      "restarts; `pdscale serve --reset-runtime-state` returns to the file)", markup=False)  # fmt: skip
        if data.get("role", "single") != "single":  # leader election on: say who this is and who leads
            write(
                f"role {data['role']}  identity {data.get('identity', '')}  leader {data.get('leader') or 'none known'}"
            )
        t = Table("pool", "role", "target", "desired", "ready", "starting", "draining", "data", "stale s",
                  "SLO met", "forecast", "guards", "outcome", "replicas from")  # fmt: skip
        for p in data.get("pools", []):
            fcs = ", ".join(f"{f['signal']}={_fmt(f.get('quantiles', {}).get('0.9', f.get('mean', 0.0)))}"
                            for f in p.get("forecasts", [])[:2])  # fmt: skip
            o = p.get("override")
            psrc = p.get("sources", {})
            limits = f"file {p.get('min_replicas', 0)}-{p.get('max_replicas', 0)}"
            paused = f" (paused: {psrc['paused']})" if psrc.get("paused", "file") != "file" else " (paused)"
            t.add_row(
                p["name"] + (paused if p.get("paused") else ""),
                p.get("role", ""),
                str(p.get("target", 0)),
                str(p.get("desired", 0)),
                str(p.get("ready", 0)),
                str(p.get("starting", 0)),
                str(p.get("draining", 0)),
                p.get("data_state", ""),
                _fmt(p["staleness_s"]) if "staleness_s" in p else "-",
                _fmt(p["slo_attainment_ratio"]) if "slo_attainment_ratio" in p else "-",
                fcs,
                ", ".join(p.get("last_guards", [])),
                p.get("last_outcome", ""),
                f"override {o.get('mode', '')} {o.get('replicas', 0)}" if o else limits,
            )
        write(t)
    elif method in ("ListDecisions", "WatchDecisions", "ExplainDecision", "DryRun"):
        decisions = data.get("decisions") or ([data["decision"]] if "decision" in data else [data])
        t = Table("id", "time s", "pool", "prev", "proposed", "target", "dir", "reason", "guards", "outcome")
        for d in decisions:
            for p in d.get("pools", []):
                t.add_row(str(d.get("id", 0)), _fmt(d.get("time_s", 0.0)), p["pool"], str(p.get("previous", 0)),
                          str(p.get("proposed", 0)), str(p.get("target", 0)), p.get("direction", ""),
                          p.get("reason", ""), ", ".join(p.get("guards", [])), p.get("outcome", ""))  # fmt: skip
        write(t)
        for line in data.get("summary", []):
            write(line)
        if data.get("next_page_token"):
            write(f"more: --page-token {data['next_page_token']}")
    elif method == "ListPools":
        t = Table("pool", "role", "GPUs/replica", "min", "max", "cold start s")
        for p in data.get("pools", []):
            t.add_row(p["name"], p.get("role", ""), str(p.get("gpus_per_replica", 0)), str(p.get("min_replicas", 0)),
                      str(p.get("max_replicas", 0)), _fmt(p.get("cold_start_s", 0.0)))  # fmt: skip
        write(t)
    elif method == "ListPlugins":
        t = Table("group", "name", "target", "distribution")
        for p in data.get("plugins", []):
            t.add_row(p["group"], p["name"], p.get("target", ""), p.get("distribution", ""))
        write(t)
    else:
        write(json.dumps(data, indent=2, sort_keys=True))


def run(args: argparse.Namespace) -> int:
    """Make the call; 0 on success, 1 on an RPC error (code and message printed), 2 on bad flags."""
    import grpc  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415

    from pdscale.controller.admin._gen import admin_pb2 as pb  # noqa: PLC0415
    from pdscale.controller.admin._gen import admin_pb2_grpc as pb_grpc  # noqa: PLC0415
    from pdscale.controller.cli.admin_json import to_plain  # noqa: PLC0415
    from pdscale.controller.cli.main import write_json  # noqa: PLC0415

    try:
        method, request = _request(args, pb)
        token = _token(args)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"pdscale admin: {exc}\n")
        return 2
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    console = Console(width=None if sys.stdout.isatty() else 200)
    to_dict = to_plain  # snake_case, numbers as numbers, short enum names (JSON and tables alike)
    with _channel(args) as channel:
        stub = pb_grpc.AdminServiceStub(channel)
        call = getattr(stub, method)
        try:
            if method == "WatchDecisions":
                for seen, msg in enumerate(call(request, metadata=metadata), start=1):
                    data = to_dict(msg)
                    if args.json:
                        write_json(data, args.json)
                    else:
                        _render(method, data, console.print)
                    if args.count and seen >= args.count:
                        break
                return 0
            resp = call(request, metadata=metadata, timeout=args.timeout)
        except grpc.RpcError as exc:
            if exc.code() is grpc.StatusCode.UNAVAILABLE:
                sys.stderr.write(
                    f"pdscale admin {args.admin_command}: no daemon answers at {args.address} "
                    "(is `pdscale serve` running? --address or PDSCALE_ADMIN_ADDRESS picks another)\n"
                )
                return 1
            sys.stderr.write(f"pdscale admin {args.admin_command}: {exc.code().name}: {exc.details()}\n")
            return 1
        except KeyboardInterrupt:
            return 0
    data = to_dict(resp)
    if args.json:
        write_json(data, args.json)
    else:
        _render(method, data, console.print)
    return 0
