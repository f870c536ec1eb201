#!/usr/bin/python3
"""webhook_bench - webhook delivery throughput of heroldd (`make bench`).

    webhook_bench.py                  100,000 deliveries per run: 10 jobs x 10,000
                                      and 1 job x 100,000, each at window 256 and 1024
    webhook_bench.py --quick          the same with 10,000 deliveries (smoke run)
    webhook_bench.py --window 64 --window 256 --connections 64    other settings
    webhook_bench.py --only many --deliveries 5000 --window 64 \
        --wrap "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out"
                                      profile heroldd (CPU figures are then the
                                      wrapper's and meaningless)

Starts, in a temporary directory: a private redis-server (AOF on,
appendfsync everysec unless --fsync always), Debian's nginx as the webhook
provider (answers every POST /hook with 200 {"ok":true}, keep-alive), and
a fresh Redis and heroldd (log level warn) per run.  Jobs are built before
the clock starts; the clock runs from the enqueue (one pipelined XADD, or
herold enqueue per job with --enqueue cli) until every job record says
state=done.

Measured per run: deliveries, wall seconds, deliveries/s, heroldd CPU per
delivery (utime+stime of /proc/<pid>/stat), Redis CPU per delivery (INFO
cpu), heroldd peak RSS (VmHWM), and the requests nginx answered.  The
targets are printed next to the figures; a benchmark reports, it never
fails on a target.  Exit status is non-zero only when the run itself broke
(a process died, a job did not finish, deliveries went missing).
"""

import argparse
import base64
import http.client
import json
import os
import shutil
import signal
import sys
import tempfile
import time

from benchlib import (PREFIX, DaemonRun, H, machine_busy, proc_cpu_s,
                      proc_status_kb, procs, redis_cmdstats, redis_cpu_s)

NGINX = os.environ.get("HEROLD_NGINX", "/usr/sbin/nginx")

TARGET_RATE = 30000.0             # deliveries/s, at least
TARGET_HEROLDD_US = 25.0          # heroldd CPU per delivery, at most
TARGET_REDIS_US = 6.0             # Redis CPU per delivery, at most


# -- nginx as the provider -------------------------------------------------------

