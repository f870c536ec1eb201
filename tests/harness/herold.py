"""herold - drive heroldd and the herold CLI from the integration tests.

    cfg = test_config(redis_port=r.port, prefix=p, endpoints={"mock": m.url})
    write_config(path, cfg)
    d = Daemon(tmpdir, path).start()            # waits for event=ready
    cli = Cli(tmpdir, path)
    entry = cli.enqueue_ok(make_job("j-1", 3))
    cli.wait_state("j-1", ("done",))
    res = check(units(job), m.records(), [cli.status("j-1")])
    print(res.summary())

Binaries come from $HEROLD_BIN (relative to the repository root; default
"bin").  Every process gets the canary secrets below through its
environment, so the privacy checks can grep for them; every generated
recipient carries canary contact points (PII_PATTERNS).
"""

import base64
import json
import os
import re
import signal
import subprocess
import time

import procs
from resp import RespError, pairs

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# -- canaries ----------------------------------------------------------------
# Secrets: must never appear in a log, argv or an error message.
WEBHOOK_KEY = b"kanarien-webhook-key-0123456789A"          # 32 bytes
WEBHOOK_SECRET = "whsec_" + base64.b64encode(WEBHOOK_KEY).decode()
PSEUDONYM_KEY = "kanarien-pseudonym-key-5e1f0c2b"
REDIS_PASSWORD = "kanarien-redis-pw-93ad71f4"
SECRET_CANARIES = {
    "webhook secret": WEBHOOK_SECRET,
    "webhook secret (base64)": WEBHOOK_SECRET[len("whsec_"):],
    "webhook key": WEBHOOK_KEY.decode(),
    "webhook key (hex)": WEBHOOK_KEY.hex(),
    "pseudonym key": PSEUDONYM_KEY,
    "redis password": REDIS_PASSWORD,
}
# Personal data: every generated e-mail holds EMAIL_MARK, every phone
# number starts with PHONE_PREFIX.
EMAIL_MARK = "kanarienvogel"
PHONE_PREFIX = "+4915199"
BODY_CANARY = "Kanarientext-b0dy"        # message text: never logged either
PII_PATTERNS = {
    "e-mail": re.compile(re.escape(EMAIL_MARK), re.I),
    "phone": re.compile(r"(?<![0-9])\+?4915199[0-9]{6}(?![0-9])"),
}

DAEMON_LOGS = []        # every heroldd log file written in this run
CLI_LOGS = set()        # every CLI transcript written in this run

GROUP = "heroldd"
LANES = ("urgent", "normal", "bulk")


# -- binaries and environment --------------------------------------------------

def _bin_setting():
    return os.environ.get("HEROLD_BIN") or "bin"


def program(name):
    d = _bin_setting()
    return os.path.join(d if os.path.isabs(d) else os.path.join(REPO, d), name)


def program_label(name):
    return "%s/%s" % (_bin_setting().rstrip("/"), name)


def missing_programs():
    """Labels ("bin/heroldd") of the programs that are not built."""
    return [program_label(n) for n in ("heroldd", "herold")
            if not os.access(program(n), os.X_OK)]


def base_env(extra=None):
    """The environment for heroldd and herold: the caller's, without any
    fault point, plus the canary secrets."""
    env = {k: v for k, v in os.environ.items() if k != "HEROLD_FAULTPOINT"}
    env.update(HEROLD_WEBHOOK_SECRET=WEBHOOK_SECRET,
               HEROLD_PSEUDONYM_KEY=PSEUDONYM_KEY,
               HEROLD_REDIS_PASSWORD=REDIS_PASSWORD)
    if extra:
        env.update(extra)
    return env


# -- configuration ---------------------------------------------------------------

