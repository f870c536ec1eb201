"""citizens_gen - seeded synthetic citizens written straight into Redis
(docs/citizens.md, layout v1), and the outcome herold must produce for a
job over them, computed independently in Python.

    import citizens_gen as G
    now = time.time()
    cits = G.generate(10000, seed=7, now=now, mix=G.Mix(daily_cap=3))
    G.load(redis_server, prefix, cits, now=now)        # redis-cli --pipe
    want = G.expected(cits, job, now, daily_cap=3)
    # {(channel, citizen id): ("deliver", None) | ("suppressed", reason)
    #                         | ("deferred", unix time the quiet hours end)}

    G.load_uniform(redis_server, prefix, 1000000, topic="abfall")   # bench
    G.set_consent_uniform(redis_server, prefix, 1000000, "webhook", "pending")

Everything is written raw, bypassing `herold citizen add` and its
validation: that is how invalid stored contact points (row 35) get in.
Every e-mail address holds herold.EMAIL_MARK and every phone number
starts with herold.PHONE_PREFIX, so the privacy checks can grep for them.

Time-dependent choices (quiet hours, the daily-cap day) are made relative
to `now` with margins (Mix.quiet_margin_min before now, Mix.horizon_min
after it): a citizen meant to be in quiet hours stays in them for the
whole test, one meant to be outside stays outside, and a cap seeded for
"today" is seeded for every local day the test can run in.

The writer speaks RESP into `redis-cli --pipe` (Redis' own mass-insertion
path).  Measured on this machine class (2 CPUs, Redis AOF everysec), per
million citizens: load_uniform 19 s; generate() 28 s plus load() 31 s;
set_consent_uniform 12 s.  generate() keeps every citizen as a dict
(about 1.5 GB of Python for a million): use it up to a few 100,000.

Run as a script for a self-check against a private Redis:

    python3 tests/harness/citizens_gen.py [N] [SEED]
"""

import datetime
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from zoneinfo import ZoneInfo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import herold as H          # noqa: E402  (EMAIL_MARK, PHONE_PREFIX)

REDIS_CLI = os.environ.get("HEROLD_REDIS_CLI") or shutil.which("redis-cli") or "/usr/bin/redis-cli"

# Per-citizen channels (docs/citizens.md "Who gets what", step 1); every
# other channel (mastodon, ...) posts once per job.
CITIZEN_CHANNELS = ("email", "sms", "push", "webhook")
DEFAULT_TZ = "Europe/Berlin"
CAP_TTL_S = 2 * 86400

# The reason strings of docs/citizens.md "Precisely, per citizen and channel".
R_NO_CONSENT = "no consent"
R_PENDING = "consent pending"
R_WITHDRAWN = "consent withdrawn"
R_NO_CONTACT = "no contact point for channel"
R_BOUNCED = "address bounced before"
R_INVALID = "invalid contact point"
R_LANDLINE = "landline cannot receive SMS"
R_CAP = "daily cap reached"


# =============================================================================
# the mix
# =============================================================================

class Mix:
    """What the generated population looks like.  Weights are relative
    (they need not sum to 1).  Pass overrides as keyword arguments:
    Mix(consent={"confirmed": 1}, quiet={"none": 1})."""

    def __init__(self, **kw):
        # topic -> probability that a citizen subscribes to it
        self.topics = {"abfall": 0.7, "baustellen": 0.35, "kultur": 0.2, "verkehr": 0.15}
        # per subscription: probability each channel is in the choice
        # (at least one is always chosen)
        self.channel_choice = {"webhook": 0.6, "email": 0.6, "sms": 0.25, "push": 0.2}
        # consent record per channel (per citizen, all topics share it)
        self.consent = {"confirmed": 0.7, "pending": 0.1, "withdrawn": 0.08, "missing": 0.12}
        # e-mail contact point
        self.email = {"valid": 0.72, "missing": 0.1, "bounced_state": 0.05,
                      "bounced_hash": 0.05, "invalid": 0.06, "invalid_bounced": 0.02}
        # phone contact point
        # (landline: a German fixed line cannot start with the canary
        # prefix +4915199, so it is off by default; no SMS channel yet)
        self.phone = {"mobile": 0.65, "missing": 0.2, "landline": 0.0,
                      "invalid": 0.09, "invalid_state": 0.06}
        # push tokens
        self.push = {"none": 0.7, "active": 0.25, "dead": 0.05}
        self.langs = {"de": 0.8, "en": 0.1, "de-x-ls": 0.05, "tr": 0.03, "uk": 0.02}
        # time zone: None = no tz field (the default, Europe/Berlin, applies)
        self.tzs = {"Europe/Berlin": 0.78, None: 0.06, "Europe/London": 0.03,
                    "America/New_York": 0.03, "Asia/Kolkata": 0.02,
                    "Australia/Adelaide": 0.02, "Pacific/Chatham": 0.02,
                    "America/St_Johns": 0.02, "Asia/Tokyo": 0.02}
        # quiet hours: none, in quiet hours now (for the whole horizon),
        # outside them now (for the whole horizon)
        self.quiet = {"none": 0.6, "in_now": 0.15, "not_now": 0.25}
        # daily cap: citizens already at the cap today, and one below it
        self.daily_cap = 5
        self.cap_full = 0.05
        self.cap_below = 0.05
        # margins around now for the time-dependent choices
        self.quiet_margin_min = 10
        self.horizon_min = 180
        # upper-case letters in the local part of some addresses (the
        # bounce hash is over the lower-cased address)
        self.mixed_case_local = 0.1
        # ids with the other allowed characters (. _ : -)
        self.odd_ids = 0.05
        # topic choice written as "sms,email" instead of "email,sms"
        self.shuffle_choice = 0.5
        for k, v in kw.items():
            if not hasattr(self, k):
                raise TypeError("Mix has no setting %r" % k)
            setattr(self, k, v)


