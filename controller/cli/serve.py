"""``pdscale serve``: run the daemon from a settings file."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``serve``."""
    p = subparsers.add_parser(
        "serve",
        help="run the daemon: control loop, admin API, /metrics",
        description="Run the control loop with the admin gRPC API and /metrics, /healthz, /readyz. "
        "SIGTERM stops after the current tick; SIGHUP reloads the settings file.",
    )
    p.add_argument("--config", required=True, metavar="FILE", help="YAML settings file")
    p.add_argument("--max-ticks", type=int, default=None, metavar="N", help="stop after N ticks (tests, benches)")
    p.add_argument("--admin-listen", default=None, metavar="HOST:PORT", help="override admin.listen")
    p.add_argument("--telemetry-listen", default=None, metavar="HOST:PORT", help="override telemetry.listen")
    p.add_argument("--state", default=None, metavar="PATH", help="override state.path (SQLite file)")
    p.add_argument(
        "--state-recover",
        action="store_true",
        help="when the state file is damaged, move it aside (<file>.damaged-<UTC time>) and start from an empty state",
    )
    p.add_argument(
        "--reset-runtime-state",
        action="store_true",
        help="drop the admin API's stored changes (policy, SLO, budget, overrides, pauses) so the settings file "
        "applies again; decision history is kept",
    )


def apply_overrides(settings: Any, args: argparse.Namespace) -> Any:
    """Settings with the command line's listen/state overrides applied."""
    updates: dict[str, Any] = {}
    if getattr(args, "admin_listen", None):
        updates["admin"] = settings.admin.model_copy(update={"listen": args.admin_listen})
    if getattr(args, "telemetry_listen", None):
        updates["telemetry"] = settings.telemetry.model_copy(update={"listen": args.telemetry_listen})
    if getattr(args, "state", None):
        updates["state"] = settings.state.model_copy(update={"path": args.state})
    return settings.model_copy(update=updates) if updates else settings


def reset_runtime_state(path: str | None) -> list[str]:
    """Clear the admin changes stored in the state file at ``path``; the names of what was cleared.

    Policy, SLO and budget changes, per-pool overrides and pauses go; decisions, intents and applied targets stay.
    """
    from pdscale.controller.admin.controls import RUNTIME_KEYS  # noqa: PLC0415
    from pdscale.controller.runtime.store import SqliteStore  # noqa: PLC0415

    store = SqliteStore(path, exclusive=True)
    try:
        cleared = [k for k in RUNTIME_KEYS if store.get_value(k) is not None]
        store.delete_values(RUNTIME_KEYS)
        for pool in store.overrides():
            store.delete_override(pool)
            cleared.append(f"override:{pool}")
        paused = store.paused()
        if paused:
            store.set_paused({})
            cleared.extend(f"pause:{p}" for p in sorted(paused))
    finally:
        store.close()
    return cleared


def run(args: argparse.Namespace) -> int:
    """Start the daemon; 0 on a clean stop, 1 on bad settings or a start-up failure."""
    import asyncio  # noqa: PLC0415
    import sqlite3  # noqa: PLC0415
    import time  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from pdscale.controller.daemon import Daemon  # noqa: PLC0415
    from pdscale.controller.runtime.plugins import PluginError  # noqa: PLC0415
    from pdscale.controller.runtime.settings import SettingsError, load_settings  # noqa: PLC0415
    from pdscale.controller.runtime.store import StateInUseError, StoreError, move_aside  # noqa: PLC0415

    if args.max_ticks is not None and args.max_ticks < 1:
        sys.stderr.write(f"--max-ticks must be >= 1, got {args.max_ticks}\n")
        return 2
    try:
        settings = apply_overrides(load_settings(args.config), args)
        if getattr(args, "reset_runtime_state", False):
            import structlog  # noqa: PLC0415

            cleared = reset_runtime_state(settings.state.path)
            structlog.get_logger("pdscale.serve").info("runtime_state_reset", cleared=cleared)
        try:
            daemon = Daemon(settings, config_path=args.config, max_ticks=args.max_ticks)
        except (StoreError, sqlite3.Error) as exc:
            path = settings.state.path
            if not getattr(args, "state_recover", False) or isinstance(exc, StateInUseError) or not path:
                raise
            move_aside(Path(path), time.time())
            daemon = Daemon(settings, config_path=args.config, max_ticks=args.max_ticks)
        return asyncio.run(daemon.run())
    except (SettingsError, PluginError, StoreError, ValueError) as exc:
        sys.stderr.write(f"pdscale serve: {exc}\n")
        return 1
    except sqlite3.Error as exc:  # a locked or damaged state file met after the start-up checks
        hint = "run with --state-recover to move it aside" if "locked" not in str(exc) else "another process holds it"
        sys.stderr.write(f"pdscale serve: state file: {type(exc).__name__}: {exc} ({hint})\n")
        return 1
