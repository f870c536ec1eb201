#!/usr/bin/python3
"""email_bench - e-mail throughput of heroldd against Postfix's smtp-sink (`make bench`).

    email_bench.py                    a newsletter to 100,000 recipients (10 jobs x
                                      10,000), 2 KB and 20 KB messages, 20 sessions
    email_bench.py --quick            the same with 10,000 recipients (smoke run)
    email_bench.py --size 2048 --window 256 --window 2048    other settings
    email_bench.py --size 2048 --messages 5000 --no-ceiling \\
        --wrap "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out"
                                      profile heroldd (CPU figures are then the
                                      wrapper's and meaningless)

Starts, in a temporary directory: Postfix's smtp-sink on loopback (it
throws every message away and counts them; Postfix itself is never run)
and, per message size, a fresh Redis (AOF on, appendfsync everysec) and
heroldd (log level warn, channels.email.workers sessions, STARTTLS off).
Jobs (kind newsletter, priority bulk, e-mail only) are built before the
clock starts; the clock runs from one pipelined XADD of every job until
every job record says state=done.

In the same run, per size, Postfix's smtp-source -d (sessions reused)
sends the same number of messages of the same size over the same number
of sessions to the same sink: the ceiling of this machine's loopback,
sink and CPUs, against which heroldd's rate is put as a ratio.

Measured per run: messages/s, heroldd CPU per message (utime+stime of
/proc/<pid>/stat), heroldd peak RSS (VmHWM), Redis and sink CPU per
message, the bytes per message the sink read (SMTP commands included),
the ceiling's messages/s and heroldd's share of it.  The targets are
printed next to the figures; a benchmark reports, it never fails on a
target.  Exit status is non-zero only when the run itself broke (a process
died, a job did not finish, messages went missing at the sink).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from benchlib import (PREFIX, DaemonRun, H, machine_busy, proc_cpu_s, proc_io,
                      proc_status_kb, procs, redis_cpu_s)

SMTP_SINK = os.environ.get("HEROLD_SMTP_SINK", "/usr/sbin/smtp-sink")
SMTP_SOURCE = os.environ.get("HEROLD_SMTP_SOURCE", "/usr/sbin/smtp-source")

TARGET_RATE = 15000.0             # messages/s with 2 KB messages, at least
TARGET_RATE_LARGE = 8000.0        # messages/s with 20 KB messages, at least
LARGE = 16384                     # sizes from here on are held to TARGET_RATE_LARGE only
TARGET_RATIO = 0.60               # of the ceiling measured in the same run, at least
TARGET_HEROLDD_US = 40.0          # heroldd CPU per message, at most
TARGET_RSS_MB = 64.0              # heroldd peak RSS, below

# What heroldd puts around the text of a newsletter (headers, MIME,
# List-Unsubscribe with a per-citizen token, SMTP commands aside), so that
# the message on the wire is about --size bytes.  Measured with --dump;
# the sink's bytes per message are printed with every run.
MESSAGE_OVERHEAD = 700

EMAIL_ENV = {"HEROLD_UNSUBSCRIBE_KEY": "bench-unsub-key-0123456789abcdef",
             "HEROLD_PSEUDONYM_KEY": os.urandom(16).hex()}


# -- smtp-sink and smtp-source ------------------------------------------------------

class Sink:
    """Postfix's smtp-sink on 127.0.0.1: takes every message, discards it,
    and with -c keeps running counters ("sess=N quit=N mesg=N\\r") on its
    stdout, one update per message."""

    def __init__(self, basedir, dump=None):
        self.dir = tempfile.mkdtemp(prefix="smtp-sink-", dir=basedir)
        self.port = procs.free_port()
        self.out_path = os.path.join(self.dir, "smtp-sink.out")
        self.dump = dump
        self.proc = None

    def start(self, timeout=15):
        argv = [SMTP_SINK]
        # As root smtp-sink insists on -u (it drops to that user after
        # binding); staying root keeps a --dump directory writable.
        if os.geteuid() == 0:
            argv += ["-u", "root"]
        if self.dump:
            argv += ["-D", os.path.join(os.path.abspath(self.dump), "dump")]
        # -c: counters; -m: sessions it serves at once (default 256)
        argv += ["-c", "-m", "1024", "127.0.0.1:%d" % self.port, "1024"]
        out = open(self.out_path, "ab")
        try:
            self.proc = procs.spawn(argv, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir)
        finally:
            out.close()

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("smtp-sink exited with %s:\n%s" % (
                    self.proc.returncode, procs.tail(self.out_path, 20)))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    return s.recv(512).startswith(b"220")
            except OSError:
                return False
        procs.wait_until(ready, timeout, "smtp-sink on port %d" % self.port)
        return self

    def messages(self):
        """Messages received so far (smtp-sink's own counter)."""
        self.check_alive()
        with open(self.out_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 512))
            tail = f.read().decode("ascii", "replace")
        found = re.findall(r"mesg=(\d+)", tail)
        return int(found[-1]) if found else 0

    def wait_messages(self, n, timeout=10):
        """The counter once it reaches n (smtp-sink counts at the final
        dot, just before it answers; give a last reply time to land)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.messages()
            if got >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.01)

    def cpu_s(self):
        return proc_cpu_s(self.proc.pid)

    def bytes_read(self):
        return proc_io(self.proc.pid, "rchar")

    def check_alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError("smtp-sink exited with %s:\n%s" % (
                self.proc.returncode, procs.tail(self.out_path, 20)))

    def stop(self):
        if self.proc is not None:
            procs.stop(self.proc, signal.SIGTERM, timeout=5)


def ceiling(args, sink, size, total):
    """smtp-source -d over args.workers sessions: messages/s, or raises."""
    argv = [SMTP_SOURCE, "-d", "-s", str(args.workers), "-m", str(total),
            "-l", str(size), "-f", "from@example.org", "-t", "to@example.org",
            "-M", "bench.example.org", "127.0.0.1:%d" % sink.port]
    m0, rchar0, cpu0 = sink.messages(), sink.bytes_read(), sink.cpu_s()
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, timeout=args.timeout)
    wall = time.monotonic() - t0
    got = sink.wait_messages(m0 + total) - m0
    if r.returncode != 0:
        raise RuntimeError("smtp-source exited with %d: %s" % (
            r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace").strip()[-500:]))
    if got != total:
        raise RuntimeError("smtp-source sent %d messages, the sink counted %d" % (total, got))
    rchar1 = sink.bytes_read()
    return {"rate": total / wall, "wall": wall,
            "sink_us": (sink.cpu_s() - cpu0) * 1e6 / total,
            "bytes": (rchar1 - rchar0) / total if rchar0 is not None and rchar1 else None}


# -- one heroldd run --------------------------------------------------------------------

FILLER = ("Die Stadtverwaltung informiert über neue Öffnungszeiten im Bürgerbüro, "
          "die Sperrung der Hauptstraße wegen Bauarbeiten und den Termin der nächsten "
          "Ratssitzung. Weitere Auskünfte gibt das Rathaus gern telefonisch. ")


def qp_len(s):
    """Octets of s quoted-printable encoded (UTF-8; no soft breaks)."""
    return sum(1 if c.isascii() else 3 * len(c.encode()) for c in s)


def newsletter_text(size):
    """A plain-text body that makes the built message about size bytes:
    real German text, so quoted-printable with umlauts (=C3=BC), in lines
    of at most 72 encoded octets (no soft line breaks)."""
    want = max(200, size - MESSAGE_OVERHEAD)
    head, foot = "Liebe Bürgerinnen und Bürger,\n\n", "\n\nIhr Rathaus"
    n = qp_len(head) + qp_len(foot) + 4          # + the CRLFs of the blank lines
    lines, line = [], ""
    words = FILLER.split()
    i = 0
    while n < want:
        w = words[i % len(words)]
        i += 1
        if line and qp_len(line) + 1 + qp_len(w) > 72:
            lines.append(line)
            n += 2                               # CRLF
            line = ""
        n += qp_len(w) + (1 if line else 0)
        line = (line + " " + w) if line else w
    lines.append(line)
    return head + "\n".join(lines) + foot


def build_jobs(tag, njobs, per_job, size):
    """[(job id, JSON bytes)], built before the clock starts."""
    text = newsletter_text(size)
    jobs = []
    for j in range(njobs):
        jid = "bench-%s-%d" % (tag, j)
        base = j * per_job
        doc = {"v": 1, "id": jid, "kind": "newsletter", "priority": "bulk",
               "channels": ["email"],
               "audience": {"recipients": [{"id": "r-%d" % (base + i),
                                            "email": "r%d@example.org" % (base + i)}
                                           for i in range(per_job)]},
               "subject": "Neues aus Musterstadt – Dezember",
               "text": text, "lang": "de"}
        jobs.append((jid, json.dumps(doc, ensure_ascii=False,
                                     separators=(",", ":")).encode()))
    return jobs


class Run(DaemonRun):
    """One private Redis + heroldd, one newsletter."""

    def __init__(self, args, basedir, sink, size, window, njobs, per_job):
        name = "%d B w%d" % (size, window)
        super().__init__(basedir, name, EMAIL_ENV, fsync=args.fsync, wrap=args.wrap,
                         lane="bulk")
        self.args, self.sink, self.size, self.window = args, sink, size, window
        self.njobs, self.per_job = njobs, per_job
        self.jobs = build_jobs("%d-%d" % (size, window), njobs, per_job, size)

    def config(self, redis_port):
        biggest = max(len(data) for _, data in self.jobs)
        a = self.args
        return {
            "redis": {"host": "127.0.0.1", "port": redis_port, "prefix": PREFIX},
            "queue": {"consumer": "bench-1"},
            "jobs": {"max_recipients": max(100000, self.per_job),
                     "max_bytes": max(67108864, 2 * biggest)},
            "delivery": {"window": self.window},
            "log": {"level": "warn", "pseudonym_key": "${HEROLD_PSEUDONYM_KEY}"},
            "channels": {
                # the webhook channel needs an endpoint to load; nothing goes there
                "webhook": {"endpoints": [{"name": "unused", "url": "http://127.0.0.1:9/hook",
                                           "secret": "${HEROLD_WEBHOOK_SECRET}"}]},
                "email": {
                    "relay": {"host": "127.0.0.1", "port": self.sink.port, "starttls": "off"},
                    "from": {"address": "rathaus@musterstadt.example",
                             "name": "Stadt Musterstadt"},
                    "list_id": "nachrichten.musterstadt.example",
                    "unsubscribe": {
                        "url": "https://buergerservice.musterstadt.example/abmelden?t={token}",
                        "mailto": "abmelden@musterstadt.example",
                        "key": "${HEROLD_UNSUBSCRIBE_KEY}"},
                    "workers": a.workers, "max_per_session": a.max_per_session,
                    "queue_max": a.queue_max}},
        }

    def start(self):
        super().start(self.config)

    def measure(self):
        total = self.njobs * self.per_job
        keys = [PREFIX + "job:" + jid for jid, _ in self.jobs]
        poll = self.redis.client(timeout=30)
        try:
            m0, rchar0 = self.sink.messages(), self.sink.bytes_read()
            cpu_d0 = proc_cpu_s(self.daemon.pid)
            cpu_r0 = redis_cpu_s(poll)[0]
            cpu_s0 = self.sink.cpu_s()
            busy0, all0 = machine_busy()
            t0 = time.monotonic()
            self.enqueue(self.jobs)
            t_enq = time.monotonic() - t0
            self.wait_done(poll, keys, t0, self.args.timeout, interval=0.005)
            wall = time.monotonic() - t0
            cpu_d = proc_cpu_s(self.daemon.pid) - cpu_d0
            cpu_r = redis_cpu_s(poll)[0] - cpu_r0
            busy1, all1 = machine_busy()
            hwm = proc_status_kb(self.daemon.pid, "VmHWM")
            c = self.counters(poll, keys, "email")
            received = self.sink.wait_messages(m0 + c["sent"]) - m0
            cpu_s = self.sink.cpu_s() - cpu_s0
            rchar1 = self.sink.bytes_read()
        finally:
            poll.close()
        return {"name": self.name, "size": self.size, "window": self.window,
                "messages": total, "sent": c["sent"], "failed": c["failed"],
                "retries": c["retries"], "in_doubt": c["in_doubt"], "received": received,
                "wall": wall, "enqueue_s": t_enq, "rate": total / wall,
                "heroldd_us": cpu_d * 1e6 / total, "redis_us": cpu_r * 1e6 / total,
                "sink_us": cpu_s * 1e6 / total,
                "bytes": (rchar1 - rchar0) / total if rchar0 is not None and rchar1 else None,
                "machine_busy": 100.0 * (busy1 - busy0) / max(1, all1 - all0),
                "hwm_kb": hwm, "log_warnings": self.warnings_logged()}


# -- output --------------------------------------------------------------------------

def marks(r):
    large = r["size"] >= LARGE
    out = []
    if large:
        out.append("rate %s (>= %d)" % ("met" if r["rate"] >= TARGET_RATE_LARGE else "MISSED",
                                        TARGET_RATE_LARGE))
        return out
    out.append("rate %s" % ("met" if r["rate"] >= TARGET_RATE else "MISSED"))
    if r.get("ratio") is not None:
        out.append("share of ceiling %s" % ("met" if r["ratio"] >= TARGET_RATIO else "MISSED"))
    out.append("heroldd CPU %s" % ("met" if r["heroldd_us"] <= TARGET_HEROLDD_US else "MISSED"))
    out.append("peak RSS %s" % ("met" if (r["hwm_kb"] or 0) / 1024.0 < TARGET_RSS_MB
                                else "MISSED"))
    return out


def fmt_opt(fmt, v, width):
    return (fmt % v) if v is not None else "-".rjust(width)


def print_table(results):
    head = "%-14s %8s %7s %8s %9s %7s %11s %9s %8s %10s" % (
        "run", "messages", "wall s", "msg/s", "ceiling", "ratio", "heroldd us", "peak RSS",
        "sink us", "bytes/msg")
    print(head)
    print("-" * len(head))
    for r in results:
        print("%-14s %8d %7.2f %8.0f %9s %7s %11.1f %5.1f MiB %8.1f %10s" % (
            r["name"], r["messages"], r["wall"], r["rate"],
            fmt_opt("%9.0f", r.get("ceiling"), 9), fmt_opt("%6.0f%%", r.get("ratio") and
                                                           100 * r["ratio"], 7),
            r["heroldd_us"], (r["hwm_kb"] or 0) / 1024.0, r["sink_us"],
            fmt_opt("%10.0f", r["bytes"], 10)))
    print("%-14s %8s %7s %8s %9s %7s %11s %9s" % (
        "target 2 KB", "", "", ">= %d" % TARGET_RATE, "", ">= %d%%" % (100 * TARGET_RATIO),
        "<= %g" % TARGET_HEROLDD_US, "< %g MiB" % TARGET_RSS_MB))
    print("%-14s %8s %7s %8s" % ("target 20 KB", "", "", ">= %d" % TARGET_RATE_LARGE))
    print()
    for r in results:
        print("%s: %s" % (r["name"], ", ".join(marks(r))))
        print("    sent %d, failed %d, retries %d, in doubt %d, sink counted %d, "
              "enqueue took %.2f s, heroldd warnings logged %d" % (
                  r["sent"], r["failed"], r["retries"], r["in_doubt"], r["received"],
                  r["enqueue_s"], r["log_warnings"]))
        c = r.get("ceiling_run")
        print("    Redis CPU %.1f us/message; all CPUs %.0f%% busy during the run "
              "(other load on this machine included)%s" % (
                  r["redis_us"], r["machine_busy"],
                  "; ceiling: %.2f s, sink %.1f us and %s bytes per message" % (
                      c["wall"], c["sink_us"], fmt_opt("%.0f", c["bytes"], 1)) if c else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10,000 messages per run")
    ap.add_argument("--messages", type=int, help="messages per run (default 100000)")
    ap.add_argument("--jobs", type=int, default=10, help="jobs the messages are split into")
    ap.add_argument("--size", type=int, action="append",
                    help="message size in bytes; repeat (default: 2048 and 20480)")
    ap.add_argument("--window", type=int, action="append",
                    help="delivery.window; repeat to compare (default 1024)")
    ap.add_argument("--workers", type=int, default=20,
                    help="channels.email.workers = SMTP sessions, and smtp-source -s")
    ap.add_argument("--max-per-session", type=int, default=100,
                    help="channels.email.max_per_session")
    ap.add_argument("--queue-max", type=int, default=2000, help="channels.email.queue_max")
    ap.add_argument("--fsync", choices=("everysec", "always"), default="everysec",
                    help="Redis appendfsync (default everysec)")
    ap.add_argument("--no-ceiling", action="store_true", help="skip smtp-source")
    ap.add_argument("--dump", metavar="DIR",
                    help="smtp-sink also appends every message to DIR/dump (slow: to look "
                         "at what heroldd sends, not for figures)")
    ap.add_argument("--wrap", help="command prefix for heroldd (valgrind, perf record ...)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per run")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()

    total = args.messages or (10000 if args.quick else 100000)
    njobs = max(1, min(args.jobs, total))
    per_job = total // njobs
    total = njobs * per_job
    sizes = args.size or [2048, 20480]
    windows = args.window or [1024]

    missing = H.missing_programs()
    if missing:
        sys.exit("email_bench: build first (make): missing %s" % ", ".join(missing))
    for prog in (SMTP_SINK, SMTP_SOURCE):
        if not os.access(prog, os.X_OK):
            sys.exit("email_bench: %s not found (apt-get install postfix; the benchmark "
                     "never runs postfix itself)" % prog)

    basedir = tempfile.mkdtemp(prefix="herold-email-bench-")
    results, ok = [], True
    sink = None
    print("herold e-mail benchmark: newsletter of %d messages per run (%d jobs x %d), %d CPUs, "
          "redis appendonly yes, appendfsync %s, enqueue via one pipelined XADD" % (
              total, njobs, per_job, os.cpu_count(), args.fsync))
    print("sink: %s on loopback, no STARTTLS; heroldd log level warn, %d sessions "
          "(channels.email.workers), max_per_session %d, queue_max %d; ceiling: %s -d -s %d"
          % (SMTP_SINK, args.workers, args.max_per_session, args.queue_max,
             SMTP_SOURCE, args.workers))
    try:
        sink = Sink(basedir, args.dump).start()
        for size in sizes:
            ceil = None
            if not args.no_ceiling:
                try:
                    ceil = ceiling(args, sink, size, total)
                    print("  ceiling %6d B: smtp-source -d, %d sessions: %6.0f messages/s" % (
                        size, args.workers, ceil["rate"]))
                except (RuntimeError, subprocess.TimeoutExpired, OSError) as e:
                    ok = False
                    print("ceiling %d B: FAILED: %s" % (size, e))
            for window in windows:
                run = Run(args, basedir, sink, size, window, njobs, per_job)
                try:
                    run.start()
                    r = run.measure()
                except (RuntimeError, procs.Timeout, OSError) as e:
                    ok = False
                    print("%s: FAILED: %s" % (run.name, e))
                    continue
                finally:
                    run.stop()
                if ceil:
                    r["ceiling"], r["ratio"], r["ceiling_run"] = (
                        ceil["rate"], r["rate"] / ceil["rate"], ceil)
                results.append(r)
                print("  heroldd %6d B window %5d: %6.0f messages/s%s, %5.1f us heroldd CPU "
                      "per message, peak RSS %.1f MiB" % (
                          size, window, r["rate"],
                          " (%.0f%% of the ceiling)" % (100 * r["ratio"]) if ceil else "",
                          r["heroldd_us"], (r["hwm_kb"] or 0) / 1024.0))
                if r["sent"] != total or r["received"] != total:
                    ok = False
                    print("    PROBLEM: %d messages, %d recorded sent, %d counted by the sink"
                          % (total, r["sent"], r["received"]))
    except (RuntimeError, procs.Timeout, OSError) as e:
        ok = False
        print("FAILED: %s" % e)
    finally:
        if sink is not None:
            sink.stop()
        procs.kill_all()
        if args.keep or not ok:
            print("files kept in %s" % basedir)
        else:
            shutil.rmtree(basedir, ignore_errors=True)
    if results:
        print()
        print_table(results)
        print("(targets are reported, not enforced; CPU in microseconds per message, "
              "utime+stime; bytes/msg: what the sink read per message, SMTP commands "
              "included; heroldd opens a new session every max_per_session messages, "
              "smtp-source keeps its sessions)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
