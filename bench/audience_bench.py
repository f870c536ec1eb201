#!/usr/bin/python3
"""audience_bench - fan-out of one job over a citizen audience (`make bench-audience`).

    audience_bench.py                 N = 10,000, 100,000 and 1,000,000 citizens
    audience_bench.py --quick         N = 10,000 and 100,000
    audience_bench.py --size 50000 --window 512         other settings

Per N, in a temporary directory: a fresh private redis-server (AOF on,
appendfsync everysec), a fresh heroldd (log level warn) and, shared by all
runs, Debian's nginx answering every POST /hook with 200 (the provider is
never the bottleneck).  N citizens are written straight into Redis
(tests/harness/citizens_gen.py load_uniform): all subscribed to one topic,
webhook chosen, webhook consent confirmed, Europe/Berlin, no quiet hours.

1. Delivery: one bulk job to the topic over the webhook channel; the clock
   runs from the XADD until the job record says state=done.  Reported:
   deliveries/s, heroldd peak RSS (VmHWM of /proc/<pid>/status), and the
   Redis memory of the job's tracking data (MEMORY USAGE ... SAMPLES 0 of
   `P job:<id>:units`, `P job:<id>` and `P job:<id>:later`) scaled to one
   million recipients.  The daily-cap marks (`P cap:<day>`, per citizen and
   day, shared by all jobs of the day) are reported beside it.
2. Expansion: every citizen's webhook consent set to pending, then a
   second job over the same audience: every unit is suppressed without a
   provider call, so the job's duration is the cost of reading and
   deciding.  Reported: citizens/s = N / duration.

Targets (printed next to the figures; a benchmark reports, it never
fails on a target): heroldd peak RSS at most 64 MiB, and at 1M within 10 %
of the 10k run; expansion at least 100,000 citizens/s.  Deliveries/s is
shown against webhook_bench's 30,000/s for reference.  Exit status is
non-zero only when a run broke (a process died, a job did not finish,
units went missing, or the pending job reached the provider).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

import benchlib                   # noqa: E402
from benchlib import (PREFIX, DaemonRun, H, proc_cpu_s, proc_status_kb, procs, redis_cmdstats,
                      redis_cpu_s)
from webhook_bench import NGINX, Nginx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "harness"))
import citizens_gen as G          # noqa: E402

TOPIC = "bench"
TARGET_RSS_MB = 64.0              # heroldd VmHWM, at most
TARGET_RSS_GROWTH = 0.10          # 1M vs 10k, at most
TARGET_EXPANSION = 100000.0       # citizens/s, at least
REFERENCE_RATE = 30000.0          # webhook_bench's delivery target


def job_doc(jid):
    return {"v": 1, "id": jid, "kind": "newsletter", "priority": "bulk", "topic": TOPIC,
            "audience": {"topic": TOPIC}, "channels": ["webhook"],
            "options": {"webhook": {"endpoint": "nginx"}},
            "subject": "Abfuhrtermine Dezember",
            "text": "Die Restmülltonne wird am 3. und 17. Dezember geleert.", "lang": "de"}


def encode(doc):
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


class Run(DaemonRun):
    def __init__(self, args, basedir, nginx, n):
        self.secret = "whsec_" + __import__("base64").b64encode(os.urandom(32)).decode()
        super().__init__(basedir, "n%d" % n, {"HEROLD_WEBHOOK_SECRET": self.secret,
                                              "HEROLD_PSEUDONYM_KEY": os.urandom(16).hex()},
                         fsync="everysec", wrap=args.wrap, lane="bulk")
        self.args, self.nginx, self.n = args, nginx, n

    def config(self, redis_port):
        return {
            "redis": {"host": "127.0.0.1", "port": redis_port, "prefix": PREFIX},
            "queue": {"consumer": "bench-1"},
            "delivery": {"window": self.args.window, "batch": self.args.batch},
            "audience": {"page": self.args.page},
            "http": {"max_host_connections": self.args.connections,
                     "max_total_connections": max(256, self.args.connections)},
            "log": {"level": "warn", "pseudonym_key": "${HEROLD_PSEUDONYM_KEY}"},
            "channels": {"webhook": {
                "max_inflight": max(256, self.args.window),
                "endpoints": [{"name": "nginx", "url": self.nginx.url,
                               "secret": "${HEROLD_WEBHOOK_SECRET}"}]}},
        }

    def start(self):
        super().start(self.config)

    def memory(self, poll, key):
        try:
            return int(poll.call("MEMORY", "USAGE", key, "SAMPLES", "0") or 0)
        except Exception:                 # noqa: BLE001  (missing key: None reply)
            return 0

    def cap_memory(self, poll):
        total, cursor = 0, "0"
        while True:
            cursor, keys = poll.call("SCAN", cursor, "MATCH", PREFIX + "cap:*", "COUNT", "1000")
            total += sum(self.memory(poll, k) for k in keys)
            if cursor == "0":
                return total

    def one_job(self, poll, jid):
        key = PREFIX + "job:" + jid
        req0 = self.nginx.requests()
        cpu0 = proc_cpu_s(self.daemon.pid)
        rcpu0 = redis_cpu_s(poll)[0]
        cmd0 = redis_cmdstats(poll)
        usec0 = redis_cmdstats(poll, "usec")
        t0 = time.monotonic()
        self.enqueue([(jid, encode(job_doc(jid)))])
        self.wait_done(poll, [key], t0, self.args.timeout, interval=0.005)
        wall = time.monotonic() - t0
        cpu = proc_cpu_s(self.daemon.pid) - cpu0
        rcpu = redis_cpu_s(poll)[0] - rcpu0
        cmd1 = redis_cmdstats(poll)
        usec1 = redis_cmdstats(poll, "usec")
        n = self.n
        top = sorted(((usec1[k] - usec0.get(k, 0)) / n, k) for k in usec1)[-4:]
        requests = self.nginx.requests() - req0 - 1     # minus the second stub_status query
        rec = poll.call("HGETALL", key)
        rec = {rec[i]: rec[i + 1] for i in range(0, len(rec), 2)}
        return {"wall": wall, "cpu": cpu, "requests": requests, "record": rec,
                "redis_us": rcpu * 1e6 / n,
                "redis_cmds": (sum(cmd1.values()) - sum(cmd0.values())) / float(n),
                "redis_top": list(reversed(top)),
                "sent": int(rec.get("c:webhook:sent", 0)),
                "failed": int(rec.get("c:webhook:failed", 0)),
                "suppressed": int(rec.get("c:webhook:suppressed", 0)),
                "in_doubt": int(rec.get("c:webhook:in_doubt", 0)),
                "units": int(rec.get("units", 0))}

    def measure(self):
        n = self.n
        host_port = ("127.0.0.1", self.redis.port, None)
        t0 = time.monotonic()
        G.load_uniform(host_port, PREFIX, n, topic=TOPIC, channels=("webhook",))
        load_s = time.monotonic() - t0
        poll = self.redis.client(timeout=120)
        try:
            hwm_idle = proc_status_kb(self.daemon.pid, "VmHWM")
            j1 = "aud-bench-%d-deliver" % n
            d = self.one_job(poll, j1)
            hwm1 = proc_status_kb(self.daemon.pid, "VmHWM")
            mem = {k: self.memory(poll, PREFIX + "job:" + j1 + k) for k in (":units", "", ":later")}
            cap = self.cap_memory(poll)
            t1 = time.monotonic()
            G.set_consent_uniform(host_port, PREFIX, n, "webhook", "pending")
            rewrite_s = time.monotonic() - t1
            j2 = "aud-bench-%d-pending" % n
            e = self.one_job(poll, j2)
            hwm2 = proc_status_kb(self.daemon.pid, "VmHWM")
            mem2 = sum(self.memory(poll, PREFIX + "job:" + j2 + k) for k in (":units", "", ":later"))
        finally:
            poll.close()
        return {"n": n, "load_s": load_s, "rewrite_s": rewrite_s, "deliver": d, "expand": e,
                "rate": n / d["wall"], "expansion": n / e["wall"],
                "heroldd_us": d["cpu"] * 1e6 / n, "expand_us": e["cpu"] * 1e6 / n,
                "hwm_idle_kb": hwm_idle, "hwm1_kb": hwm1, "hwm_kb": hwm2,
                "mem": mem, "mem_total": sum(mem.values()), "mem2_total": mem2, "cap_mem": cap,
                "warnings": self.warnings_logged()}


def problems_of(r):
    out = []
    d, e, n = r["deliver"], r["expand"], r["n"]
    if d["sent"] != n or d["units"] != n:
        out.append("delivery job: sent %d, units %d, want %d" % (d["sent"], d["units"], n))
    if d["requests"] < n:
        out.append("delivery job: nginx answered %d requests, want >= %d" % (d["requests"], n))
    if e["suppressed"] != n or e["sent"] != 0:
        out.append("pending job: suppressed %d, sent %d, want %d and 0" % (e["suppressed"], e["sent"], n))
    if e["requests"] != 0:
        out.append("pending job: %d requests reached the provider, want 0" % e["requests"])
    return out


def mb(kb):
    return (kb or 0) / 1024.0


def print_table(results):
    head = ("%-9s %7s %8s %9s %9s %10s %10s %11s %9s %11s" % (
        "citizens", "load s", "wall s", "deliv/s", "us/deliv", "peak RSS", "track B/u",
        "track MB/1M", "expand s", "citizens/s"))
    print(head)
    print("-" * len(head))
    for r in results:
        per_m = r["mem_total"] * 1e6 / r["n"] / (1024 * 1024)
        print("%-9d %7.1f %8.2f %9.0f %9.1f %6.1f MiB %10.1f %11.1f %9.2f %11.0f" % (
            r["n"], r["load_s"], r["deliver"]["wall"], r["rate"], r["heroldd_us"],
            mb(r["hwm_kb"]), r["mem_total"] / r["n"], per_m, r["expand"]["wall"], r["expansion"]))
    print("%-9s %7s %8s %9s %9s %10s %10s %11s %9s %11s" % (
        "target", "", "", "(%d)" % REFERENCE_RATE, "", "<= %d MiB" % TARGET_RSS_MB, "", "",
        "", ">= %d" % TARGET_EXPANSION))
    print()
    base = next((r for r in results if r["n"] == min(x["n"] for x in results)), None)
    for r in results:
        marks = ["peak RSS %.1f MiB: %s" % (mb(r["hwm_kb"]), "met" if mb(r["hwm_kb"]) <= TARGET_RSS_MB
                                              else "MISSED"),
                 "expansion %.0f/s: %s" % (r["expansion"], "met" if r["expansion"] >= TARGET_EXPANSION
                                           else "MISSED"),
                 "deliveries %.0f/s (webhook_bench reference %d/s: %s)" % (
                     r["rate"], REFERENCE_RATE, "reached" if r["rate"] >= REFERENCE_RATE else "below")]
        print("%d citizens: %s" % (r["n"], "; ".join(marks)))
        print("    tracking data of the delivery job: ledger %d B, record %d B, later %d B "
              "= %.1f B per recipient, %.1f MiB per million; pending job %.1f B per recipient"
              % (r["mem"][":units"], r["mem"][""], r["mem"][":later"], r["mem_total"] / r["n"],
                 r["mem_total"] * 1e6 / r["n"] / 1048576, r["mem2_total"] / r["n"]))
        print("    daily-cap marks (all jobs of the day, per citizen): %.1f MiB, %.1f B per citizen"
              % (r["cap_mem"] / 1048576, r["cap_mem"] / r["n"]))
        print("    heroldd VmHWM: idle %.1f MiB, after delivery %.1f MiB, after expansion %.1f MiB; "
              "CPU %.1f us/delivery, %.1f us/suppressed unit; in doubt %d; warnings logged %d"
              % (mb(r["hwm_idle_kb"]), mb(r["hwm1_kb"]), mb(r["hwm_kb"]), r["heroldd_us"],
                 r["expand_us"], r["deliver"]["in_doubt"], r["warnings"]))
        for label, x in (("delivery", r["deliver"]), ("expansion", r["expand"])):
            print("    Redis during %s: %.1f us CPU and %.1f commands per citizen; command time "
                  "per citizen: %s" % (label, x["redis_us"], x["redis_cmds"], ", ".join(
                      "%s %.2f us" % (k, v) for v, k in x["redis_top"])))
        print("    citizens loaded in %.1f s (%.0f/s, redis-cli --pipe); consent rewrite %.1f s"
              % (r["load_s"], r["n"] / r["load_s"], r["rewrite_s"]))
    big = max(results, key=lambda r: r["n"]) if results else None
    if base is not None and big is not None and big is not base:
        growth = (big["hwm_kb"] - base["hwm_kb"]) / float(base["hwm_kb"])
        print()
        print("peak RSS %d -> %d citizens: %.1f -> %.1f MiB (%+.1f %%): %s (target: within %d %%)"
              % (base["n"], big["n"], mb(base["hwm_kb"]), mb(big["hwm_kb"]), growth * 100,
                 "met" if abs(growth) <= TARGET_RSS_GROWTH else "MISSED", TARGET_RSS_GROWTH * 100))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10,000 and 100,000 citizens only")
    ap.add_argument("--size", type=int, action="append",
                    help="audience size; repeat (default 10000, 100000, 1000000)")
    ap.add_argument("--window", type=int, default=256, help="delivery.window (default 256)")
    ap.add_argument("--batch", type=int, default=128, help="delivery.batch")
    ap.add_argument("--page", type=int, default=256, help="audience.page")
    ap.add_argument("--connections", type=int, default=64, help="http.max_host_connections")
    ap.add_argument("--wrap", help="command prefix for heroldd (valgrind, perf record ...)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per job")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    sizes = args.size or ([10000, 100000] if args.quick else [10000, 100000, 1000000])

    benchlib.require("audience_bench", NGINX, G.REDIS_CLI)

    basedir = tempfile.mkdtemp(prefix="herold-audbench-")
    results, ok, nginx = [], True, None
    print("herold audience benchmark: %s citizens, %d CPUs, redis appendonly yes, appendfsync "
          "everysec; provider nginx (1 worker, keep-alive); heroldd log level warn, window %d, "
          "batch %d, audience.page %d, daily cap on (default)"
          % (", ".join(str(s) for s in sizes), os.cpu_count(), args.window, args.batch, args.page))
    try:
        nginx = Nginx(basedir).start()
        for n in sizes:
            run = Run(args, basedir, nginx, n)
            try:
                run.start()
                r = run.measure()
            except (RuntimeError, procs.Timeout, OSError) as e:
                ok = False
                print("%d citizens: FAILED: %s" % (n, e))
                continue
            finally:
                run.stop()
            results.append(r)
            print("  %8d citizens: %7.0f deliveries/s, peak RSS %.1f MiB, %7.0f citizens/s expansion"
                  % (n, r["rate"], mb(r["hwm_kb"]), r["expansion"]))
            for p in problems_of(r):
                ok = False
                print("    PROBLEM: " + p)
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
        print("(targets are reported, not enforced; track = the job's ledger, record and later "
              "set in Redis; us = heroldd CPU, utime+stime)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
