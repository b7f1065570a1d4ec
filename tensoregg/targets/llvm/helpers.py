"""The processes that run LLVM's O3 pipeline (``tensoregg.targets.llvm.pipeline``, which says why it
runs apart): a pool of up to ``jobs()`` of them, so that the modules of one model (a module per
kernel) are optimized on several cores at once. Each helper serves one request at a time and is
replaced after ``HELPER_MODULES`` modules (what LLVM keeps per module stays bounded there), or when it
died (a fresh one serves the next request).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from tensoregg.errors import CompileError
from tensoregg.targets.llvm import pipeline

HELPER_MODULES = 64
"""Modules a helper process optimizes before it is replaced: what LLVM keeps per module stays
bounded there (64 x 0.3 MB for modules like examples/tinycnn.onnx's) and none of it in this one."""

PARALLEL_MIN_BYTES = 64 * 1024
"""IR text, beyond the largest module's, below which a compile's modules are built one after another
on one helper: spreading a few small modules over helpers costs more in hand-offs and in helper
restarts than it saves (measured on 2-core Zen 4 under load 5: 40 one-op models, 121 ms per compile
on two helpers against 77 ms on one). 64 KB is about 0.13 s of O3 there."""

JOBS_ENV = "TENSOREGG_COMPILE_JOBS"
"""Names how many helper processes may run at once (default: the CPUs this process may use)."""


def jobs() -> int:
    """How many modules are optimized at once: ``$TENSOREGG_COMPILE_JOBS`` if it is a positive
    integer, else the CPUs this process may use."""
    try:
        wanted = int(os.environ.get(JOBS_ENV, ""))
    except ValueError:
        wanted = 0
    return wanted if wanted > 0 else len(os.sched_getaffinity(0))


@dataclass(frozen=True)
class Request:
    """One module to build: ``kind`` (``object`` or ``assembly``), its IR ``text``, its ``name`` (for
    errors) and the target machine's arguments (``pipeline.target_machine``)."""

    kind: str
    text: str
    name: str
    machine: dict[str, object] = field(default_factory=dict)
    careful: bool = False
    """Optimized without the passes whose output has crashed LLVM's code generators
    (``pipeline.optimize``): the second try of a module whose helper died on it."""


class Helper:
    """One helper process (started on first use) and how many modules it has served."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.served = 0

    def build(self, request: Request) -> bytes:
        """``pipeline.build`` of ``request`` in this helper; CompileError naming the module if LLVM
        refuses it, or if the helper dies on it twice (the second try ``careful``, with a warning)."""
        text = request.text.encode()
        head = json.dumps({"kind": request.kind, "size": len(text), "careful": request.careful,
                           **request.machine}).encode() + b"\n"
        proc = self.process
        if proc is None or proc.poll() is not None or self.served >= HELPER_MODULES:
            self.stop()
            proc = self.process = subprocess.Popen([sys.executable, "-I", pipeline.__file__],
                                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            self.served = 0
        self.served += 1
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(head + text)
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline())
            out = proc.stdout.read(reply["size"])
        except (OSError, ValueError) as exc:
            code = proc.wait()
            self.process = None
            for pipe in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    pipe.close()
            why = (f"LLVM's helper process died (exit status {code}) compiling the generated module "
                   f"{request.name!r}")
            if request.careful:
                raise CompileError(f"{why}, also without unrolling and SLP vectorization") from exc
            # an LLVM bug (its assertions abort): once more without the passes that have set them off
            # (AArch64, LLVM 22: an int32 ReduceL1's unrolled, SLP-vectorized abs-and-add chain)
            warnings.warn(f"{why}; built it again without loop unrolling and SLP vectorization",
                          RuntimeWarning, stacklevel=2)
            return self.build(replace(request, careful=True))
        if reply["error"]:
            raise CompileError(f"LLVM rejected the generated module {request.name!r}: {reply['error']}")
        return out

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()
            proc.wait()
            proc.stdout.close()


class _Pool:
    """The helpers, each lent to one thread at a time."""

    lock = threading.Lock()
    helpers: list[Helper] = []
    idle: queue.SimpleQueue[Helper] = queue.SimpleQueue()


def _borrow() -> Helper:
    with _Pool.lock:
        try:
            return _Pool.idle.get_nowait()
        except queue.Empty:
            pass
        if len(_Pool.helpers) < jobs():
            helper = Helper()
            _Pool.helpers.append(helper)
            return helper
    return _Pool.idle.get()


def build(request: Request) -> bytes:
    """``request`` built by an idle helper (a new one while fewer than ``jobs()`` run, else the next
    one to become idle)."""
    helper = _borrow()
    try:
        return helper.build(request)
    finally:
        _Pool.idle.put(helper)


def build_all(requests: Sequence[Request]) -> list[bytes]:
    """Every request built, on up to ``jobs()`` helpers at once (the largest modules first, so that
    the last one to finish is a small one), or on one helper when the text beyond the largest module
    is under ``PARALLEL_MIN_BYTES``; the first CompileError is raised once all have ended."""
    sizes = sorted(len(r.text) for r in requests)
    if jobs() == 1 or sum(sizes[:-1]) < PARALLEL_MIN_BYTES:
        return [build(r) for r in requests]
    order = sorted(range(len(requests)), key=lambda k: -len(requests[k].text))
    workers = min(jobs(), len(requests))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tensoregg-llvm") as pool:
        futures = {k: pool.submit(build, requests[k]) for k in order}
    return [futures[k].result() for k in range(len(requests))]


def stop_all() -> None:
    """Stop every helper (at exit; a later request starts new ones)."""
    with _Pool.lock:
        helpers, _Pool.helpers, _Pool.idle = _Pool.helpers, [], queue.SimpleQueue()
    for helper in helpers:
        helper.stop()


def _forget() -> None:
    """In a forked child: the parent's helpers and lock are the parent's; the child starts its own."""
    _Pool.lock, _Pool.helpers, _Pool.idle = threading.Lock(), [], queue.SimpleQueue()


atexit.register(stop_all)
os.register_at_fork(after_in_child=_forget)
