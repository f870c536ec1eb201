#!/usr/bin/python3
"""flow_bench - an urgent alert while a bulk newsletter is in flight (`make bench-flow`).

    flow_bench.py                     bulk 1,000,000, alert 10,000, 5 runs, burst 50 x 200
    flow_bench.py --quick             bulk 100,000, alert 2,000, 3 runs, 1 burst (smoke run)
    flow_bench.py --bulk 300000 --alert 10000 --runs 10 --window 256
    flow_bench.py --set flow.urgent_reserve=32     any config field (JSON value)
    flow_bench.py --quick --no-bulk   baseline: the same alerts on an idle daemon

In a temporary directory: a private redis-server (AOF on, appendfsync
everysec), heroldd (log level warn) and Debian's nginx as the provider.
Both webhook endpoints point at the same nginx (one host, so bulk and
alert requests share curl's connection pool as they would at a real
provider): "bulk" -> POST /bulk, not logged; "alert" -> POST /alert,
logged with nginx's $msec and the request's webhook-id header.  The
webhook-id is msg_ + the unit's idempotency key, the first 16 bytes of
SHA-256(job NUL channel NUL recipient) in hex (fanout_idem_key): the
benchmark computes it for every (alert, citizen) and so knows, for each
alert, when the provider saw its first and its last request.

Citizens (tests/harness/citizens_gen.py load_uniform): --bulk citizens on
topic "flowbench-news"; the first --alert of them also on topic
"flowbench-alarm".  webhook chosen and consented, no quiet hours.  The
daily cap stays on, set to 1000 so that the refill newsletters below are
never capped away.  After loading, the AOF is rewritten (BGREWRITEAOF,
waited for), so Redis's automatic rewrite does not fork in mid-run.

1. A bulk newsletter (kind newsletter, priority bulk) to the news topic.
   Once nginx answers its requests the clock waits --warmup seconds.
2. --runs times: the bulk rate over --measure seconds ("before": nginx
   request counter); one urgent alert (kind alert) to the alarm topic,
   XADD on the urgent stream, clock started just before the XADD; wait
   until nginx logged a request for every alert citizen and the job
   record says done; the bulk rate over --measure seconds again ("after").  Latencies per run: XADD to
   the first and to the last request; p50 and p99 (nearest rank) are over
   the runs, so with 5 runs p99 is the slowest run.  Also shown: XADD to
   the job record saying state=running (the begin script; polled every
   ms), and the bulk rate between the XADD and the moment the alert was
   seen complete ("during"), and the CPU use over the "before" window
   (the machine's, /proc/stat; heroldd's, utime+stime per wall second).
3. --burst-runs times: --burst alerts of --burst-size citizens each
   (overlapping windows of the alert citizens, audience "citizens"), one
   pipelined XADD of them all; XADD to the first request of any, to the
   latest first request (the slowest alert to start), and to the last
   request of all.
Before each run and burst, another newsletter is enqueued if what is left
of the bulk would not outlast it at the measured rate, so the bulk is
always in flight.

Targets (printed next to the figures; a benchmark reports, it never fails
on a target): first request p99 <= 20 ms; last request p99 <= 1 s (the
10,000-citizen alert completely submitted while the bulk backlog waits);
the whole burst out within 5 s.  Exit status is non-zero only when a run
broke (a process died, an alert did not reach every citizen in
--timeout seconds, the bulk stopped).
"""

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time

import benchlib                   # noqa: E402
from benchlib import PREFIX, DaemonRun, H, machine_busy, proc_cpu_s, procs
from webhook_bench import NGINX, Nginx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "harness"))
import citizens_gen as G          # noqa: E402

NEWS_TOPIC = "flowbench-news"
ALARM_TOPIC = "flowbench-alarm"
TARGET_FIRST_P99 = 0.020          # s, XADD to the alert's first provider request
TARGET_LAST_P99 = 1.0             # s, XADD to its last
TARGET_BURST = 5.0                # s, XADD of the burst to the last request of all


# -- the provider ------------------------------------------------------------------------

