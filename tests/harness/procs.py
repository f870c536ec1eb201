"""procs - start the processes a test needs and make sure none outlives it.

Every helper process (redis-server, the HTTP mock, heroldd) is started
through spawn(): in a session and process group of its own, so a signal
meant for it never reaches the runner and killpg() also takes its
children (redis forks for AOF rewrites).  Processes started from the
main thread also get PR_SET_PDEATHSIG, so they die even when the runner
itself is killed -9.  kill_all() runs from atexit; Scope kills what was
started inside a `with` block (one test).

Also here: wait_until() (every wait has a deadline, and the deadline is
scaled for sanitizer builds), free_port() (a loopback port outside the
kernel's ephemeral range) and a few /proc readers.
"""

import atexit
import ctypes
import os
import random
import signal
import socket
import subprocess
import threading
import time

# Deadlines are generous and scaled: sanitizer builds run 2-3x slower.
_SANITIZED = os.environ.get("HEROLD_SANITIZED") not in (None, "", "0")
SCALE = float(os.environ.get("HEROLD_DEADLINE_SCALE") or (3.0 if _SANITIZED else 1.0))

_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _prctl = None

_lock = threading.Lock()
_live = []          # Popen objects not yet reaped
_scopes = []        # stack of open Scope objects


def _child_setup():
    """Runs in the child between fork and exec: die with the runner."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def spawn(argv, *, stdout=None, stderr=None, env=None, cwd=None,
          stdin=subprocess.DEVNULL):
    """Start argv in its own session; it is killed at exit or scope end.

    stdout/stderr are file objects or None (inherit).  Returns the Popen.
    """
    in_main = threading.current_thread() is threading.main_thread()
    p = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr,
                         env=env, cwd=cwd, start_new_session=True,
                         preexec_fn=_child_setup if in_main else None)
    with _lock:
        _live.append(p)
        for s in _scopes:
            s.procs.append(p)
    return p


def signal_group(p, sig):
    """Send sig to p's process group (p leads it); False if already gone."""
    if p.poll() is not None:
        return False
    try:
        os.killpg(p.pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        try:
            os.kill(p.pid, sig)
            return True
        except ProcessLookupError:
            return False


def kill(p, timeout=10.0):
    """SIGKILL p's whole process group and reap it.  Idempotent."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    # Once the leader is reaped its pid may be reused: never signal it again.
    with _lock:
        if p in _live and p.poll() is not None:
            _live.remove(p)


def stop(p, sig=signal.SIGTERM, timeout=10.0):
    """Send sig, wait up to timeout, then SIGKILL.  Returns the exit code."""
    if p.poll() is None:
        signal_group(p, signal.SIGCONT)
        signal_group(p, sig)
        try:
            p.wait(timeout=timeout * SCALE)
        except subprocess.TimeoutExpired:
            pass
    kill(p)
    return p.returncode


def kill_all():
    """Kill every process spawn() started that is still alive."""
    with _lock:
        procs = list(_live)
    for p in procs:
        kill(p, timeout=5.0)


def leftovers():
    """Processes started by spawn() that are still running."""
    with _lock:
        return [p for p in _live if p.poll() is None]


atexit.register(kill_all)


class Scope:
    """with Scope(): ... kills everything spawned inside on exit."""

    def __init__(self):
        self.procs = []

    def __enter__(self):
        with _lock:
            _scopes.append(self)
        return self

    def __exit__(self, *exc):
        with _lock:
            _scopes.remove(self)
        for p in self.procs:
            kill(p, timeout=5.0)
        return False


class Timeout(Exception):
    """A wait_until deadline passed."""


def wait_until(fn, timeout, what, interval=0.05):
    """Call fn until it returns something truthy; return that value.

    timeout is in seconds before scaling.  Raises Timeout naming `what`.
    fn may raise to abort the wait early (e.g. the daemon died).
    """
    deadline = time.monotonic() + timeout * SCALE
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise Timeout("timed out after %.0fs waiting for %s" % (timeout * SCALE, what))
        time.sleep(interval)


def sleep_fault(seconds):
    """A deliberate fault duration (Redis stopped for 2 s, ...): not scaled."""
    time.sleep(seconds)


_handed_out = set()


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A free TCP port on 127.0.0.1, never handed out twice in this run.

    Chosen below the ephemeral range, so an outgoing connection can never
    occupy it and a client retrying a closed port cannot connect to
    itself (TCP simultaneous open) while the server is down.
    """
    lo, _ = _ephemeral_range()
    first, last = (20000, lo - 1) if lo > 21000 else (10000, 19999)
    rng = random.Random(os.getpid() ^ int(time.time() * 1000))
    for _ in range(1000):
        port = rng.randint(first, last)
        if port in _handed_out:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _handed_out.add(port)
        return port
    raise RuntimeError("no free loopback port found")


def fd_count(pid):
    """Open file descriptors of pid, or None if it is gone."""
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except (FileNotFoundError, ProcessLookupError):
        return None


def rss_kb(pid):
    """Resident set size of pid in KiB, or None if it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def cmdline(pid):
    """argv of pid joined by spaces, or '' if it is gone."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "surrogateescape")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def tail(path, n=40):
    """Last n lines of a text file ('' if missing)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-n:])