class _Picker:
    """Weighted choice over a {value: weight} dict (cumulative table)."""

    def __init__(self, weights):
        import itertools
        self.items = [k for k, w in weights.items() if w > 0]
        self.cum = list(itertools.accumulate(w for w in weights.values() if w > 0))
        self.total = self.cum[-1]

    def __call__(self, rng):
        import bisect
        return self.items[bisect.bisect_right(self.cum, rng.random() * self.total)]


_PICKERS = {}


def _pick(rng, weights):
    key = id(weights)
    p = _PICKERS.get(key)
    if p is None or p[0] is not weights:
        p = _PICKERS[key] = (weights, _Picker(weights))
    return p[1](rng)


# =============================================================================
# contact-point rules (dispatcher/contact.h, re-implemented from its contract)
# =============================================================================

_CTL_OR_SPACE = re.compile(r"[\x00-\x20\x7f]")


def email_ok(s):
    """contact_email_ok as documented in dispatcher/contact.h: ASCII,
    local@domain, at most 254 characters, local part at most 64, no quoted
    local part, a domain of at least two labels with an alphabetic TLD, no
    control characters or spaces.  (Label syntax beyond that is left open
    by the contract; the generator never produces such cases.)"""
    if not s or not s.isascii() or len(s) > 254:
        return False
    if _CTL_OR_SPACE.search(s):
        return False
    if s.count("@") != 1:
        return False
    local, domain = s.split("@")
    if not local or len(local) > 64 or local.startswith('"'):
        return False
    labels = domain.split(".")
    if len(labels) < 2 or any(not lb for lb in labels):
        return False
    if not labels[-1].isalpha():
        return False
    return True


GERMAN_REFUSED = ("900", "137", "180", "118", "116")


def phone_kind(s):
    """None when contact_phone_ok refuses s, else "mobile", "landline" or
    "unknown" (outside Germany)."""
    if not s or s[0] != "+":
        return None
    digits = s[1:]
    if not digits.isdigit() or not digits.isascii() or not 8 <= len(digits) <= 15 or digits[0] == "0":
        return None
    if digits.startswith("49"):
        national = digits[2:]
        if national.startswith(GERMAN_REFUSED):
            return None
        return "mobile" if national[:2] in ("15", "16", "17") else "landline"
    return "unknown"


def contact_field(kind, addr):
    """The P contacts:bounced field of an address (track_contact_field in
    dispatcher/track.c): kind + ":" + the first 32 hex digits of SHA-256
    of the lower-cased address (bytes beyond 255 are ignored there)."""
    b = addr.encode("utf-8", "surrogateescape")[:255].lower()
    return "%s:%s" % (kind, hashlib.sha256(b).hexdigest()[:32])


# =============================================================================
# time: quiet hours and local days (zoneinfo, independent of dispatcher/tz.c)
# =============================================================================

_ZONES = {}


def zone(name):
    z = _ZONES.get(name)
    if z is None:
        z = _ZONES[name] = ZoneInfo(name)
    return z


def local_dt(now, tzname):
    return datetime.datetime.fromtimestamp(now, zone(tzname or DEFAULT_TZ))


def local_day(now, tzname):
    return local_dt(now, tzname).strftime("%Y-%m-%d")


def parse_quiet(q):
    """"HH:MM-HH:MM" -> (start, end) in minutes after midnight."""
    a, b = q.split("-")
    sh, sm = a.split(":")
    eh, em = b.split(":")
    return int(sh) * 60 + int(sm), int(eh) * 60 + int(em)


