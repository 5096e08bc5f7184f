"""The fit process: ``python -m pdscale.forecasting.fit_worker`` runs the fits ``pdscale.forecasting.fitting`` sends.

Frames are a 4-byte big-endian length and a pickle, both ways: ``(job_id, fn, args)`` in, ``(job_id, ok, value
or exception)`` out. Native thread pools are held to one thread before numpy loads. The parent is the only peer
(stdin/stdout of a private child), so pickle is safe here. EOF on stdin ends the worker.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
from typing import Any, BinaryIO

__all__ = ["main", "read_frame", "write_frame"]

_HEADER = struct.Struct(">I")


def read_frame(stream: BinaryIO) -> Any:
    """One pickled frame, or None at EOF."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    body = stream.read(size)
    if len(body) < size:
        return None
    return pickle.loads(body)  # noqa: S301 - frames come from this process's parent over a private pipe


def write_frame(stream: BinaryIO, obj: Any) -> None:
    """Write one pickled frame and flush."""
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def main() -> int:
    """Serve fits until the parent closes stdin."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything a library prints must not corrupt the frame stream
    while True:
        frame = read_frame(stdin)
        if frame is None:
            return 0
        job_id, fn, args = frame
        try:
            out = (job_id, True, fn(*args))
        except Exception as exc:  # the parent's forecaster falls back and says so
            out = (job_id, False, exc)
        try:
            write_frame(stdout, out)
        except (BrokenPipeError, ValueError):
            return 0  # the parent has gone
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            write_frame(stdout, (job_id, False, RuntimeError(f"fit result not picklable: {exc}")))


if __name__ == "__main__":
    raise SystemExit(main())