class Nginx:
    """nginx with its own prefix, conf, pid, temp and log paths, in the
    foreground (daemon off), one worker, running as the current user."""

    def __init__(self, basedir):
        self.dir = tempfile.mkdtemp(prefix="nginx-", dir=basedir)
        self.port = procs.free_port()
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.error_log = os.path.join(self.dir, "error.log")
        self.proc = None
        self._write_conf()

    # What the server answers, and the http-level lines it needs (log
    # formats); a subclass may serve other paths.
    HTTP_EXTRA = ""
    LOCATIONS = """\
        location = /hook {
            default_type application/json;
            return 200 '{"ok":true}';
        }
"""

    def _write_conf(self):
        d = self.dir
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(d, "tmp", sub), exist_ok=True)
        # As root, the workers would drop to nobody/www-data, which cannot
        # write our temp dirs; run them as root too.  As anyone else the
        # master cannot switch users and `user` would only draw a warning.
        user = "user root;\n" if os.geteuid() == 0 else ""
        conf = """\
daemon off;
master_process on;
worker_processes 1;
%(user)serror_log %(d)s/error.log warn;
pid %(d)s/nginx.pid;
lock_file %(d)s/nginx.lock;
worker_rlimit_nofile 8192;
events {
    worker_connections 4096;
}
http {
    access_log off;
%(extra)s    client_body_temp_path %(d)s/tmp/body;
    proxy_temp_path %(d)s/tmp/proxy;
    fastcgi_temp_path %(d)s/tmp/fastcgi;
    uwsgi_temp_path %(d)s/tmp/uwsgi;
    scgi_temp_path %(d)s/tmp/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_buffer_size 64k;
    client_max_body_size 1m;
    server {
        listen 127.0.0.1:%(port)d backlog=4096;
%(locations)s        location = /_status {
            stub_status;
        }
    }
}
""" % {"user": user, "d": d, "port": self.port, "extra": self.HTTP_EXTRA,
       "locations": self.LOCATIONS % {"d": d}}
        with open(self.conf, "w") as f:
            f.write(conf)

    @property
    def url(self):
        return "http://127.0.0.1:%d/hook" % self.port

    def start(self, timeout=15):
        out = open(os.path.join(self.dir, "nginx.out"), "ab")
        try:
            self.proc = procs.spawn([NGINX, "-p", self.dir + "/", "-c", self.conf,
                                     "-e", self.error_log],
                                    stdout=out, stderr=out, cwd=self.dir)
        finally:
            out.close()

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("nginx exited with %s:\n%s\n%s" % (
                    self.proc.returncode, procs.tail(self.error_log, 20),
                    procs.tail(os.path.join(self.dir, "nginx.out"), 20)))
            try:
                return self.requests() is not None
            except (OSError, http.client.HTTPException, ValueError):
                return False
        procs.wait_until(ready, timeout, "nginx on port %d" % self.port)
        return self

    def requests(self):
        """The server's request counter (stub_status), this query included."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            c.request("GET", "/_status")
            r = c.getresponse()
            text = r.read().decode()
            if r.status != 200:
                return None
            # "Active connections: 1\nserver accepts handled requests\n 1 1 1\n..."
            return int(text.splitlines()[2].split()[2])
        finally:
            c.close()

    def cpu_s(self):
        """CPU seconds of the master and its workers."""
        pids = [self.proc.pid]
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                pids += [int(x) for x in f.read().split()]
        except OSError:
            pass
        total = 0.0
        for pid in pids:
            try:
                total += proc_cpu_s(pid)
            except OSError:
                pass
        return total

    def stop(self):
        if self.proc is not None:
            procs.stop(self.proc, signal.SIGQUIT, timeout=10)


# -- one run ---------------------------------------------------------------------------

def build_jobs(tag, njobs, per_job):
    """[(job id, JSON bytes)], built before the clock starts."""
    jobs = []
    for j in range(njobs):
        jid = "bench-%s-%d" % (tag, j)
        doc = {"v": 1, "id": jid, "kind": "announcement", "priority": "normal",
               "channels": ["webhook"],
               "audience": {"recipients": [{"id": "r-%d" % i} for i in range(per_job)]},
               "subject": "Abfuhrtermine Dezember",
               "text": "Die Restmülltonne wird am 3. und 17. Dezember geleert.",
               "lang": "de"}
        jobs.append((jid, json.dumps(doc, ensure_ascii=False,
                                     separators=(",", ":")).encode()))
    return jobs


class Run(DaemonRun):
    """One private Redis + heroldd, one batch of jobs."""

    def __init__(self, args, basedir, nginx, name, njobs, per_job, window):
        self.secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        super().__init__(basedir, name, {"HEROLD_WEBHOOK_SECRET": self.secret,
                                         "HEROLD_PSEUDONYM_KEY": os.urandom(16).hex()},
                         fsync=args.fsync, wrap=args.wrap, lane="normal")
        self.args, self.nginx = args, nginx
        self.njobs, self.per_job, self.window = njobs, per_job, window

    def config(self, redis_port):
        jobs = build_jobs("x", 1, self.per_job)[0][1]
        return {
            "redis": {"host": "127.0.0.1", "port": redis_port, "prefix": PREFIX},
            "queue": {"consumer": "bench-1"},
            "jobs": {"max_recipients": max(10000, self.per_job),
                     "max_bytes": max(1048576, 2 * len(jobs))},
            "delivery": {"window": self.window, "batch": self.args.batch},
            "http": {"max_host_connections": self.args.connections,
                     "max_total_connections": max(256, self.args.connections)},
            "log": {"level": "warn", "pseudonym_key": "${HEROLD_PSEUDONYM_KEY}"},
            "channels": {"webhook": {
                # the channel's own cap (256 by default) must not undercut the window
                "max_inflight": self.args.max_inflight or max(256, self.window),
                "endpoints": [{"name": "nginx", "url": self.nginx.url,
                               "secret": "${HEROLD_WEBHOOK_SECRET}"}]}},
        }

    def start(self):
        super().start(self.config)

    def measure(self):
        jobs = build_jobs(self.name.replace(" ", ""), self.njobs, self.per_job)
        total = self.njobs * self.per_job
        keys = [PREFIX + "job:" + jid for jid, _ in jobs]
        poll = self.redis.client(timeout=30)
        try:
            req0 = self.nginx.requests()
            cpu_d0 = proc_cpu_s(self.daemon.pid)
            cpu_r0 = redis_cpu_s(poll)
            cpu_n0 = self.nginx.cpu_s()
            cmd0 = redis_cmdstats(poll)
            usec0 = redis_cmdstats(poll, "usec")
            busy0, all0 = machine_busy()
            t0 = time.monotonic()
            self.enqueue(jobs, self.args.enqueue)
            t_enq = time.monotonic() - t0
            self.wait_done(poll, keys, t0, self.args.timeout)
            wall = time.monotonic() - t0
            cpu_d = proc_cpu_s(self.daemon.pid) - cpu_d0
            cpu_r1 = redis_cpu_s(poll)
            cpu_r, cpu_rc = cpu_r1[0] - cpu_r0[0], cpu_r1[1] - cpu_r0[1]
            cpu_n = self.nginx.cpu_s() - cpu_n0
            cmd1 = redis_cmdstats(poll)
            usec1 = redis_cmdstats(poll, "usec")
            busy1, all1 = machine_busy()
            hwm = proc_status_kb(self.daemon.pid, "VmHWM")
            c = self.counters(poll, keys, "webhook")
            # the two stub_status queries are not deliveries
            requests = self.nginx.requests() - req0 - 1
        finally:
            poll.close()
        warnings = self.warnings_logged()
        return {"name": self.name, "window": self.window, "deliveries": total,
                "sent": c["sent"], "failed": c["failed"], "retries": c["retries"],
                "in_doubt": c["in_doubt"],
                "requests": requests, "wall": wall, "enqueue_s": t_enq,
                "rate": total / wall, "heroldd_us": cpu_d * 1e6 / total,
                "redis_us": cpu_r * 1e6 / total, "redis_children_us": cpu_rc * 1e6 / total,
                "nginx_us": cpu_n * 1e6 / total,
                "evalsha": cmd1.get("evalsha", 0) - cmd0.get("evalsha", 0),
                "redis_cmds": sum(cmd1.values()) - sum(cmd0.values()),
                "redis_top": sorted(((usec1[k] - usec0.get(k, 0)) / total, k) for k in usec1)[-4:],
                "machine_busy": 100.0 * (busy1 - busy0) / max(1, all1 - all0),
                "hwm_kb": hwm, "log_warnings": warnings}


# -- output --------------------------------------------------------------------------

def print_table(results):
    head = "%-16s %6s %10s %7s %9s %11s %9s %9s" % (
        "run", "window", "deliveries", "wall s", "deliv/s", "heroldd us", "redis us",
        "peak RSS")
    print(head)
    print("-" * len(head))
    for r in results:
        print("%-16s %6d %10d %7.2f %9.0f %11.1f %9.1f %6.1f MiB" % (
            r["name"], r["window"], r["deliveries"], r["wall"], r["rate"], r["heroldd_us"],
            r["redis_us"], (r["hwm_kb"] or 0) / 1024.0))
    print("%-16s %6s %10s %7s %9s %11s %9s %9s" % (
        "target", "", "", "", ">= %d" % TARGET_RATE, "<= %g" % TARGET_HEROLDD_US,
        "<= %g" % TARGET_REDIS_US, ""))
    print()
    for r in results:
        marks = ["rate %s" % ("met" if r["rate"] >= TARGET_RATE else "MISSED"),
                 "heroldd CPU %s" % ("met" if r["heroldd_us"] <= TARGET_HEROLDD_US
                                     else "MISSED"),
                 "Redis CPU %s" % ("met" if r["redis_us"] <= TARGET_REDIS_US else "MISSED")]
        print("%s, window %d: %s" % (r["name"], r["window"], ", ".join(marks)))
        print("    sent %d, failed %d, retries %d, in doubt %d, nginx requests %d, "
              "enqueue took %.2f s, heroldd warnings logged %d" % (
                  r["sent"], r["failed"], r["retries"], r["in_doubt"], r["requests"],
                  r["enqueue_s"], r["log_warnings"]))
        print("    Redis: %.1f commands per delivery (scripts' inner calls included), "
              "%d EVALSHA (%.1f deliveries each), forked children %.1f us/delivery" % (
                  r["redis_cmds"] / r["deliveries"], r["evalsha"],
                  r["deliveries"] / max(1, r["evalsha"]), r["redis_children_us"]))
        print("    Redis command time per delivery (commandstats usec): %s" % ", ".join(
            "%s %.2f us" % (k, v) for v, k in reversed(r["redis_top"])))
        print("    nginx CPU %.1f us/delivery; all CPUs %.0f%% busy during the run "
              "(other load on this machine included)" % (r["nginx_us"], r["machine_busy"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10,000 deliveries per run")
    ap.add_argument("--window", type=int, action="append",
                    help="delivery.window; repeat to compare (default: 256 and 1024)")
    ap.add_argument("--connections", type=int, default=64, help="http.max_host_connections")
    ap.add_argument("--max-inflight", type=int,
                    help="channels.webhook.max_inflight (default: the window, at least 256)")
    ap.add_argument("--batch", type=int, default=128, help="delivery.batch")
    ap.add_argument("--fsync", choices=("everysec", "always"), default="everysec",
                    help="Redis appendfsync (default everysec)")
    ap.add_argument("--enqueue", choices=("xadd", "cli"), default="xadd",
                    help="xadd: one pipelined XADD of every job (default); cli: herold "
                         "enqueue per job (its validation then competes for the CPUs)")
    ap.add_argument("--only", choices=("many", "one"),
                    help="only 10 jobs x N/10 (many) or 1 job x N (one)")
    ap.add_argument("--deliveries", type=int, help="deliveries per run (default 100000)")
    ap.add_argument("--wrap", help="command prefix for heroldd (valgrind, perf record ...)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per run")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()

    total = args.deliveries or (10000 if args.quick else 100000)
    windows = args.window or [256, 1024]
    shapes = [("10 jobs", 10, total // 10), ("1 job", 1, total)]
    if args.only == "many":
        shapes = shapes[:1]
    elif args.only == "one":
        shapes = shapes[1:]

    missing = H.missing_programs()
    if missing:
        sys.exit("webhook_bench: build first (make): missing %s" % ", ".join(missing))
    if not os.access(NGINX, os.X_OK):
        sys.exit("webhook_bench: %s not found (apt-get install nginx-light)" % NGINX)

    basedir = tempfile.mkdtemp(prefix="herold-bench-")
    results, ok = [], True
    nginx = None
    print("herold webhook benchmark: %d deliveries per run, %d CPUs, redis appendonly yes, "
          "appendfsync %s, enqueue via %s" % (total, os.cpu_count(), args.fsync,
                                              "one pipelined XADD" if args.enqueue == "xadd" else "herold enqueue"))
    print("provider: nginx %s (1 worker, keep-alive), heroldd log level warn, "
          "max_host_connections %d, batch %d" % (NGINX, args.connections, args.batch))
    try:
        nginx = Nginx(basedir).start()
        for window in windows:
            for name, njobs, per_job in shapes:
                label = "%s x %d" % (name, per_job)
                run = Run(args, basedir, nginx, label, njobs, per_job, window)
                try:
                    run.start()
                    r = run.measure()
                except (RuntimeError, procs.Timeout, OSError) as e:
                    ok = False
                    print("%s (window %d): FAILED: %s" % (label, window, e))
                    continue
                finally:
                    run.stop()
                results.append(r)
                print("  %-16s window %5d: %6.0f deliveries/s, %5.1f us heroldd, %4.1f us "
                      "redis per delivery" % (label, window, r["rate"], r["heroldd_us"],
                                              r["redis_us"]))
                if r["sent"] != r["deliveries"] or r["requests"] < r["deliveries"]:
                    ok = False
                    print("    PROBLEM: %d deliveries, %d recorded sent, %d requests at nginx"
                          % (r["deliveries"], r["sent"], r["requests"]))
    finally:
        if nginx is not None:
            nginx.stop()
        procs.kill_all()
        if args.keep or not ok:
            print("files kept in %s" % basedir)
        else:
            shutil.rmtree(basedir, ignore_errors=True)
    if results:
        print()
        print_table(results)
        print("(targets are reported, not enforced; heroldd and Redis CPU in microseconds "
              "per delivery, utime+stime)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