def fmt_quiet(start, end):
    return "%02d:%02d-%02d:%02d" % (start // 60, start % 60, end // 60, end % 60)


def _local_to_utc(date, minutes, tz):
    """The instant of local wall time date + minutes in tz.  A wall time
    that does not exist (spring forward gap) becomes the first instant
    after the gap, as tz.h promises for quiet_until; an ambiguous one
    (fall back) its first occurrence."""
    naive = datetime.datetime(date.year, date.month, date.day, minutes // 60, minutes % 60)
    aware = naive.replace(tzinfo=tz, fold=0)
    t = aware.timestamp()
    back = datetime.datetime.fromtimestamp(t, tz).replace(tzinfo=None)
    if back == naive:
        return int(t)
    # in a gap: find the transition, the first instant whose local time is
    # past the requested wall time
    lo, hi = int(t) - 3 * 3600, int(t) + 3 * 3600
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.datetime.fromtimestamp(mid, tz).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return hi


def quiet_until(q, tzname, now):
    """0 when now is outside the quiet hours q ("HH:MM-HH:MM") in tzname,
    else the unix time (int) they end."""
    start, end = parse_quiet(q)
    tz = zone(tzname or DEFAULT_TZ)
    loc = datetime.datetime.fromtimestamp(now, tz)
    m = loc.hour * 60 + loc.minute + loc.second / 60.0
    if start < end:
        inside = start <= m < end
        end_date = loc.date()
    else:
        inside = m >= start or m < end
        end_date = loc.date() + datetime.timedelta(days=1) if m >= start else loc.date()
    if not inside:
        return 0
    return _local_to_utc(end_date, end, tz)


# =============================================================================
# generation
# =============================================================================

DOMAINS = ("example.org", "musterstadt.example", "mail.example.net",
           "xn--mller-kva.example", "stadtwerke-musterstadt.example")


def _valid_email(rng, i, mix):
    local = "b%d.%s" % (i, H.EMAIL_MARK)
    r = rng.random()
    if r < 0.1:
        local = "b%d+news.%s" % (i, H.EMAIL_MARK)
    elif r < 0.2:
        local = "b_%d-x.%s" % (i, H.EMAIL_MARK)
    if rng.random() < mix.mixed_case_local:
        local = "Anna.B%d.%s" % (i, H.EMAIL_MARK.capitalize())
    return "%s@%s" % (local, rng.choice(DOMAINS))


def invalid_email_cases(i):
    """[(label, address)]: each fails contact_email_ok for a reason
    dispatcher/contact.h names; all hold EMAIL_MARK."""
    m = H.EMAIL_MARK
    return [
        ("no dot in domain", "b%d.%s@localhost" % (i, m)),
        ("numeric TLD", "b%d.%s@example.123" % (i, m)),
        ("over 254", "%s.%s@example.org" % ("a" * 250, m)),
        ("local over 64", "%s%d.%s@example.org" % ("x" * 64, i, m)),
        ("IDN not A-label", "b%d.%s@m\u00fcller.example" % (i, m)),
        ("two @", "b%d@%s@example.org" % (i, m)),
        ("no @", "b%d.%s.example.org" % (i, m)),
        ("space", "b%d %s@example.org" % (i, m)),
        ("quoted local", '"b%d.%s"@example.org' % (i, m)),
        ("CRLF header", "b%d.%s@example.org\r\nBcc: evil.%s@example.org" % (i, m, m)),
        ("tab", "b%d.%s\t@example.org" % (i, m)),
        ("empty local", "@b%d.%s.example.org" % (i, m)),
    ]


def _invalid_email(rng, i):
    return rng.choice(invalid_email_cases(i))


def invalid_phone_cases(i):
    """[(label, number, phone_state)] a stored phone that contact_phone_ok
    refuses (or that is marked invalid); all start with PHONE_PREFIX."""
    p, n = H.PHONE_PREFIX, "%06d" % (i % 1000000)
    return [("space", p + " " + n, "unverified"), ("hyphen", p + "-" + n, "unverified"),
            ("too long", p + n + "123456789", "unverified"), ("letter", p + "x" + n[1:], "unverified"),
            ("too short", p, "unverified"), ("state invalid", p + n, "invalid")]


def _phone(rng, kind, i):
    p = H.PHONE_PREFIX                       # +4915199: a German mobile range
    n = "%06d" % (i % 1000000)
    if kind == "mobile":
        return p + n, "verified" if rng.random() < 0.7 else "unverified"
    if kind == "invalid":
        _, bad, st = rng.choice(invalid_phone_cases(i)[:-1])
        return bad, st
    if kind == "invalid_state":
        return p + n, "invalid"
    raise ValueError(kind)


def _landline(i):
    # Berlin 030: not a canary number (see Mix.phone)
    return "+4930%08d" % (i % 100000000)


def _consent(rng, state, now):
    t = datetime.datetime.fromtimestamp(now - rng.randint(86400, 400 * 86400),
                                        datetime.timezone.utc)
    req = t.strftime("%Y-%m-%dT%H:%M:%SZ")
    conf = (t + datetime.timedelta(minutes=rng.randint(1, 600))).strftime("%Y-%m-%dT%H:%M:%SZ")
    method = _pick(rng, {"form": 0.6, "letter": 0.15, "counter": 0.1, "import": 0.15})
    rec = {"state": state, "method": method, "text_version": "2026-01", "requested_at": req}
    if state in ("confirmed", "withdrawn"):
        rec["confirmed_at"] = conf
        rec["double_opt_in"] = method == "form"
    else:
        rec["double_opt_in"] = False
    if state == "withdrawn":
        rec["withdrawn_at"] = (t + datetime.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps(rec, separators=(",", ":"))


def _quiet_for(rng, kind, tzname, now, mix):
    if kind == "none":
        return None
    loc = local_dt(now, tzname)
    L = loc.hour * 60 + loc.minute
    margin, horizon = mix.quiet_margin_min, mix.horizon_min
    for _ in range(100):
        if kind == "in_now":
            a = rng.randint(margin + 1, max(margin + 1, 300))
            b = rng.randint(horizon + 1, max(horizon + 1, 720))
            if a + b >= 1440:
                continue
            start, end = (L - a) % 1440, (L + b) % 1440
        else:
            x = rng.randint(horizon + 1, 1440 - margin - 31)
            start = (L + x) % 1440
            room = 1440 - x - margin - 1      # minutes until L - margin
            if room < 30:
                continue
            end = (start + rng.randint(30, min(room, 600))) % 1440
        if start == end:
            continue
        q = fmt_quiet(start, end)
        # check the promise at both ends of the horizon
        q0 = quiet_until(q, tzname, now)
        q1 = quiet_until(q, tzname, now + horizon * 60 - 60)
        qm = quiet_until(q, tzname, now - margin * 60 + 60)
        if kind == "in_now" and q0 and q1 and qm and q0 == q1 == qm:
            return q
        if kind == "not_now" and not q0 and not q1 and not qm:
            return q
    raise RuntimeError("no quiet hours found for %s at %s" % (kind, tzname))


def cap_days(now, tzname, mix):
    """Every local day the test can run in (now - margin .. now + horizon)."""
    days = []
    for t in (now - mix.quiet_margin_min * 60, now, now + mix.horizon_min * 60):
        d = local_day(t, tzname)
        if d not in days:
            days.append(d)
    return days


def citizen_id(i, rng, mix, fmt):
    cid = fmt % i
    if rng.random() < mix.odd_ids:
        cid = "reg.%d:k_%s-%d" % (i % 97, cid, i)      # every allowed punctuation
    return cid


def generate(n, seed=1, now=None, mix=None, first=0, id_fmt="c-%07d"):
    """n citizens as dicts (below).  Deterministic for (n, seed, now, mix).

    A citizen: {"id", "lang", "tz" (None: field absent), "quiet" (None),
    "email", "email_state", "email_class", "bounced_hash" (its hash goes
    into P contacts:bounced), "phone", "phone_state", "phone_class",
    "push" (list or None), "topics" {topic: [channels]}, "consent"
    {channel: state} (missing channels: no record), "cap_others" [job ids
    already counted on its local day(s)], "quiet_class"}."""
    now = time.time() if now is None else now
    mix = mix or Mix()
    rng = random.Random(seed)
    # pools of the costly, time-dependent values, drawn from their own
    # stream (quiet hours per zone and kind, consent records per state)
    prng = random.Random(seed * 7919 + 17)
    quiet_pool, cap_day_cache = {}, {}
    consent_pool = {st: [_consent(prng, st, now) for _ in range(128)]
                    for st in ("confirmed", "pending", "withdrawn")}

    def quiet(kind, tzname):
        if kind == "none":
            return None
        pool = quiet_pool.get((kind, tzname))
        if pool is None:
            pool = quiet_pool[(kind, tzname)] = [_quiet_for(prng, kind, tzname, now, mix)
                                                 for _ in range(128)]
        return pool[int(rng.random() * 128)]

    def capdays(tzname):
        d = cap_day_cache.get(tzname)
        if d is None:
            d = cap_day_cache[tzname] = cap_days(now, tzname, mix)
        return d

    out = []
    for i in range(first, first + n):
        c = {"id": citizen_id(i, rng, mix, id_fmt)}
        c["lang"] = _pick(rng, mix.langs)
        c["tz"] = _pick(rng, mix.tzs)
        qk = _pick(rng, mix.quiet)
        c["quiet_class"] = qk
        c["quiet"] = quiet(qk, c["tz"])
        ek = _pick(rng, mix.email)
        c["email_class"] = ek
        c["bounced_hash"] = False
        c["email"] = c["email_state"] = None
        if ek == "valid":
            c["email"] = _valid_email(rng, i, mix)
            c["email_state"] = "verified" if rng.random() < 0.6 else "unverified"
        elif ek == "bounced_state":
            c["email"] = _valid_email(rng, i, mix)
            c["email_state"] = "bounced"
        elif ek == "bounced_hash":
            c["email"] = _valid_email(rng, i, mix)
            c["email_state"] = "verified"
            c["bounced_hash"] = True
        elif ek == "invalid":
            c["email_invalid"], c["email"] = _invalid_email(rng, i)
            c["email_state"] = "unverified"
        elif ek == "invalid_bounced":
            c["email_invalid"], c["email"] = _invalid_email(rng, i)
            c["email_state"] = "bounced"
        if ek in ("valid", "bounced_state", "bounced_hash"):
            assert email_ok(c["email"]), c["email"]
        elif ek != "missing":
            assert not email_ok(c["email"]), (c["email_invalid"], c["email"])
        pk = _pick(rng, mix.phone)
        c["phone_class"] = pk
        c["phone"] = c["phone_state"] = None
        if pk == "landline":
            c["phone"], c["phone_state"] = _landline(i), "verified"
        elif pk != "missing":
            c["phone"], c["phone_state"] = _phone(rng, pk, i)
        push = _pick(rng, mix.push)
        c["push"] = None
        if push != "none":
            c["push"] = [{"platform": "fcm", "token": "fcm-%032x" % rng.getrandbits(128),
                          "state": "active" if push == "active" else "dead"}]
        topics = {}
        for t, p in mix.topics.items():
            if rng.random() < p:
                chans = [ch for ch, q in mix.channel_choice.items() if rng.random() < q]
                if not chans:
                    chans = [rng.choice(list(mix.channel_choice))]
                if rng.random() < mix.shuffle_choice:
                    rng.shuffle(chans)
                topics[t] = chans
        c["topics"] = topics
        consent = {}
        for ch in CITIZEN_CHANNELS:
            st = _pick(rng, mix.consent)
            if st != "missing":
                consent[ch] = st
        c["consent"] = consent
        c["consent_json"] = {ch: consent_pool[st][int(rng.random() * 128)]
                             for ch, st in consent.items()}
        r = rng.random()
        k = 0
        if r < mix.cap_full:
            k = mix.daily_cap + rng.randint(0, 2)
        elif r < mix.cap_full + mix.cap_below:
            k = max(0, mix.daily_cap - 1)
        c["cap_others"] = ["earlier-%d-%d" % (i, j) for j in range(k)]
        c["cap_days"] = capdays(c["tz"]) if k else []
        out.append(c)
    return out


# =============================================================================
# writing: RESP into redis-cli --pipe
# =============================================================================

def _b(a):
    if isinstance(a, bytes):
        return a
    if isinstance(a, str):
        return a.encode("utf-8", "surrogateescape")
    return str(a).encode()


def resp(*args):
    """The RESP encoding of one command."""
    bs = [a.encode("utf-8", "surrogateescape") if isinstance(a, str) else _b(a) for a in args]
    return b"*%d\r\n" % len(bs) + b"".join([b"$%d\r\n%s\r\n" % (len(b), b) for b in bs])


class Pipe:
    """redis-cli --pipe as a sink for RESP bytes.  close() waits for every
    reply and raises on any error reply."""

    def __init__(self, target, chunk=1 << 20):
        host, port, password = _target(target)
        env = dict(os.environ)
        if password:
            env["REDISCLI_AUTH"] = password
        self.p = subprocess.Popen([REDIS_CLI, "-h", host, "-p", str(port), "--pipe"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, env=env)
        self.buf = []
        self.size = 0
        self.chunk = chunk
        self.commands = 0
        self.replies = None

    def add(self, data, ncmds=1):
        self.buf.append(data)
        self.size += len(data)
        self.commands += ncmds
        if self.size >= self.chunk:
            self.flush()

    def cmd(self, *args):
        self.add(resp(*args))

    def flush(self):
        if self.buf:
            self.p.stdin.write(b"".join(self.buf))
            self.buf, self.size = [], 0

    def close(self):
        if self.replies is not None:
            return self.replies
        self.flush()
        self.p.stdin.close()
        out = self.p.stdout.read().decode(errors="replace")
        rc = self.p.wait()
        errors = replies = None
        for line in out.splitlines():
            if line.startswith("errors:"):
                parts = line.replace(",", "").split()
                errors, replies = int(parts[1]), int(parts[3])
        if rc != 0 or errors != 0 or replies != self.commands:
            raise RuntimeError("redis-cli --pipe: rc=%s errors=%s replies=%s (sent %d): %s"
                               % (rc, errors, replies, self.commands, out.strip()[-500:]))
        self.replies = replies
        return replies

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is None:
            self.close()
        else:
            self.p.kill()
            self.p.wait()
        return False


def _target(t):
    """(host, port, password) of a RedisServer, a (host, port[, password])
    tuple or a port number."""
    if isinstance(t, int):
        return "127.0.0.1", t, None
    if isinstance(t, tuple):
        return (t + (None,))[:3]
    return "127.0.0.1", t.port, getattr(t, "password", None)


def _iso(now):
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def citizen_fields(c, now, ts=None):
    """The hash fields of P citizen:<id>, in a fixed order."""
    ts = ts or _iso(now - 86400)
    f = [("created_at", ts), ("updated_at", ts), ("lang", c["lang"])]
    if c.get("tz"):
        f.append(("tz", c["tz"]))
    if c.get("quiet"):
        f.append(("quiet", c["quiet"]))
    if c.get("email") is not None:
        f += [("email", c["email"]), ("email_state", c["email_state"])]
    if c.get("phone") is not None:
        f += [("phone", c["phone"]), ("phone_state", c["phone_state"])]
    if c.get("push"):
        f.append(("push", json.dumps(c["push"], separators=(",", ":"))))
    for t, chans in c["topics"].items():
        f.append(("topic:" + t, ",".join(chans)))
    cj = c.get("consent_json") or {}
    for ch, st in c["consent"].items():
        f.append(("consent:" + ch, cj.get(ch) or json.dumps({"state": st, "method": "letter",
                                                              "text_version": "2026-01",
                                                              "double_opt_in": False})))
    return f


def load(target, prefix, citizens, now=None, bounced_code=550, history=False, ttl_cap=True):
    """Write citizens (from generate()) into Redis under prefix: records,
    P citizens, P topic:<t>, P topics, P contacts:bounced for bounced_hash
    citizens, P cap:<day> for cap_others.  Returns the number of commands."""
    now = time.time() if now is None else now
    P = prefix
    members_all = []
    topic_members = {}
    caps = {}
    bounced = []
    ts = _iso(now - 86400)
    cache = {}

    def bulk(v):
        # most values repeat (field names, states, pooled consent records,
        # quiet hours): encode each once
        b = cache.get(v)
        if b is None:
            e = v.encode("utf-8", "surrogateescape")
            b = b"$%d\r\n%s\r\n" % (len(e), e)
            if len(cache) < 200000:
                cache[v] = b
        return b
    hset = b"$4\r\nHSET\r\n"
    keypre = P + "citizen:"
    with Pipe(target) as pipe:
        for c in citizens:
            fields = citizen_fields(c, now, ts)
            parts = [b"*%d\r\n" % (2 + 2 * len(fields)), hset, bulk(keypre + c["id"])]
            for k, v in fields:
                parts.append(bulk(k))
                parts.append(bulk(v))
            pipe.add(b"".join(parts))
            if history:
                ev = [json.dumps({"at": _iso(now - 86400), "event": "subscribed", "topic": t},
                                 separators=(",", ":")) for t in c["topics"]]
                ev += [json.dumps({"at": _iso(now - 86400), "event": "consent", "channel": ch,
                                   "method": "letter", "text_version": "2026-01"},
                                  separators=(",", ":")) for ch in c["consent"]]
                if ev:
                    pipe.add(resp("RPUSH", P + "citizen:" + c["id"] + ":history", *ev))
            members_all.append(c["id"])
            for t in c["topics"]:
                topic_members.setdefault(t, []).append(c["id"])
            for day in c.get("cap_days") or ():
                caps.setdefault(day, []).append((c["id"], ",".join(c["cap_others"])))
            if c.get("bounced_hash"):
                bounced.append(contact_field("email", c["email"]))
            if len(members_all) >= 1000:
                _zadd(pipe, P + "citizens", members_all)
                members_all = []
            for t, ms in topic_members.items():
                if len(ms) >= 1000:
                    _zadd(pipe, P + "topic:" + t, ms)
                    topic_members[t] = []
        _zadd(pipe, P + "citizens", members_all)
        for t, ms in topic_members.items():
            _zadd(pipe, P + "topic:" + t, ms)
            pipe.cmd("SADD", P + "topics", t)
        for day, rows in caps.items():
            for i in range(0, len(rows), 500):
                args = ["HSET", P + "cap:" + day]
                for cid, jobs in rows[i:i + 500]:
                    args += [cid, jobs]
                pipe.cmd(*args)
            if ttl_cap:
                pipe.cmd("EXPIRE", P + "cap:" + day, CAP_TTL_S)
        for i in range(0, len(bounced), 500):
            args = ["HSET", P + "contacts:bounced"]
            for f in bounced[i:i + 500]:
                args += [f, "%d|%d|earlier-bounce" % (bounced_code, int(now) - 86400)]
            pipe.cmd(*args)
        return pipe.close()


def _zadd(pipe, key, ids):
    if not ids:
        return
    args = ["ZADD", key]
    for m in ids:
        args += ["0", m]
    pipe.cmd(*args)


def uniform_id(i):
    return "u%07d" % i


def load_uniform(target, prefix, n, topic="abfall", channels=("webhook",),
                 consent="confirmed", now=None, first=0, id_of=uniform_id):
    """The benchmark's population, fast: n citizens id_of(first..), all
    subscribed to topic with the given channels and the given consent on
    each, tz Europe/Berlin, no quiet hours, a valid e-mail address only if
    "email" is among the channels.  Returns the number of commands."""
    now = time.time() if now is None else now
    P = prefix.encode()
    ts = _iso(now - 86400)
    cons = json.dumps({"state": consent, "method": "letter", "text_version": "2026-01",
                       "requested_at": ts, "confirmed_at": ts, "double_opt_in": False},
                      separators=(",", ":"))
    fixed = [("created_at", ts), ("updated_at", ts), ("lang", "de"), ("tz", DEFAULT_TZ),
             ("topic:" + topic, ",".join(channels))]
    fixed += [("consent:" + ch, cons) for ch in channels]
    has_email = "email" in channels
    nargs = 2 + 2 * len(fixed) + (4 if has_email else 0)
    tail = b"".join(b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(_b(k)), _b(k), len(_b(v)), _b(v))
                    for k, v in fixed)
    head = b"*%d\r\n$4\r\nHSET\r\n" % nargs
    keypre = P + b"citizen:"
    zc, zt = P + b"citizens", P + b"topic:" + topic.encode()
    with Pipe(target, chunk=4 << 20) as pipe:
        batch = []
        for i in range(first, first + n):
            cid = id_of(i).encode()
            key = keypre + cid
            rec = [head, b"$%d\r\n%s\r\n" % (len(key), key), tail]
            if has_email:
                e = b"%s.%s@example.org" % (cid, H.EMAIL_MARK.encode())
                rec.append(b"$5\r\nemail\r\n$%d\r\n%s\r\n$11\r\nemail_state\r\n$8\r\nverified\r\n"
                           % (len(e), e))
            pipe.add(b"".join(rec))
            batch.append(cid)
            if len(batch) == 1000 or i == first + n - 1:
                for key2 in (zc, zt):
                    z = [b"*%d\r\n$4\r\nZADD\r\n$%d\r\n%s\r\n" % (2 + 2 * len(batch), len(key2), key2)]
                    z += [b"$1\r\n0\r\n$%d\r\n%s\r\n" % (len(m), m) for m in batch]
                    pipe.add(b"".join(z))
                batch = []
        pipe.cmd(b"SADD", P + b"topics", topic)
        return pipe.close()


def set_consent_uniform(target, prefix, n, channel, state, now=None, first=0, id_of=uniform_id):
    """Set consent:<channel> of the load_uniform citizens to state."""
    now = time.time() if now is None else now
    ts = _iso(now)
    rec = {"state": state, "method": "form", "text_version": "2026-02", "requested_at": ts,
           "double_opt_in": False}
    if state == "withdrawn":
        rec["withdrawn_at"] = ts
    v = _b(json.dumps(rec, separators=(",", ":")))
    f = _b("consent:" + channel)
    tail = b"$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(f), f, len(v), v)
    keypre = prefix.encode() + b"citizen:"
    with Pipe(target, chunk=4 << 20) as pipe:
        for i in range(first, first + n):
            key = keypre + id_of(i).encode()
            pipe.add(b"*4\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n%s" % (len(key), key, tail))
        return pipe.close()


# =============================================================================
# the expected outcome
# =============================================================================

def job_priority(job):
    return job.get("priority") or ("urgent" if job.get("kind") == "alert" else "normal")


def audience_of(citizens, job):
    """The citizens a job's audience names, in the stable (lexicographic)
    order, each once."""
    aud = job["audience"]
    if "topic" in aud or "topics" in aud:
        ts = [aud["topic"]] if "topic" in aud else list(aud["topics"])
        sel = [c for c in citizens if any(t in c["topics"] for t in ts)]
    elif aud.get("all"):
        sel = list(citizens)
    elif "citizens" in aud:
        want = set(aud["citizens"])
        sel = [c for c in citizens if c["id"] in want]
    else:
        raise ValueError("expected() covers citizen audiences only, not %s" % sorted(aud))
    return sorted(sel, key=lambda c: c["id"].encode())


def choice_of(c, job):
    """Step 2 of "Who gets what": the citizen's chosen channels for job."""
    aud = job["audience"]
    if "topic" in aud or "topics" in aud:
        ts = [aud["topic"]] if "topic" in aud else list(aud["topics"])
    elif job.get("topic"):
        ts = [job["topic"]]
    else:
        ts = list(c["topics"])
    out = set()
    for t in ts:
        out.update(c["topics"].get(t, ()))
    return out


def contact_reason(c, ch, bounced=frozenset()):
    """Step 3: None when the channel's contact point is usable, else the
    suppression reason."""
    if ch == "webhook":
        return None                          # the citizen id itself
    if ch == "email":
        e = c.get("email")
        if e is None or e == "":
            return R_NO_CONTACT
        if c.get("email_state") == "bounced" or c.get("bounced_hash") \
                or contact_field("email", e) in bounced:
            return R_BOUNCED
        if not email_ok(e):
            return R_INVALID
        return None
    if ch == "sms":
        p = c.get("phone")
        if p is None or p == "":
            return R_NO_CONTACT
        kind = phone_kind(p)
        if c.get("phone_state") == "invalid" or kind is None:
            return R_INVALID
        if kind == "landline":
            return R_LANDLINE
        return None
    if ch == "push":
        # docs/citizens.md does not say what an all-dead token list is;
        # taken here as no contact point (no push channel exists yet)
        toks = [t for t in (c.get("push") or []) if t.get("state") == "active"]
        return None if toks else R_NO_CONTACT
    raise ValueError(ch)


CONSENT_REASON = {None: R_NO_CONSENT, "pending": R_PENDING, "withdrawn": R_WITHDRAWN}


def expected(citizens, job, now, daily_cap=5, bounced=frozenset()):
    """{(channel, citizen id): ("deliver", None) | ("suppressed", reason)
    | ("deferred", due unix seconds)} for job over citizens at time now,
    per docs/citizens.md "Precisely, per citizen and channel".  Pairs
    without a unit (step 1) are absent.  bounced: further P
    contacts:bounced fields (e.g. from an earlier job's 5xx)."""
    chans = [ch for ch in job["channels"] if ch in CITIZEN_CHANNELS]
    urgent = job_priority(job) == "urgent"
    out = {}
    for c in audience_of(citizens, job):
        choice = choice_of(c, job)
        live = []
        for ch in chans:
            if ch not in choice:
                continue                                     # 1
            st = c["consent"].get(ch)
            if st != "confirmed":
                out[(ch, c["id"])] = ("suppressed", CONSENT_REASON.get(st, R_NO_CONSENT))  # 2
                continue
            why = contact_reason(c, ch, bounced)             # 3
            if why:
                out[(ch, c["id"])] = ("suppressed", why)
                continue
            live.append(ch)
        if not live:
            continue
        if not urgent and daily_cap > 0:                     # 4
            others = [j for j in c.get("cap_others") or () if j != job["id"]]
            if len(others) >= daily_cap:
                for ch in live:
                    out[(ch, c["id"])] = ("suppressed", R_CAP)
                continue
        due = 0
        if not urgent and c.get("quiet"):                    # 5
            due = quiet_until(c["quiet"], c.get("tz"), now)
        for ch in live:
            out[(ch, c["id"])] = ("deferred", due) if due else ("deliver", None)   # 6
    return out


def counted_for_cap(citizens, job, now, daily_cap=5, bounced=frozenset()):
    """Ids of the citizens step 4 counts the job for (at least one unit
    left after steps 1-3, cap on, job not urgent)."""
    if job_priority(job) == "urgent" or daily_cap <= 0:
        return set()
    want = expected(citizens, job, now, daily_cap, bounced)
    live = set()
    for (ch, cid), (what, why) in want.items():
        if what != "suppressed" or why == R_CAP:
            live.add(cid)
    return live


def summarize(want):
    """{channel: {"deliver": n, "deferred": n, "suppressed": {reason: n}}}"""
    s = {}
    for (ch, _), (what, why) in want.items():
        d = s.setdefault(ch, {"deliver": 0, "deferred": 0, "suppressed": {}})
        if what == "suppressed":
            d["suppressed"][why] = d["suppressed"].get(why, 0) + 1
        else:
            d[what] += 1
    return s


def describe(c):
    """A one-line description of a citizen for failure messages (no
    contact points in clear: classes only)."""
    return ("%s tz=%s quiet=%s(%s) email=%s/%s phone=%s topics=%s consent=%s cap_others=%d"
            % (c["id"], c.get("tz"), c.get("quiet"), c.get("quiet_class"),
               c.get("email_class"), c.get("email_state"), c.get("phone_class"),
               ",".join("%s:%s" % (t, "+".join(v)) for t, v in sorted(c["topics"].items())),
               ",".join("%s=%s" % kv for kv in sorted(c["consent"].items())),
               len(c.get("cap_others") or ())))


# =============================================================================
# self-check
# =============================================================================

def _selfcheck(n, seed):
    """Load n citizens into a private Redis, read a sample back and
    recompute the rules from what Redis holds; print timings."""
    import tempfile
    import procs
    from redisd import RedisServer
    from resp import pairs
    tmp = tempfile.mkdtemp(prefix="citizens-gen-")
    r = RedisServer(tmp, appendfsync="everysec").start()
    try:
        now = time.time()
        mix = Mix(daily_cap=3)
        t0 = time.monotonic()
        cits = generate(n, seed, now, mix)
        t1 = time.monotonic()
        cmds = load(r, "sc:", cits, now=now)
        t2 = time.monotonic()
        print("generated %d citizens in %.1f s, loaded (%d commands) in %.1f s"
              % (n, t1 - t0, cmds, t2 - t1))
        job = {"v": 1, "id": "sc-1", "kind": "newsletter", "priority": "bulk", "topic": "abfall",
               "audience": {"topic": "abfall"}, "channels": ["webhook", "email"],
               "subject": "s", "text": "t"}
        want = expected(cits, job, now, 3)
        print(json.dumps(summarize(want), indent=1, sort_keys=True))
        rng = random.Random(seed + 1)
        with r.client() as c:
            for cz in rng.sample(cits, min(200, n)):
                rec = pairs(c.call("HGETALL", "sc:citizen:" + cz["id"]))
                assert rec.get("email") == cz.get("email"), cz["id"]
                for t in cz["topics"]:
                    assert c.call("ZSCORE", "sc:topic:" + t, cz["id"]) == "0", (cz["id"], t)
                for ch, st in cz["consent"].items():
                    assert json.loads(rec["consent:" + ch])["state"] == st
                if cz["bounced_hash"]:
                    assert c.call("HEXISTS", "sc:contacts:bounced",
                                  contact_field("email", cz["email"])) == 1
                for d in cz["cap_days"]:
                    assert c.call("HGET", "sc:cap:" + d, cz["id"]) == ",".join(cz["cap_others"])
            print("citizens %d, topic:abfall %d" % (c.call("ZCARD", "sc:citizens"),
                                                   c.call("ZCARD", "sc:topic:abfall")))
        t3 = time.monotonic()
        load_uniform(r, "su:", n, "abfall")
        t4 = time.monotonic()
        set_consent_uniform(r, "su:", n, "webhook", "pending")
        t5 = time.monotonic()
        print("uniform: %d citizens in %.1f s; consent rewrite in %.1f s"
              % (n, t4 - t3, t5 - t4))
        print("redis used_memory %s" % r.info("memory").get("used_memory_human"))
    finally:
        r.stop()
        procs.kill_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    _selfcheck(int(sys.argv[1]) if len(sys.argv) > 1 else 10000,
               int(sys.argv[2]) if len(sys.argv) > 2 else 1)
