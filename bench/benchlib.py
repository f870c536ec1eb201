"""benchlib - what bench/webhook_bench.py and bench/email_bench.py share.

    run = DaemonRun(basedir, "10 jobs x 10000", env_extra, fsync="everysec",
                    wrap=None, lane="normal")
    run.start(lambda redis_port: cfg_dict)   # private Redis, heroldd joined its group
    run.enqueue(jobs)                        # [(id, JSON bytes)]: one pipelined XADD
    run.wait_done(keys, deadline)            # every <prefix>job:<id> says state=done
    run.warnings_logged(); run.stop()

plus the /proc and INFO readers the benchmarks measure with.  Each run
gets a fresh Redis (AOF on) and heroldd in a directory of its own under
basedir; processes go through tests/harness/procs.py, so none outlives
the benchmark.
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))

import procs                      # noqa: E402
import redisd                     # noqa: E402
import herold as H                # noqa: E402
from resp import RespError        # noqa: E402

PREFIX = "bench:"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def require(name, *programs):
    """Exit with a clear message unless heroldd, herold and every program
    in programs (absolute paths) are there."""
    missing = H.missing_programs()
    if missing:
        sys.exit("%s: build first (make): missing %s" % (name, ", ".join(missing)))
    for path in programs:
        if not os.access(path, os.X_OK):
            sys.exit("%s: %s not found (scripts/deps.sh --bench)" % (name, path))


# -- /proc readers -----------------------------------------------------------------

def proc_cpu_s(pid):
    """utime+stime of the whole process (all threads), in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_status_kb(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def proc_io(pid, key):
    """A counter of /proc/<pid>/io (rchar: bytes read, sockets included),
    or None when it cannot be read."""
    try:
        with open("/proc/%d/io" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def machine_busy():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(x) for x in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return sum(vals) - idle, sum(vals)


def redis_cpu_s(client):
    """(server CPU, forked children's CPU) in seconds, from INFO cpu."""
    info = client.call("INFO", "cpu")
    d = dict(ln.split(":", 1) for ln in info.splitlines() if ":" in ln)
    return (float(d["used_cpu_sys"]) + float(d["used_cpu_user"]),
            float(d["used_cpu_sys_children"]) + float(d["used_cpu_user_children"]))


def redis_cmdstats(client, field="calls"):
    """{command: calls} (or usec) from INFO commandstats (commands run by
    scripts count too; a script's usec includes its inner commands)."""
    out = {}
    for ln in client.call("INFO", "commandstats").splitlines():
        if ln.startswith("cmdstat_"):
            name, _, rest = ln[len("cmdstat_"):].partition(":")
            kv = dict(x.split("=", 1) for x in rest.split(","))
            out[name] = int(float(kv[field]))
    return out


# -- one private Redis + heroldd -----------------------------------------------------

class DaemonRun:
    """A fresh Redis (AOF on) and heroldd for one batch of jobs."""

    def __init__(self, basedir, name, env_extra=None, *, fsync="everysec", wrap=None,
                 lane="normal"):
        self.name, self.fsync, self.wrap, self.lane = name, fsync, wrap, lane
        self.dir = tempfile.mkdtemp(prefix="run-%s-" % name.replace(" ", ""), dir=basedir)
        self.redis = None
        self.daemon = None
        self.env = H.base_env(env_extra)
        self.cfg_path = os.path.join(self.dir, "herold.json")
        self.log_path = os.path.join(self.dir, "heroldd.log")

    @property
    def stream(self):
        return PREFIX + "jobs:" + self.lane

    def start(self, config):
        """config(redis_port) -> the heroldd config dict."""
        self.redis = redisd.RedisServer(self.dir, appendfsync=self.fsync).start()
        H.write_config(self.cfg_path, config(self.redis.port))
        argv = [H.program("heroldd"), "-c", self.cfg_path]
        if self.wrap:
            argv = self.wrap.split() + argv
        with open(self.log_path, "ab") as f:
            self.daemon = procs.spawn(argv, stdout=f, stderr=f, env=self.env, cwd=self.dir)
        # log level warn hides event=ready: wait for heroldd's consumer to
        # show up in the group instead (it joins with its first XREADGROUP)
        key = self.stream

        def ready():
            self.check_alive("at start")
            with self.redis.client() as c:
                try:
                    cons = c.call("XINFO", "CONSUMERS", key, "heroldd")
                except RespError:           # no stream or group yet
                    return False
            return len(cons) > 0
        procs.wait_until(ready, 120 if self.wrap else 30, "heroldd to join its group")

    def check_alive(self, when):
        if self.daemon.poll() is not None:
            raise RuntimeError("heroldd exited with %s %s:\n%s"
                               % (self.daemon.returncode, when, procs.tail(self.log_path, 20)))

    def enqueue(self, jobs, via="xadd"):
        """jobs: [(id, JSON bytes)].  xadd: one pipelined XADD of them all;
        cli: herold enqueue per job."""
        if via == "xadd":
            with self.redis.client(timeout=60) as c:
                replies = c.pipeline([("XADD", self.stream, "*", "job", data)
                                      for _, data in jobs])
            bad = [r for r in replies if isinstance(r, Exception)]
            if bad:
                raise RuntimeError("XADD failed: %s" % bad[0])
            return
        cli = [H.program("herold"), "-c", self.cfg_path, "enqueue", "-"]
        for jid, data in jobs:
            r = subprocess.run(cli, input=data, capture_output=True, env=self.env, timeout=60)
            words = r.stdout.decode().split()
            if r.returncode != 0 or words[:2] != ["accepted", jid]:
                raise RuntimeError("herold enqueue %s: rc=%d %s %s" % (
                    jid, r.returncode, r.stdout.decode().strip(), r.stderr.decode().strip()))

    def wait_done(self, poll, keys, t0, timeout, interval=0.01):
        """Poll the job records (client poll) until all say state=done;
        raises RuntimeError when heroldd dies or timeout seconds after t0."""
        deadline = t0 + timeout
        while True:
            states = poll.pipeline([("HGET", k, "state") for k in keys])
            if all(s == "done" for s in states):
                return
            self.check_alive("during the run")
            if time.monotonic() > deadline:
                raise RuntimeError("jobs not done after %ds: %s" % (
                    timeout, sorted(set(map(str, states)))))
            time.sleep(interval)

    def counters(self, poll, keys, channel, names=("sent", "failed", "retries", "in_doubt")):
        """{name: sum over the job records of c:<channel>:<name>}."""
        rows = poll.pipeline([("HMGET", k) + tuple("c:%s:%s" % (channel, n) for n in names)
                              for k in keys])
        return {n: sum(int(r[i] or 0) for r in rows) for i, n in enumerate(names)}

    def warnings_logged(self):
        with open(self.log_path, errors="replace") as f:
            return sum(1 for ln in f if re.search(r"\blevel=(warn|error|fatal)\b", ln))

    def stop(self):
        if self.daemon is not None and self.daemon.poll() is None:
            rc = procs.stop(self.daemon, signal.SIGTERM, timeout=30)
            if rc not in (0, None) and not self.wrap:
                print("  note: heroldd exited with %s on SIGTERM" % rc)
        if self.redis is not None:
            self.redis.stop()
