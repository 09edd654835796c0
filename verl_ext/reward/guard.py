"""Time-bounded symbolic equivalence.

sympy can run for minutes (or never return) on adversarial answers such as ``9^{9^{9}}``, and
inside a single C call, so neither a thread nor ``signal.alarm`` can stop it. verl also calls
the reward function from a thread pool, where ``signal`` cannot be used at all. So the symbolic
check runs in a long-lived child process (``_worker.py``); a request that exceeds ``timeout``
seconds gets the child killed (restarted on the next call) and counts as "not equal".
A small pool of such children (``set_symbolic_workers``, default 2) serves concurrent callers.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import warnings

_WORKER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_worker.py")
STARTUP_TIMEOUT_S = 180.0


class _Worker:
    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.timeouts = 0
        self.calls = 0

    def _readline(self, timeout: float) -> str | None:
        assert self.proc is not None and self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], max(timeout, 0.0))
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return line.decode("utf-8", "replace").strip() if line else None

    def _start(self) -> bool:
        self.proc = subprocess.Popen(
            [sys.executable, "-u", _WORKER_FILE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
        )
        if self._readline(STARTUP_TIMEOUT_S) != "ready":
            self._kill()
            warnings.warn("symbolic grading worker did not start; symbolic checks count as not equal")
            return False
        return True

    def _kill(self) -> None:
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait(timeout=10)
            except Exception:
                pass
        self.proc = None

    def equal(self, pred: str, truth: str, timeout: float, method: str = "both") -> bool:
        """Caller holds ``self.lock``."""
        self.calls += 1
        if (self.proc is None or self.proc.poll() is not None) and not self._start():
            return False
        try:
            self.proc.stdin.write((json.dumps([pred, truth, method]) + "\n").encode("utf-8"))
            self.proc.stdin.flush()
        except OSError:
            self._kill()
            return False
        out = self._readline(timeout)
        if out is None:  # ran past the limit (or died): kill, restart lazily
            self.timeouts += 1
            self._kill()
            return False
        return out == "1"


class _Pool:
    def __init__(self, size: int) -> None:
        self.workers = [_Worker() for _ in range(size)]
        self.lock = threading.Lock()
        self.next = 0

    def resize(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"symbolic_workers must be >= 1, got {size}")
        with self.lock:
            while len(self.workers) < size:
                self.workers.append(_Worker())

    def acquire(self) -> _Worker:
        with self.lock:
            workers = list(self.workers)
            start = self.next
            self.next = (self.next + 1) % len(workers)
        for w in workers:  # an idle worker if there is one
            if w.lock.acquire(blocking=False):
                return w
        w = workers[start]
        w.lock.acquire()
        return w

    def close(self) -> None:
        for w in self.workers:
            w._kill()


_POOL = _Pool(2)
atexit.register(_POOL.close)


def set_symbolic_workers(n: int) -> None:
    """Grow the pool of symbolic-check processes to ``n`` (never shrinks; started lazily)."""
    _POOL.resize(int(n))


def symbolic_equal(pred: str, truth: str, timeout: float = 5.0, method: str = "both") -> bool:
    """mathruler ``grade_answer(pred, truth)`` or (``method="both"``) math-verify ``verify(truth, pred)``,
    bounded by ``timeout`` seconds of wall time; False on timeout or error. Thread-safe.
    ``method="mathruler"``: ``grade_answer`` alone (the released reward's check)."""
    w = _POOL.acquire()
    try:
        return w.equal(pred, truth, timeout, method)
    finally:
        w.lock.release()


def timeout_count() -> int:
    """How many symbolic checks in this process ran past their limit so far."""
    return sum(w.timeouts for w in _POOL.workers)