def _merge(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = v
    return dst


def test_config(*, redis_port, prefix, endpoints, consumer="c1",
                redis_password=False, overrides=None):
    """A config dict with the small test timeouts.  endpoints: an ordered
    dict {name: url}.  overrides: nested dict merged on top."""
    cfg = {
        "redis": {"host": "127.0.0.1", "port": redis_port, "prefix": prefix,
                  "connect_timeout_ms": 1000, "command_timeout_ms": 2000,
                  "reconnect_min_ms": 100, "reconnect_max_ms": 1000},
        "queue": {"group": GROUP, "consumer": consumer, "block_ms": 500,
                  "claim_idle_ms": 3000, "trim_interval_ms": 1000},
        "delivery": {"backoff_base_ms": 200, "backoff_max_ms": 2000,
                     "drain_timeout_ms": 5000},
        "http": {"connect_timeout_ms": 2000, "timeout_ms": 3000},
        "log": {"level": "debug", "pseudonym_key": "${HEROLD_PSEUDONYM_KEY}"},
        "channels": {"webhook": {"endpoints": [
            {"name": n, "url": u, "secret": "${HEROLD_WEBHOOK_SECRET}"}
            for n, u in endpoints.items()]}},
    }
    if redis_password:
        cfg["redis"]["password"] = "${HEROLD_REDIS_PASSWORD}"
    if overrides:
        _merge(cfg, overrides)
    return cfg


def write_config(path, cfg):
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    os.chmod(path, 0o600)
    return path


# -- jobs ------------------------------------------------------------------------

def recipient(i):
    """Recipient number i with canary contact points."""
    return {"id": "r-%d" % i,
            "email": "r%d.%s@example.org" % (i, EMAIL_MARK),
            "phone": "%s%06d" % (PHONE_PREFIX, i)}


def make_job(job_id, n=3, *, lane="normal", kind="announcement",
             endpoint="mock", channels=("webhook",), first=1, **extra):
    """A valid v1 job for n recipients r-<first>..; extra fields are set
    on top (subject=..., expires_at=..., options=...)."""
    job = {
        "v": 1, "id": job_id, "kind": kind, "priority": lane,
        "channels": list(channels),
        "audience": {"recipients": [recipient(i) for i in range(first, first + n)]},
        "subject": "Abfuhrtermine Hauptstraße",
        "text": "Die Abfuhr verschiebt sich um einen Tag. Grüße aus dem Rathaus.",
        "lang": "de",
    }
    if endpoint is not None and "webhook" in channels:
        job["options"] = {"webhook": {"endpoint": endpoint}}
    job.update(extra)
    return job


def units(*jobs):
    """The (job id, recipient id) units of the given job dicts."""
    return {(j["id"], r["id"]) for j in jobs for r in j["audience"]["recipients"]}


def dumps(job):
    return json.dumps(job, ensure_ascii=False, separators=(",", ":"))


# -- Redis helpers (short-lived connections: they survive Redis restarts) --------

def lane_key(prefix, lane="normal"):
    return "%sjobs:%s" % (prefix, lane)


def xadd(redis, key, *fields):
    """XADD key * f1 v1 ...; returns the entry id."""
    with redis.client() as c:
        return c.call("XADD", key, "*", *fields)


def xadd_job(redis, prefix, job, lane="normal"):
    """Raw producer path: XADD <prefix>jobs:<lane> * job <json>."""
    payload = job if isinstance(job, (str, bytes)) else dumps(job)
    return xadd(redis, lane_key(prefix, lane), "job", payload)


def stream(redis, key):
    """[(entry id, {field: value})] of the whole stream ([] if missing)."""
    with redis.client(timeout=30) as c:
        return [(e[0], pairs(e[1])) for e in c.call("XRANGE", key, "-", "+")]


def xpending(redis, key, group=GROUP):
    """Entries pending in group on key (0 when the key or group is missing)."""
    with redis.client() as c:
        try:
            return int(c.call("XPENDING", key, group)[0])
        except RespError as e:
            if e.kind == "NOGROUP":
                return 0
            raise


def pending_total(redis, prefix, group=GROUP):
    return sum(xpending(redis, lane_key(prefix, ln), group) for ln in LANES)


def pending_by_consumer(redis, key, group=GROUP):
    """{consumer: n} of the group's PEL on key."""
    with redis.client() as c:
        try:
            summary = c.call("XPENDING", key, group)
        except RespError:
            return {}
    return {name: int(n) for name, n in (summary[3] or [])}


def _sid(s):
    ms, _, seq = s.partition("-")
    return int(ms), int(seq or 0)


def group_info(redis, key, group=GROUP):
    """XINFO GROUPS entry of group as a dict, or None."""
    with redis.client() as c:
        try:
            groups = c.call("XINFO", "GROUPS", key)
        except RespError:
            return None
    for g in groups:
        d = pairs(g)
        if d.get("name") == group:
            return d
    return None


def consumed(redis, key, entry_id, group=GROUP):
    """True when the group has read past entry_id and nothing is pending."""
    g = group_info(redis, key, group)
    return (g is not None and _sid(g["last-delivered-id"]) >= _sid(entry_id)
            and int(g["pending"]) == 0)


# -- the daemon ---------------------------------------------------------------------

class DaemonExited(Exception):
    """heroldd exited while a test waited for it to do something."""


_READY = r"(^|\s)event=ready(\s|$)"


class Daemon:
    """One heroldd (restartable).  Each start writes a new log file
    <name>.<n>.log in the test directory; stderr and stdout go there."""

    def __init__(self, tdir, cfg_path, name="heroldd", env=None):
        self.tdir, self.cfg_path, self.name = tdir, cfg_path, name
        self.env = env or {}
        self.proc = None
        self.runs = 0
        self.logs = []

    @property
    def log_path(self):
        return self.logs[-1] if self.logs else None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, wait_ready=True, env=None, timeout=30):
        """Start heroldd -c cfg.  env: extra variables for this run only
        (e.g. HEROLD_FAULTPOINT).  Waits for event=ready unless told not to."""
        if self.alive():
            raise RuntimeError("%s already running" % self.name)
        self.runs += 1
        path = os.path.join(self.tdir, "%s.%d.log" % (self.name, self.runs))
        self.logs.append(path)
        DAEMON_LOGS.append(path)
        e = base_env(self.env)
        if env:
            e.update(env)
        with open(path, "ab") as f:
            # HEROLD_WRAP runs heroldd under a tool, e.g. valgrind (make valgrind)
            wrap = os.environ.get("HEROLD_WRAP", "").split()
            self.proc = procs.spawn(wrap + [program("heroldd"), "-c", self.cfg_path],
                                    stdout=f, stderr=f, env=e, cwd=self.tdir)
        if wait_ready:
            self.wait_for_log(_READY, timeout)
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self):
        return self.proc.poll() if self.proc else None

    def wait_for_log(self, pattern, timeout=30, allow_exit=False):
        """Wait for a line of the current run's log matching the regex;
        return the line.  Raises DaemonExited if heroldd exits first
        (unless allow_exit), procs.Timeout at the deadline."""
        rx = re.compile(pattern)
        path = self.log_path
        st = {"pos": 0, "rest": b""}

        def poll():
            rc = self.proc.poll()          # before reading: no lost last line
            try:
                with open(path, "rb") as f:
                    f.seek(st["pos"])
                    data = f.read()
                    st["pos"] = f.tell()
            except FileNotFoundError:
                data = b""
            buf = st["rest"] + data
            lines = buf.split(b"\n")
            st["rest"] = lines.pop()
            if rc is not None and st["rest"]:
                lines.append(st["rest"])
                st["rest"] = b""
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                if rx.search(line):
                    return line
            if rc is not None and not allow_exit:
                raise DaemonExited("%s exited with %s while waiting for /%s/"
                                   % (self.name, rc, pattern))
            if rc is not None:
                raise DaemonExited("%s exited with %s; /%s/ never logged"
                                   % (self.name, rc, pattern))
            return None
        return procs.wait_until(poll, timeout, "/%s/ in %s" % (pattern, os.path.basename(path)))

    def grep(self, pattern, all_runs=True):
        """Lines matching pattern in this daemon's logs."""
        rx = re.compile(pattern)
        out = []
        for p in (self.logs if all_runs else self.logs[-1:]):
            try:
                with open(p, encoding="utf-8", errors="replace") as f:
                    out += [ln.rstrip("\n") for ln in f if rx.search(ln)]
            except FileNotFoundError:
                pass
        return out

    def wait_exit(self, timeout=30):
        """Wait for heroldd to exit on its own; returns the exit code
        (negative: killed by that signal)."""
        try:
            return self.proc.wait(timeout=timeout * procs.SCALE)
        except subprocess.TimeoutExpired:
            raise procs.Timeout("%s still running after %.0fs"
                                % (self.name, timeout * procs.SCALE))

    def kill9(self):
        procs.kill(self.proc)
        return self.proc.returncode

    def term(self, timeout=20, sig=signal.SIGTERM):
        """Send SIGTERM (or sig) and wait for the exit.  Returns the exit
        code, or raises procs.Timeout (after killing it) past the deadline.
        If it already exited, returns that exit code without signalling."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout * procs.SCALE)
        except subprocess.TimeoutExpired:
            procs.kill(self.proc)
            raise procs.Timeout("%s did not exit within %.0fs of signal %d"
                                % (self.name, timeout * procs.SCALE, sig))

    def fd_count(self):
        return procs.fd_count(self.proc.pid)

    def rss_kb(self):
        return procs.rss_kb(self.proc.pid)

    def cmdline(self):
        return procs.cmdline(self.proc.pid)

    def tail(self, n=30):
        return procs.tail(self.log_path, n) if self.log_path else ""


# -- the CLI --------------------------------------------------------------------

class Cli:
    """herold -c CONFIG ...; every call is appended to <tdir>/cli.log."""

    def __init__(self, tdir, cfg_path, env=None):
        self.tdir, self.cfg_path = tdir, cfg_path
        self.env = base_env(env)
        self.log = os.path.join(tdir, "cli.log")
        CLI_LOGS.add(self.log)
        self.jobdir = os.path.join(tdir, "jobs")
        os.makedirs(self.jobdir, exist_ok=True)
        self._n = 0

    def run(self, *args, stdin_data=None, timeout=60):
        argv = [program("herold"), "-c", self.cfg_path] + [str(a) for a in args]
        try:
            r = subprocess.run(argv, input=stdin_data, capture_output=True,
                               env=self.env, timeout=timeout * procs.SCALE)
        except subprocess.TimeoutExpired:
            raise procs.Timeout("herold %s did not finish within %.0fs"
                                % (" ".join(map(str, args)), timeout * procs.SCALE))
        out = r.stdout.decode("utf-8", "replace")
        err = r.stderr.decode("utf-8", "replace")
        with open(self.log, "a", encoding="utf-8") as f:
            f.write("$ herold %s\n-> rc=%d\n%s%s" % (" ".join(map(str, args)), r.returncode,
                                                      out, err))
        return r.returncode, out, err

    def enqueue(self, job, via_stdin=False):
        """herold enqueue FILE (or -); job is a dict, str or bytes.
        Returns (rc, stdout, stderr)."""
        data = job if isinstance(job, bytes) else (
            job.encode("utf-8", "surrogateescape") if isinstance(job, str)
            else dumps(job).encode())
        if via_stdin:
            return self.run("enqueue", "-", stdin_data=data)
        self._n += 1
        path = os.path.join(self.jobdir, "job-%d.json" % self._n)
        with open(path, "wb") as f:
            f.write(data)
        return self.run("enqueue", path)

    def enqueue_ok(self, job, via_stdin=False):
        """Enqueue and insist on "accepted <id> <entry>"; returns the entry id."""
        rc, out, err = self.enqueue(job, via_stdin)
        words = out.split()
        if rc != 0 or len(words) != 3 or words[0] != "accepted":
            raise AssertionError("herold enqueue: rc=%d stdout=%r stderr=%r"
                                 % (rc, out.strip(), err.strip()))
        if isinstance(job, dict) and words[1] != job["id"]:
            raise AssertionError("herold enqueue accepted %r, expected %r" % (words[1], job["id"]))
        return words[2]

    def status(self, job_id):
        """herold status ID --json as a dict; None for an unknown job
        (exit 4) or while Redis is unreachable (exit 2)."""
        rc, out, err = self.run("status", job_id, "--json")
        if rc in (2, 4):
            return None
        if rc != 0:
            raise AssertionError("herold status %s: rc=%d %s" % (job_id, rc, err.strip()))
        try:
            return json.loads(out)
        except ValueError:
            raise AssertionError("herold status %s --json printed no JSON: %r" % (job_id, out[:300]))

    def wait_state(self, job_id, states=("done",), timeout=60, daemons=()):
        """Poll status until its state is one of states; return the status.
        If every daemon given has exited, fail at once."""
        last = {}

        def poll():
            if daemons and not any(d.alive() for d in daemons):
                raise DaemonExited("heroldd exited (%s) while job %s was %s" % (
                    ", ".join(str(d.returncode) for d in daemons), job_id,
                    last.get("state", "unknown")))
            s = self.status(job_id)
            if s is not None:
                last.update(s)
                if s.get("state") in states:
                    return s
            time.sleep(0.2)
            return None
        try:
            return procs.wait_until(poll, timeout, "job %s to be %s" % (job_id, "|".join(states)))
        except procs.Timeout as e:
            raise procs.Timeout("%s (last status: %s)" % (e, _short(last)))


def _short(status):
    if not status:
        return "none"
    s = dict(status)
    if isinstance(s.get("failures"), list) and len(s["failures"]) > 3:
        s["failures"] = s["failures"][:3] + ["... %d more" % (len(s["failures"]) - 3)]
    return json.dumps(s)[:600]


def count(status, key, channel="webhook"):
    """status["counts"][channel][key], 0 when absent."""
    return int(((status or {}).get("counts") or {}).get(channel, {}).get(key, 0))


def in_doubt(statuses):
    return sum(count(s, "in_doubt", ch) for s in statuses if s
               for ch in (s.get("counts") or {}))


# -- the checker -----------------------------------------------------------------

# terminal ledger states other than sent (docs/redis-layout.md, docs/flow.md)
TERMINAL_UNSENT = ("failed", "suppressed", "expired", "dead", "cancelled")


class CheckResult:
    def __init__(self):
        self.expected = set()
        self.received = 0
        self.effects = 0
        self.delivered = set()
        self.lost = set()
        self.accounted = set()
        self.dup_by_id = 0
        self.dup_by_unit = 0
        self.dup_units = {}
        self.distinct_ids = 0
        self.unexpected = []
        self.bad_sig = 0
        self.id_mismatch = {}
        self.idem_mismatch = 0
        self.same_attempt = 0
        self.in_doubt = 0

    def summary(self):
        s = ("checker: units=%d received=%d effects=%d lost=%d "
             "duplicated(webhook-id)=%d duplicated(job,recipient)=%d unexpected=%d "
             "in_doubt=%d bad_sig=%d id_mismatch=%d accounted=%d same_attempt=%d"
             % (len(self.expected), self.received, self.effects, len(self.lost),
                self.dup_by_id, self.dup_by_unit, len(self.unexpected), self.in_doubt,
                self.bad_sig, len(self.id_mismatch) + self.idem_mismatch,
                len(self.accounted), self.same_attempt))
        if self.lost:
            s += "\n      lost (first 10): %s" % sorted(self.lost)[:10]
        if self.unexpected:
            s += "\n      unexpected (first 5): %s" % self.unexpected[:5]
        if self.id_mismatch:
            s += "\n      units with several webhook-ids (first 5): %s" % (
                sorted(self.id_mismatch.items())[:5],)
        return s


def check(expected, records, statuses=(), accounted=None):
    """Total-queue style accounting of one test.

    expected: the (job, recipient) units producers were told were accepted.
    records: the mock records (one per received request).
    statuses: herold status dicts; their failures with a terminal state
    (TERMINAL_UNSENT) count as accounted, not lost, and their
    in_doubt counters are summed.
    An effect is a record with a valid signature that a receiver acted on.
    lost = expected - delivered - accounted.  Duplicates are copies beyond
    the first, counted by webhook-id and by (job, recipient).
    same_attempt counts requests (any reply) that repeat an earlier
    request's webhook-id and attempt number: resends heroldd did not
    number as a new attempt (a transport's silent retry, or a resend
    after a crash that reuses the attempt number).  Informational.
    """
    r = CheckResult()
    r.expected = set(expected)
    r.received = len(records)
    acc = set(accounted or ())
    for s in statuses:
        if not s:
            continue
        for f in s.get("failures") or []:
            if f.get("state") in TERMINAL_UNSENT:
                acc.add((s.get("id"), f.get("recipient")))
    r.accounted = acc & r.expected
    r.in_doubt = in_doubt(statuses)

    by_id, by_unit, ids_of_unit, attempts = {}, {}, {}, set()
    for rec in records:
        unit = (rec.get("job"), rec.get("recipient"))
        if not rec.get("sig_ok"):
            r.bad_sig += 1
            continue
        ids_of_unit.setdefault(unit, set()).add(rec.get("webhook_id"))
        key = (rec.get("webhook_id"), rec.get("attempt"))
        if key in attempts:
            r.same_attempt += 1
        attempts.add(key)
        if rec.get("idempotency_key") != rec.get("webhook_id"):
            r.idem_mismatch += 1
        if not rec.get("effect"):
            continue
        r.effects += 1
        if unit not in r.expected:
            r.unexpected.append(unit)
        by_id[rec.get("webhook_id")] = by_id.get(rec.get("webhook_id"), 0) + 1
        by_unit[unit] = by_unit.get(unit, 0) + 1
    r.delivered = set(by_unit) & r.expected
    r.lost = r.expected - r.delivered - r.accounted
    r.dup_by_id = sum(n - 1 for n in by_id.values())
    r.dup_by_unit = sum(n - 1 for n in by_unit.values())
    r.dup_units = {u: n for u, n in by_unit.items() if n > 1}
    r.distinct_ids = len(by_id)
    r.id_mismatch = {u: sorted(i for i in ids if i) for u, ids in ids_of_unit.items()
                     if len(ids) > 1}
    return r


# -- privacy and sanitizer scans ----------------------------------------------------

def grep_files(paths, patterns):
    """[(path, line number, kind, excerpt)] for every pattern hit.
    patterns: {kind: compiled regex or literal str}."""
    compiled = {k: (p if hasattr(p, "search") else re.compile(re.escape(p)))
                for k, p in patterns.items()}
    hits = []
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for n, line in enumerate(f, 1):
                    for kind, rx in compiled.items():
                        m = rx.search(line)
                        if m:
                            a = max(0, m.start() - 40)
                            hits.append((path, n, kind, line[a:m.end() + 40].strip()))
        except FileNotFoundError:
            pass
    return hits


def all_canaries(include_body=True):
    pats = dict(PII_PATTERNS)
    pats.update(SECRET_CANARIES)
    if include_body:
        pats["message text"] = BODY_CANARY
    return pats


SANITIZER_RX = re.compile(r"ERROR: (Address|Leak|Thread|Memory)Sanitizer|"
                          r"runtime error: |UndefinedBehaviorSanitizer|"
                          r"==\d+==ERROR|"
                          # valgrind memcheck (make valgrind runs heroldd under it)
                          r"==\d+== (Invalid (read|write|free)|Conditional jump|"
                          r"Use of uninitialised|Syscall param|Mismatched free|"
                          r"Source and destination overlap)|definitely lost in")


def sanitizer_reports(paths):
    return grep_files(paths, {"sanitizer": SANITIZER_RX})