class ProviderNginx(Nginx):
    """webhook_bench's nginx, with /bulk (not logged) and /alert (logged
    with the time and the webhook-id of each request)."""

    # $msec is the time of the log write, right after the request was
    # read and answered (return 200 needs no upstream), in ms.  The buffer
    # keeps nginx from one write() per request; flush bounds how late a
    # line reaches the file, not its timestamp.
    HTTP_EXTRA = "    log_format alert '$msec $http_webhook_id';\n"
    LOCATIONS = """\
        location = /bulk {
            default_type application/json;
            return 200 '{"ok":true}';
        }
        location = /alert {
            access_log %(d)s/alert.log alert buffer=64k flush=10ms;
            default_type application/json;
            return 200 '{"ok":true}';
        }
"""

    def _write_conf(self):
        self.alert_log = os.path.join(self.dir, "alert.log")
        super()._write_conf()

    def endpoint(self, path):
        return "http://127.0.0.1:%d/%s" % (self.port, path)


class AlertLog:
    """Reads nginx's alert log as it grows: (unix seconds, idempotency key)."""

    def __init__(self, path):
        self.path, self.offset, self.rest = path, 0, b""

    def read(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.rest + data
        lines = data.split(b"\n")
        self.rest = lines.pop()
        out = []
        for ln in lines:
            parts = ln.split()
            if len(parts) == 2 and parts[1].startswith(b"msg_"):
                out.append((float(parts[0]), parts[1][4:].decode()))
        return out


def idem_key(job_id, channel, rcpt):
    """fanout_idem_key: hex of the first 16 bytes of SHA-256(job NUL channel NUL rcpt)."""
    return hashlib.sha256(b"%s\0%s\0%s" % (job_id.encode(), channel.encode(),
                                           rcpt.encode())).hexdigest()[:32]


class Seen:
    """First and last request time and request count of each tracked job."""

    def __init__(self):
        self.owner = {}           # idempotency key -> job id
        self.first, self.last, self.count, self.keys = {}, {}, {}, {}
        self.dups, self.stray = 0, 0
        self.hit = set()

    def track(self, job_id, rcpt_ids):
        for r in rcpt_ids:
            self.owner[idem_key(job_id, "webhook", r)] = job_id
        self.count[job_id] = 0
        self.keys[job_id] = len(rcpt_ids)

    def add(self, rows):
        for t, key in rows:
            jid = self.owner.get(key)
            if jid is None:
                self.stray += 1
                continue
            if key in self.hit:
                self.dups += 1
                continue
            self.hit.add(key)
            self.count[jid] += 1
            if jid not in self.first or t < self.first[jid]:
                self.first[jid] = t
            if jid not in self.last or t > self.last[jid]:
                self.last[jid] = t

    def complete(self, jids):
        return all(self.count[j] >= self.keys[j] for j in jids)


# -- jobs ---------------------------------------------------------------------------------

def encode(doc):
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


def news_doc(jid):
    return {"v": 1, "id": jid, "kind": "newsletter", "priority": "bulk", "topic": NEWS_TOPIC,
            "audience": {"topic": NEWS_TOPIC}, "channels": ["webhook"],
            "options": {"webhook": {"endpoint": "bulk"}},
            "subject": "Stadtnachrichten Dezember",
            "text": "Der Weihnachtsmarkt öffnet am 28. November auf dem Marktplatz.",
            "lang": "de"}


def alert_doc(jid, audience):
    return {"v": 1, "id": jid, "kind": "alert", "priority": "urgent", "topic": ALARM_TOPIC,
            "audience": audience, "channels": ["webhook"],
            "options": {"webhook": {"endpoint": "alert"}},
            "subject": "Unwetterwarnung",
            "text": "Amtliche Warnung vor schwerem Gewitter bis 22 Uhr. Meiden Sie Keller "
                    "und Unterführungen.",
            "lang": "de"}


# -- statistics ---------------------------------------------------------------------------

def pct(values, p):
    """Nearest-rank percentile, None for no values."""
    v = sorted(x for x in values if x is not None)
    if not v:
        return None
    return v[max(0, int(math.ceil(p / 100.0 * len(v))) - 1)]


def ms(s):
    return "-" if s is None else "%.1f" % (s * 1000)


# -- the run ------------------------------------------------------------------------------

class FlowRun(DaemonRun):
    def __init__(self, args, basedir, nginx):
        super().__init__(basedir, "flow", {"HEROLD_PSEUDONYM_KEY": os.urandom(16).hex()},
                         fsync="everysec", wrap=args.wrap, lane="bulk")
        self.args, self.nginx = args, nginx
        self.log = AlertLog(nginx.alert_log)
        self.seen = Seen()
        self.poll = None
        self.news = []            # [job id]
        self.nnews = 0
        self.rate_est = None
        self.problems = []

    def config(self, redis_port):
        a = self.args
        cfg = {
            "redis": {"host": "127.0.0.1", "port": redis_port, "prefix": PREFIX},
            "queue": {"consumer": "bench-1"},
            "delivery": {"window": a.window, "batch": a.batch},
            "audience": {"page": a.page, "daily_cap": 1000},
            "http": {"max_host_connections": a.connections,
                     "max_total_connections": max(256, a.connections)},
            "log": {"level": "warn", "pseudonym_key": "${HEROLD_PSEUDONYM_KEY}"},
            "channels": {"webhook": {
                "max_inflight": max(256, a.window),
                "endpoints": [{"name": "bulk", "url": self.nginx.endpoint("bulk"),
                               "secret": "${HEROLD_WEBHOOK_SECRET}"},
                              {"name": "alert", "url": self.nginx.endpoint("alert"),
                               "secret": "${HEROLD_WEBHOOK_SECRET}"}]}},
        }
        if a.max_active_jobs:
            cfg["queue"]["max_active_jobs"] = a.max_active_jobs
        for path, value in a.set or ():
            d = cfg
            keys = path.split(".")
            for k in keys[:-1]:
                d = d.setdefault(k, {})
            d[keys[-1]] = value
        self.cfg = cfg
        return cfg

    # -- citizens and the bulk --------------------------------------------------------

    def load(self):
        a = self.args
        target = ("127.0.0.1", self.redis.port, None)
        t0 = time.monotonic()
        G.load_uniform(target, PREFIX, a.bulk, topic=NEWS_TOPIC, channels=("webhook",))
        # the same records again with the alarm topic added (HSET keeps the rest)
        G.load_uniform(target, PREFIX, a.alert, topic=ALARM_TOPIC, channels=("webhook",))
        self.load_s = time.monotonic() - t0
        self.poll = self.redis.client(timeout=120)
        # Rewrite the AOF now: loading made it large, and an automatic
        # rewrite (a fork of the whole data set) in the middle of a run
        # would take a CPU from the measurement.
        t1 = time.monotonic()
        try:
            self.poll.call("BGREWRITEAOF")
        except Exception:             # noqa: BLE001  (one is running already)
            pass

        def rewritten():
            info = self.poll.call("INFO", "persistence")
            d = dict(ln.split(":", 1) for ln in info.splitlines() if ":" in ln)
            return (d.get("aof_rewrite_in_progress", "0").strip() == "0"
                    and d.get("aof_rewrite_scheduled", "0").strip() == "0")
        procs.wait_until(rewritten, 600, "the AOF rewrite after loading", interval=0.2)
        self.rewrite_s = time.monotonic() - t1
        self.used_memory = self.poll.call("INFO", "memory")

    def xadd(self, lane, docs):
        replies = self.poll.pipeline([("XADD", PREFIX + "jobs:" + lane, "*", "job", encode(d))
                                      for d in docs])
        bad = [r for r in replies if isinstance(r, Exception)]
        if bad:
            raise RuntimeError("XADD failed: %s" % bad[0])
        return replies

    def add_news(self):
        self.nnews += 1
        jid = "flow-news-%d" % self.nnews
        self.xadd("bulk", [news_doc(jid)])
        self.news.append(jid)
        return jid

    def news_sent(self):
        rows = self.poll.pipeline([("HGET", PREFIX + "job:" + j, "c:webhook:sent")
                                   for j in self.news])
        return sum(int(r or 0) for r in rows)

    def news_left(self):
        return self.args.bulk * len(self.news) - self.news_sent()

    def ensure_bulk(self, seconds):
        """Enqueue another newsletter when the bulk left would not last
        `seconds` at the estimated rate (with a margin)."""
        if self.args.no_bulk:
            return
        need = (self.rate_est or 20000.0) * seconds * 1.5 + 2 * self.args.page * 4
        if self.news_left() < need:
            jid = self.add_news()
            print("    (bulk nearly drained: newsletter %s enqueued)" % jid)
            # let its first pages be read before anything is measured
            time.sleep(1.0)

    def requests(self):
        return self.nginx.requests()

    def rate(self, seconds):
        """Provider requests per second over `seconds` (nginx's counter, the
        query itself subtracted), and the CPU busy shares of the machine
        (all CPUs) and of heroldd (of one CPU: it runs one event loop)."""
        b0, c0 = machine_busy(), proc_cpu_s(self.daemon.pid)
        r0, t0 = self.requests(), time.monotonic()
        time.sleep(seconds)
        r1, t1 = self.requests(), time.monotonic()
        b1, c1 = machine_busy(), proc_cpu_s(self.daemon.pid)
        busy = (b1[0] - b0[0]) / float(max(1, b1[1] - b0[1]))
        return (r1 - r0 - 1) / (t1 - t0), (busy, (c1 - c0) / (t1 - t0))

    def start_bulk(self):
        if self.args.no_bulk:
            self.rate_est = 0.0
            return
        self.add_news()
        r0 = self.requests()
        procs.wait_until(lambda: self.requests() > r0 + 1000, 120, "the newsletter to start")
        time.sleep(self.args.warmup)
        self.rate_est, _ = self.rate(1.0)
        if self.rate_est < 100:
            raise RuntimeError("the newsletter is not being delivered (%.0f/s)" % self.rate_est)

    # -- waiting for alerts --------------------------------------------------------------

    def wait_alerts(self, jids, t0, probe=None):
        """Read nginx's log until every citizen of every job in jids was
        requested.  probe: a job id whose record is polled (every ms, until
        it says running) for the begin time.  Returns (seen complete at,
        begin time or None)."""
        deadline = time.monotonic() + self.args.timeout
        key = PREFIX + "job:" + probe if probe else None
        begin = None
        while True:
            if key is not None and begin is None:
                if self.poll.call("HGET", key, "state") in ("running", "done"):
                    begin = time.time() - t0
                elif time.monotonic() < deadline:
                    time.sleep(0.001)
                    continue
            self.seen.add(self.log.read())
            if self.seen.complete(jids):
                return time.time(), begin
            self.check_alive("during an alert")
            if time.monotonic() > deadline:
                missing = sum(self.seen.keys[j] - self.seen.count[j] for j in jids)
                raise RuntimeError("%d alert requests not seen after %ds"
                                   % (missing, self.args.timeout))
            time.sleep(0.005)

    def wait_jobs_done(self, jids, timeout=60):
        keys = [PREFIX + "job:" + j for j in jids]
        self.wait_done(self.poll, keys, time.monotonic(), timeout)

    # -- one alert while the bulk runs ----------------------------------------------------

    def one_alert(self, i):
        a = self.args
        jid = "flow-alert-%d" % i
        rcpts = [G.uniform_id(k) for k in range(a.alert)]
        self.seen.track(jid, rcpts)
        doc = alert_doc(jid, {"topic": ALARM_TOPIC})
        self.ensure_bulk(a.measure * 2 + 3 + a.settle)
        time.sleep(a.settle)
        before, busy = self.rate(a.measure)
        news0 = self.news_sent()
        r0 = self.requests()
        t0 = time.time()
        entry = self.xadd("urgent", [doc])[0]
        seen_at, begin = self.wait_alerts([jid], t0, probe=None if a.no_probe else jid)
        r1 = self.requests()
        during = (r1 - r0 - 1 - a.alert) / (seen_at - t0)
        self.wait_jobs_done([jid])
        after, busy2 = self.rate(a.measure)
        rec = dict(zip(*[iter(self.poll.call("HGETALL", PREFIX + "job:" + jid))] * 2))
        sent = int(rec.get("c:webhook:sent", 0))
        if sent != a.alert:
            self.problems.append("%s: sent %d, want %d" % (jid, sent, a.alert))
        if self.news_sent() <= news0 and not a.no_bulk:
            self.problems.append("%s: the bulk made no progress around the alert" % jid)
        xadd_ms = int(entry.split("-")[0]) / 1000.0
        return {"job": jid, "begin": begin,
                "first": self.seen.first[jid] - t0, "last": self.seen.last[jid] - t0,
                "xadd_skew": xadd_ms - t0,
                "before": before, "after": after, "during": during,
                "busy": busy, "busy_after": busy2, "sent": sent}

    # -- a burst of alerts ---------------------------------------------------------------

    def burst(self, b):
        a = self.args
        step = max(1, a.burst_size // 2)
        docs, jids = [], []
        for k in range(a.burst):
            jid = "flow-burst-%d-%d" % (b, k)
            start = (k * step) % max(1, a.alert)
            ids = [G.uniform_id((start + x) % a.alert) for x in range(min(a.burst_size, a.alert))]
            self.seen.track(jid, ids)
            docs.append(alert_doc(jid, {"citizens": ids}))
            jids.append(jid)
        self.ensure_bulk(a.measure * 2 + 8 + a.settle)
        time.sleep(a.settle)
        before, _ = self.rate(a.measure)
        t0 = time.time()
        self.xadd("urgent", docs)
        seen_at, _ = self.wait_alerts(jids, t0)
        self.wait_jobs_done(jids)
        after, _ = self.rate(a.measure)
        firsts = [self.seen.first[j] - t0 for j in jids]
        lasts = [self.seen.last[j] - t0 for j in jids]
        return {"first": min(firsts), "slowest_first": max(firsts), "last": max(lasts),
                "first_p50": pct(firsts, 50), "last_p50": pct(lasts, 50),
                "before": before, "after": after, "requests": a.burst * min(a.burst_size, a.alert)}


# -- report -------------------------------------------------------------------------------

def verdict(value, limit):
    if value is None:
        return "not measured"
    return "met" if value <= limit else "MISSED"


def print_report(args, run, alerts, bursts):
    print()
    head = "%-4s %9s %9s %9s %11s %11s %11s %7s %7s" % (
        "run", "begin ms", "first ms", "last ms", "bulk/s bef", "bulk/s dur", "bulk/s aft",
        "machine", "heroldd")
    print(head)
    print("-" * len(head))
    for i, r in enumerate(alerts):
        print("%-4d %9s %9s %9s %11.0f %11.0f %11.0f %6.0f%% %6.0f%%" % (
            i + 1, ms(r["begin"]), ms(r["first"]), ms(r["last"]), r["before"], r["during"],
            r["after"], r["busy"][0] * 100, r["busy"][1] * 100))
    if alerts:
        f = [r["first"] for r in alerts]
        la = [r["last"] for r in alerts]
        bg = [r["begin"] for r in alerts]
        print("%-4s %9s %9s %9s %11.0f %11.0f %11.0f" % (
            "p50", ms(pct(bg, 50)), ms(pct(f, 50)), ms(pct(la, 50)),
            pct([r["before"] for r in alerts], 50), pct([r["during"] for r in alerts], 50),
            pct([r["after"] for r in alerts], 50)))
        print("%-4s %9s %9s %9s" % ("p99", ms(pct(bg, 99)), ms(pct(f, 99)), ms(pct(la, 99))))
        print()
        print("alert of %d citizens with a bulk newsletter in flight, %d runs (p99 over runs = "
              "the slowest run when runs < 100):" % (args.alert, len(alerts)))
        print("  first request  p50 %s ms, p99 %s ms: %s (target p99 <= %d ms)" % (
            ms(pct(f, 50)), ms(pct(f, 99)), verdict(pct(f, 99), TARGET_FIRST_P99),
            TARGET_FIRST_P99 * 1000))
        print("  last request   p50 %s ms, p99 %s ms: %s (target p99 <= %d ms)" % (
            ms(pct(la, 50)), ms(pct(la, 99)), verdict(pct(la, 99), TARGET_LAST_P99),
            TARGET_LAST_P99 * 1000))
        print("  alert submission rate (citizens / last request): p50 %.0f/s" % (
            args.alert / pct(la, 50)))
        print("  bulk deliveries/s: before %.0f, during the alert %.0f, after %.0f (p50 over runs)"
              % (pct([r["before"] for r in alerts], 50), pct([r["during"] for r in alerts], 50),
                 pct([r["after"] for r in alerts], 50)))
        print("  CPU before the alert (p50): machine %.0f %% of %d CPUs, heroldd %.0f %% of one CPU"
              % (pct([r["busy"][0] for r in alerts], 50) * 100, os.cpu_count(),
                 pct([r["busy"][1] for r in alerts], 50) * 100))
        print("  begin = XADD until the job record says running (begin script done; polled "
              "every ms); Redis stream id vs. bench clock at XADD: %+.1f ms p50"
              % (pct([r["xadd_skew"] for r in alerts], 50) * 1000))
    if bursts:
        print()
        print("burst of %d alerts x %d citizens (%d requests), one pipelined XADD, bulk in flight:"
              % (args.burst, min(args.burst_size, args.alert), bursts[0]["requests"]))
        for i, b in enumerate(bursts):
            print("  burst %d: first request %s ms; every alert started by %s ms (p50 alert %s ms);"
                  " last request of all %s ms (p50 alert done %s ms); bulk/s before %.0f, "
                  "after %.0f" % (i + 1, ms(b["first"]), ms(b["slowest_first"]),
                                  ms(b["first_p50"]), ms(b["last"]), ms(b["last_p50"]),
                                  b["before"], b["after"]))
        worst = max(b["last"] for b in bursts)
        print("  all out within %s ms (worst burst): %s (target <= %d ms)" % (
            ms(worst), verdict(worst, TARGET_BURST), TARGET_BURST * 1000))
    print()
    print("duplicate alert requests %d, unexpected ones %d; heroldd warnings logged %d"
          % (run.seen.dups, run.seen.stray, run.warnings_logged()))


def parse_set(s):
    path, sep, value = s.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError("expected PATH=JSON, e.g. flow.urgent_reserve=32")
    try:
        return path, json.loads(value)
    except ValueError:
        return path, value


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="bulk 100,000, alert 2,000, 3 runs, 1 burst (smoke run)")
    ap.add_argument("--bulk", type=int, help="newsletter audience (default 1,000,000)")
    ap.add_argument("--alert", type=int, help="alert audience (default 10,000)")
    ap.add_argument("--runs", type=int, help="alerts, one after another (default 5)")
    ap.add_argument("--burst", type=int, default=50, help="alerts in the burst (default 50)")
    ap.add_argument("--burst-size", type=int, default=200, help="citizens per burst alert")
    ap.add_argument("--burst-runs", type=int, help="bursts (default 3, --quick 1)")
    ap.add_argument("--no-bulk", action="store_true",
                    help="baseline: the alerts and bursts on an idle daemon, no newsletter")
    ap.add_argument("--no-probe", action="store_true",
                    help="do not poll the alert's job record for the begin time")
    ap.add_argument("--measure", type=float, default=3.0,
                    help="seconds per bulk rate measurement (default 3)")
    ap.add_argument("--warmup", type=float, default=3.0,
                    help="seconds of bulk before the first run (default 3)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds between an alert's end and the next measurement")
    ap.add_argument("--window", type=int, default=64,
                    help="delivery.window (default 64, the shipped default: at most "
                         "http.max_host_connections, so no request waits inside curl)")
    ap.add_argument("--batch", type=int, default=128, help="delivery.batch")
    ap.add_argument("--page", type=int, default=256, help="audience.page")
    ap.add_argument("--connections", type=int, default=64, help="http.max_host_connections")
    ap.add_argument("--max-active-jobs", type=int, help="queue.max_active_jobs (default: "
                    "heroldd's)")
    ap.add_argument("--set", type=parse_set, action="append", metavar="PATH=JSON",
                    help="set a config field, e.g. --set flow.urgent_reserve=32 (repeat)")
    ap.add_argument("--wrap", help="command prefix for heroldd (perf record ...)")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per alert or burst")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()
    q = args.quick
    args.bulk = args.bulk or (100000 if q else 1000000)
    args.alert = args.alert or (2000 if q else 10000)
    args.runs = args.runs if args.runs is not None else (3 if q else 5)
    args.burst_runs = args.burst_runs if args.burst_runs is not None else (1 if q else 3)
    if q:
        args.measure = min(args.measure, 2.0)
        args.warmup = min(args.warmup, 2.0)
    if args.alert > args.bulk:
        sys.exit("flow_bench: --alert must not exceed --bulk (alert citizens are bulk citizens)")

    benchlib.require("flow_bench", NGINX, G.REDIS_CLI)

    basedir = tempfile.mkdtemp(prefix="herold-flowbench-")
    ok, nginx, run = True, None, None
    alerts, bursts = [], []
    print("herold flow benchmark: bulk %d citizens, alert %d, %d runs, burst %d x %d (%d bursts); "
          "%d CPUs, redis appendonly yes, appendfsync everysec; provider nginx (1 worker, "
          "keep-alive, one host for both endpoints); heroldd log level warn, window %d, batch %d, "
          "audience.page %d, %d connections%s"
          % (args.bulk, args.alert, args.runs, args.burst, args.burst_size, args.burst_runs,
             os.cpu_count(), args.window, args.batch, args.page, args.connections,
             "".join(", %s=%s" % (p, json.dumps(v)) for p, v in args.set or ())))
    try:
        nginx = ProviderNginx(basedir).start()
        run = FlowRun(args, basedir, nginx)
        run.start(run.config)
        run.load()
        mem = dict(ln.split(":", 1) for ln in run.used_memory.splitlines() if ":" in ln)
        print("  citizens loaded in %.1f s, AOF rewritten in %.1f s; redis used_memory %s"
              % (run.load_s, run.rewrite_s, mem.get("used_memory_human", "?").strip()))
        run.start_bulk()
        print("  bulk started: %.0f deliveries/s" % run.rate_est)
        for i in range(args.runs):
            r = run.one_alert(i + 1)
            alerts.append(r)
            run.rate_est = r["after"] or run.rate_est
            print("  run %d: begin %s ms, first request %s ms, last %s ms; bulk/s before %.0f, "
                  "during %.0f, after %.0f" % (i + 1, ms(r["begin"]), ms(r["first"]),
                                               ms(r["last"]), r["before"], r["during"],
                                               r["after"]))
        for b in range(args.burst_runs):
            r = run.burst(b + 1)
            bursts.append(r)
            print("  burst %d: first request %s ms, every alert started %s ms, last request %s ms"
                  % (b + 1, ms(r["first"]), ms(r["slowest_first"]), ms(r["last"])))
    except (RuntimeError, procs.Timeout, OSError) as e:
        ok = False
        print("FAILED: %s" % e)
    finally:
        if run is not None:
            if alerts or bursts:
                print_report(args, run, alerts, bursts)
            for p in run.problems:
                ok = False
                print("PROBLEM: " + p)
            if run.poll is not None:
                run.poll.close()
            run.stop()
        if nginx is not None:
            nginx.stop()
        procs.kill_all()
        if args.keep or not ok:
            print("files kept in %s" % basedir)
        else:
            shutil.rmtree(basedir, ignore_errors=True)
    print("(targets are reported, not enforced; times from just before the XADD to the "
          "request's log time at nginx, ms resolution)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
