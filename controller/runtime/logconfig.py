"""structlog configuration; called once from ``main`` (never at import)."""

from __future__ import annotations

import logging
import sys

import structlog

from pdscale.controller.runtime.redact import redact_event

__all__ = ["compact_console", "configure_logging", "uses_json"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

_COMPACT_KEEP: dict[str, tuple[str, ...]] = {
    "scale_decision": ("pool", "previous", "target", "reason"),
    "actuation_applied": ("pool", "target"),
}
"""Keys a compact console line keeps for these events (the rest is in the JSON logs and ``pdscale admin``)."""
_COMPACT_QUIET = frozenset({"actuator_call", "plan_evaluated", "plan_colocated_budget"})
"""Events a compact console leaves out (``actuation_applied`` says what ``actuator_call`` did)."""


def uses_json(fmt: str = "auto") -> bool:
    """Whether ``fmt`` renders JSON lines here: ``json``, or ``auto`` with stderr not a terminal."""
    return fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())


def compact_console(_logger: object, _method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """A few short lines per tick for a person watching: decisions that change nothing and call-level detail are
    dropped, a decision keeps its pool, old and new target and reason. Only used at info and above."""
    name = event.get("event")
    if name in _COMPACT_QUIET or (name == "scale_decision" and event.get("outcome") == "unchanged"):
        raise structlog.DropEvent
    keep = _COMPACT_KEEP.get(str(name))
    if keep is not None:
        fixed = {"event", "level", "timestamp"}
        return {k: v for k, v in event.items() if k in fixed or k in keep}
    return event


def configure_logging(level: str = "info", fmt: str = "auto", *, compact: bool = False) -> None:
    """JSON lines when stderr is not a TTY (or ``fmt='json'``), readable console output otherwise; secrets masked.
    ``compact`` (console only, not at debug): short lines with the time of day, per-tick detail left out."""
    use_json = uses_json(fmt)
    lvl = _LEVELS.get(level, logging.INFO)
    short = compact and not use_json and lvl > logging.DEBUG
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False, sort_keys=not short, pad_event=20 if short else 30)
    )
    stamp = structlog.processors.TimeStamper(fmt="%H:%M:%S" if short else "iso", utc=not short)
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            redact_event,  # credentials never reach a log line, whichever module logged them
            *([compact_console] if short else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
