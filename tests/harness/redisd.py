"""redisd - a private redis-server for one test.

    r = RedisServer(tmpdir)          # AOF on, appendfsync always, noeviction
    r.start()                        # returns when PING answers PONG
    c = r.client(); c.call("PING")
    r.stop(); r.restart()            # same port and dir: the AOF is reloaded
    r.sigstop(); r.sigcont(); r.kill()

The server gets a fresh directory under basedir holding redis.conf, its
data (appendonlydir/), redis.log and redis.out; a loopback TCP port of its
own (procs.free_port); no unix socket; `save ""` (AOF only) and
daemonize no.  Readiness is polled with PING, never slept for.
"""

import os
import signal
import subprocess
import tempfile

import procs
from resp import Client, RespError

REDIS_SERVER = os.environ.get("HEROLD_REDIS_SERVER", "/usr/bin/redis-server")


class RedisServer:
    def __init__(self, basedir, appendonly=True, appendfsync="always",
                 policy="noeviction", extra_conf=None, password=None):
        """extra_conf: dict {directive: value} or list of raw lines.
        password: sets requirepass; client() then authenticates."""
        self.dir = tempfile.mkdtemp(prefix="redis-", dir=basedir)
        self.port = procs.free_port()
        self.password = password
        self.conf_path = os.path.join(self.dir, "redis.conf")
        self.log_path = os.path.join(self.dir, "redis.log")
        self.out_path = os.path.join(self.dir, "redis.out")
        self.proc = None
        self._write_conf(appendonly, appendfsync, policy, extra_conf)

    def _write_conf(self, appendonly, appendfsync, policy, extra_conf):
        lines = [
            "bind 127.0.0.1",
            "port %d" % self.port,
            "daemonize no",
            "supervised no",
            "dir %s" % self.dir,
            "logfile %s" % self.log_path,
            "loglevel notice",
            "save \"\"",
            "appendonly %s" % ("yes" if appendonly else "no"),
            "appendfsync %s" % appendfsync,
            "maxmemory-policy %s" % policy,
            "databases 1",
            "tcp-keepalive 60",
        ]
        if self.password is not None:
            lines.append("requirepass %s" % self.password)
        if isinstance(extra_conf, dict):
            lines += ["%s %s" % (k, v) for k, v in extra_conf.items()]
        elif extra_conf:
            lines += list(extra_conf)
        with open(self.conf_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.conf_path, 0o600)

    # -- lifecycle -------------------------------------------------------

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=30):
        """Launch redis-server and wait until it answers PING (AOF loaded)."""
        if self.alive():
            raise RuntimeError("redis on port %d already running" % self.port)
        out = open(self.out_path, "ab")
        try:
            self.proc = procs.spawn([REDIS_SERVER, self.conf_path],
                                    stdout=out, stderr=out, cwd=self.dir)
        finally:
            out.close()
        procs.wait_until(self._ready, timeout, "redis-server on port %d to answer PING" % self.port)
        return self

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError("redis-server exited with %s at start:\n%s"
                               % (self.proc.returncode, procs.tail(self.log_path, 20)))
        try:
            with self.client(timeout=2) as c:
                return c.call("PING") == "PONG"
        except (OSError, RespError):
            # refused (not listening yet), LOADING (AOF replay), timeout
            return False

    def client(self, timeout=10.0):
        """A new resp.Client on this server (authenticated if needed)."""
        return Client("127.0.0.1", self.port, timeout=timeout, password=self.password)

    def stop(self, timeout=20):
        """SHUTDOWN NOSAVE (the AOF is fsynced, RDB is off anyway); fall
        back to SIGTERM, then SIGKILL."""
        if not self.alive():
            return
        procs.signal_group(self.proc, signal.SIGCONT)
        try:
            with self.client(timeout=5) as c:
                c.call("SHUTDOWN", "NOSAVE")
        except (ConnectionError, OSError):
            pass            # expected: the server closes the connection
        except RespError:
            procs.signal_group(self.proc, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout * procs.SCALE)
        except subprocess.TimeoutExpired:
            procs.signal_group(self.proc, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        procs.kill(self.proc)

    def kill(self):
        """SIGKILL (a process crash: the AOF already holds every write)."""
        if self.proc is not None:
            procs.kill(self.proc)

    def sigstop(self):
        """Freeze the server: connections stay open, nothing answers."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def sigcont(self):
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self, timeout=30):
        """Stop if running, then start again on the same port and dir."""
        self.stop()
        return self.start(timeout=timeout)

    # -- inspection ------------------------------------------------------

    def info(self, section=None):
        """INFO [section] parsed into a dict of str."""
        with self.client() as c:
            raw = c.call("INFO", section) if section else c.call("INFO")
        d = {}
        for line in raw.splitlines():
            if line and not line.startswith("#") and ":" in line:
                k, v = line.split(":", 1)
                d[k] = v
        return d

    def wait_port_closed(self, timeout=10):
        """Wait until nothing accepts on the port (after stop/kill)."""
        import socket

        def closed():
            s = socket.socket()
            s.settimeout(0.5)
            try:
                s.connect(("127.0.0.1", self.port))
                return False
            except OSError:
                return True
            finally:
                s.close()
        procs.wait_until(closed, timeout, "port %d to close" % self.port)

