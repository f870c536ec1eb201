# t_import - `herold citizens import FILE.csv` (docs/import.md) against a
# real Redis.  Exec'd in run.py's namespace: test, Ctx, basic, Fail, H,
# procs, json, os, random, time are run.py's.
#
# Generated citizens carry canary contact points (H.EMAIL_MARK in every
# address, H.PHONE_PREFIX on every number), so a report that quotes a
# cell's value is caught here and by privacy_all_logs.

import pty as _imp_pty
import select as _imp_select

IMP_COLUMNS = ("id", "email", "phone", "lang", "tz", "quiet", "topics", "consent",
               "consent_at", "confirmed_at")
IMP_TOPICS = ("abfall", "kultur", "baustellen", "verkehr")


def _imp_rows(n, seed=1, first=0, form_every=250):
    """n valid rows as dicts {column: cell}; "" is an empty cell.  Every
    form_every-th row with an address gives e-mail consent by form (a
    double opt-in); the others by letter, counter or import."""
    rng = random.Random(seed)
    rows = []
    for i in range(first, first + n):
        has_email = rng.random() < 0.85
        has_phone = rng.random() < 0.5
        r = {c: "" for c in IMP_COLUMNS}
        r["id"] = rng.choice(("imp-%06d", "imp.%06d", "IMP_%06d", "imp:%06d")) % i
        if has_email:
            r["email"] = "i%d.%s@example.org" % (i, H.EMAIL_MARK)
        if has_phone:
            r["phone"] = "%s%06d" % (H.PHONE_PREFIX, i % 1000000)
        r["lang"] = rng.choice(("", "de", "en", "de-x-ls"))
        r["tz"] = rng.choice(("", "Europe/Berlin", "Europe/London"))
        r["quiet"] = rng.choice(("", "", "22:00-07:00", "21:30-06:00"))
        chans = ["webhook"] + (["email"] if has_email else []) + (["sms"] if has_phone else [])
        topics = {}
        for t in IMP_TOPICS:
            if rng.random() < 0.4:
                topics[t] = [c for c in chans if rng.random() < 0.6] or [chans[-1]]
        r["topics"] = ";".join("%s:%s" % (t, "+".join(cs)) for t, cs in topics.items())
        if topics and rng.random() < 0.05:          # spaces are allowed around items
            r["topics"] = " ; ".join("%s : %s" % (t, " + ".join(cs)) for t, cs in topics.items())
        consents = []
        form = has_email and i % form_every == 0
        imported = not form and rng.random() < 0.1
        if has_email:
            consents.append("email:%s:2026-01" % ("form" if form else "import" if imported
                                                  else "letter"))
        if has_phone:
            consents.append("sms:%s:2026-01" % ("import" if imported else "counter"))
        if rng.random() < 0.3:
            consents.append("webhook:%s:2026-01" % ("import" if imported else "letter"))
        r["consent"] = ";".join(consents)
        if imported and consents:       # given and confirmed in the earlier system
            r["consent_at"] = "2019-03-02T08:00:00Z"
            r["confirmed_at"] = "2019-03-02T08:05:00Z"
        elif consents and rng.random() < 0.5:
            r["consent_at"] = "2026-01-%02dT09:30:00Z" % (1 + i % 28)
        r["_topics"] = topics
        r["_consents"] = consents
        rows.append(r)
    return rows


def _imp_cell(v, rng):
    """A cell as RFC 4180 allows: quoted when it must be, sometimes when
    it need not be."""
    if any(ch in v for ch in ',"\r\n') or (v and rng.random() < 0.1):
        return '"' + v.replace('"', '""') + '"'
    return v


def _imp_write(path, rows, columns=IMP_COLUMNS, seed=2, eol="\n", bom=False, extra=()):
    """Write rows (dicts) as CSV with the header columns; extra: (index in
    rows, raw line) pairs inserted before that row, verbatim.  Returns
    {row index: line number} (the header is line 1)."""
    rng = random.Random(seed)
    lines = [",".join(columns)]
    where = {}
    extra = dict(extra)
    for k, r in enumerate(rows + [None]):
        for raw in extra.get(k, []):
            lines.append(raw)
        if r is None:
            break
        lines.append(",".join(_imp_cell(r.get(c, ""), rng) for c in columns))
        where[k] = len(lines)
    data = eol.join(lines) + eol
    with open(path, "wb") as f:
        if bom:
            f.write(b"\xef\xbb\xbf")
        f.write(data.encode("utf-8"))
    return where


def _imp_keys(r, prefix):
    """Every key under prefix (SCAN, never KEYS)."""
    out, cursor = [], "0"
    with r.client(timeout=60) as c:
        while True:
            cursor, keys = c.call("SCAN", cursor, "MATCH", prefix + "*", "COUNT", 1000)
            out.extend(keys)
            if cursor == "0":
                return sorted(set(out))


def _imp_snapshot(r, prefix):
    """{key: (type, value)} of everything under prefix."""
    keys = _imp_keys(r, prefix)
    with r.client(timeout=60) as c:
        types = c.pipeline([("TYPE", k) for k in keys])
        read = {"string": lambda k: ("GET", k), "hash": lambda k: ("HGETALL", k),
                "list": lambda k: ("LRANGE", k, 0, -1), "set": lambda k: ("SMEMBERS", k),
                "zset": lambda k: ("ZRANGE", k, 0, -1, "WITHSCORES"),
                "stream": lambda k: ("XRANGE", k, "-", "+")}
        vals = c.pipeline([read[t](k) for k, t in zip(keys, types)])
    snap = {}
    for k, t, v in zip(keys, types, vals):
        if t == "hash":
            v = sorted(_imp_pairs(v).items())
        elif t == "set":
            v = sorted(v)
        snap[k] = (t, v)
    return snap


def _imp_pairs(flat):
    return dict(zip(flat[0::2], flat[1::2]))


def _imp_private(ctx, text, label, values=()):
    """Fail if text quotes a contact point."""
    for pat_name, pat in H.PII_PATTERNS.items():
        m = pat.search(text)
        ctx.expect(m is None, "%s quotes personal data (%s) at %r" % (label, pat_name,
                                                                      text[max(0, m.start() - 40):m.end()] if m else ""))
    ctx.expect(H.PHONE_PREFIX not in text, "%s quotes a phone number" % label)
    for v in values:
        ctx.expect(v not in text, "%s quotes a cell value" % label)


_IMP_LINE = re.compile(r"^herold: line (\d+)\b", re.M)


def _imp_reported(err):
    return sorted({int(x) for x in _IMP_LINE.findall(err)})


_IMP_SUMMARY = re.compile(r"^(\d+) rows: (\d+) created, (\d+) changed, (\d+) unchanged, "
                          r"(\d+) skipped, (\d+) opt-in messages enqueued$", re.M)


def _imp_summary(ctx, out):
    m = _IMP_SUMMARY.search(out)
    ctx.expect(m is not None, "no summary line on stdout: %r" % out[-300:])
    return tuple(int(x) for x in m.groups())


def _imp_check_redis(ctx, r, rows):
    """Every row's citizen is in Redis as the row says (docs/citizens.md)."""
    P = ctx.prefix
    ids = [x["id"] for x in rows]
    with r.client(timeout=60) as c:
        everyone = set(c.call("ZRANGE", P + "citizens", 0, -1))
        ctx.expect(everyone == set(ids), "%scitizens has %d ids, want %d (missing e.g. %s)"
                   % (P, len(everyone), len(ids), sorted(set(ids) - everyone)[:3]))
        recs = c.pipeline([("HGETALL", P + "citizen:" + i) for i in ids])
        members = {t: set(c.call("ZRANGE", P + "topic:" + t, 0, -1)) for t in IMP_TOPICS}
        known = set(c.call("SMEMBERS", P + "topics"))
    bad = []
    for x, flat in zip(rows, recs):
        rec = _imp_pairs(flat)
        cid = x["id"]
        if not rec:
            bad.append("%s: no record" % cid)
            continue
        for f in ("email", "phone", "quiet"):
            if (rec.get(f) or "") != x[f]:
                bad.append("%s: field %s differs from the file" % (cid, f))
        if x["lang"] and rec.get("lang") != x["lang"]:
            bad.append("%s: lang %r, want %r" % (cid, rec.get("lang"), x["lang"]))
        if not x["lang"] and rec.get("lang") not in (None, "de"):
            bad.append("%s: lang %r without a lang cell" % (cid, rec.get("lang")))
        if x["tz"] and rec.get("tz") != x["tz"]:
            bad.append("%s: tz %r, want %r" % (cid, rec.get("tz"), x["tz"]))
        want_topics = {"topic:" + t: set(cs) for t, cs in x["_topics"].items()}
        got_topics = {k: set(v.split(",")) for k, v in rec.items() if k.startswith("topic:")}
        if got_topics != want_topics:
            bad.append("%s: topics %s, want %s" % (cid, got_topics, want_topics))
        for t in IMP_TOPICS:
            if (t in x["_topics"]) != (cid in members[t]):
                bad.append("%s: membership of topic:%s wrong" % (cid, t))
        got_cons = {k for k in rec if k.startswith("consent:")}
        want_cons = {"consent:" + s.split(":")[0] for s in x["_consents"]}
        if got_cons != want_cons:
            bad.append("%s: consents %s, want %s" % (cid, sorted(got_cons), sorted(want_cons)))
        for s in x["_consents"]:
            ch, method, version = s.split(":")
            try:
                cons = json.loads(rec.get("consent:" + ch) or "null") or {}
            except ValueError:
                bad.append("%s: consent:%s is not JSON" % (cid, ch))
                continue
            want_state = "pending" if method == "form" else "confirmed"
            if (cons.get("state"), cons.get("method"), cons.get("text_version")) != \
                    (want_state, method, version):
                bad.append("%s: consent:%s is %s/%s/%s, want %s/%s/%s" % (
                    cid, ch, cons.get("state"), cons.get("method"), cons.get("text_version"),
                    want_state, method, version))
    used = {t for x in rows for t in x["_topics"]}
    ctx.expect(used <= known, "%stopics lacks %s" % (P, sorted(used - known)))
    ctx.expect(not bad, "%d citizens differ from the file, e.g. %s" % (len(bad), bad[:5]))


def _imp_pty_run(ctx, cfg, *args, timeout=120):
    """herold with stderr on a terminal (a pty); returns (rc, stdout,
    stderr as the terminal saw it).  Appended to the CLI transcript."""
    master, slave = _imp_pty.openpty()
    argv = [H.program("herold"), "-c", cfg] + list(args)
    outpath = os.path.join(ctx.dir, "pty-stdout.txt")
    with open(outpath, "wb") as outf:
        p = procs.spawn(argv, stdout=outf, stderr=slave, env=H.base_env())
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout * procs.SCALE
    while time.monotonic() < deadline:
        ready, _, _ = _imp_select.select([master], [], [], 0.5)
        if ready:
            try:
                b = os.read(master, 65536)
            except OSError:             # EIO: the child closed the terminal
                break
            if not b:
                break
            chunks.append(b)
        elif p.poll() is not None:
            break
    os.close(master)
    rc = procs.stop(p, timeout=10)
    with open(outpath, "rb") as f:
        out = f.read().decode("utf-8", "replace")
    err = b"".join(chunks).decode("utf-8", "replace")
    with open(os.path.join(ctx.dir, "cli.log"), "a", encoding="utf-8") as f:
        f.write("$ herold %s  (stderr on a pty)\n-> rc=%d\n%s%s\n" % (" ".join(args), rc, out, err))
    return rc, out, err


@test
def import_10k_idempotent(ctx):
    r, m, cfg, cli = basic(ctx)
    rows = _imp_rows(10000, seed=11)
    cols = list(IMP_COLUMNS)
    random.Random(5).shuffle(cols)                  # columns in any order
    path = os.path.join(ctx.dir, "citizens-10k.csv")
    _imp_write(path, rows, columns=cols, eol="\r\n", bom=True)
    forms = sum(1 for x in rows if any(s.startswith("email:form:") for s in x["_consents"]))

    t0 = time.monotonic()
    rc, out, err = cli.run("citizens", "import", path, timeout=180)
    took = time.monotonic() - t0
    ctx.expect(rc == 0, "import: rc=%d, want 0; stderr %r" % (rc, err[-500:]))
    ctx.expect(_imp_summary(ctx, out) == (10000, 10000, 0, 0, 0, forms),
               "summary %r, want 10000 created and %d opt-ins" % (out.strip(), forms))
    ctx.expect("\r" not in err, "progress output although stderr is not a terminal: %r" % err[:200])
    _imp_private(ctx, out + err, "import output")
    ctx.note("10000 rows (columns %s) imported in %.1f s: %s" % (",".join(cols), took, out.strip()))
    _imp_check_redis(ctx, r, rows)
    optins = [k for k in _imp_keys(r, ctx.prefix) if k.startswith(ctx.prefix + "optin:")]
    ctx.expect(len(optins) == forms, "%d pending opt-ins, want %d" % (len(optins), forms))

    # the same file again: nothing changes, not one key, no second opt-in
    before = _imp_snapshot(r, ctx.prefix)
    rc, out, err = cli.run("citizens", "import", path, timeout=180)
    ctx.expect(rc == 0, "re-import: rc=%d; stderr %r" % (rc, err[-500:]))
    ctx.expect(_imp_summary(ctx, out) == (10000, 0, 0, 10000, 0, 0),
               "re-import summary %r, want 10000 unchanged, 0 opt-ins" % out.strip())
    after = _imp_snapshot(r, ctx.prefix)
    diff = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    ctx.expect(not diff, "re-import changed %d keys, e.g. %s" % (len(diff), diff[:5]))
    ctx.note("re-import: %s" % out.strip())

    # on a terminal: a progress line, redrawn with \r, ending at 100%
    rc, out, err = _imp_pty_run(ctx, cfg, "citizens", "import", path)
    ctx.expect(rc == 0, "import on a pty: rc=%d; %r" % (rc, err[-300:]))
    ctx.expect("\r" in err and "10000/10000 100%" in err and "rows/s" in err,
               "no progress line on the terminal: %r" % err[-300:])
    ctx.expect(_imp_summary(ctx, out) == (10000, 0, 0, 10000, 0, 0),
               "third import summary %r" % out.strip())
    _imp_private(ctx, out + err, "progress output")
    ctx.note("on a terminal: %d redraws" % err.count("\r"))


def _imp_bad_file(ctx, name="bad.csv"):
    """40 lines: good rows, and one bad row of each kind at known lines.
    Returns (path, good rows, {line: label}, bad ids, cell values that must
    not appear in any output)."""
    good = _imp_rows(30, seed=3, first=500, form_every=10 ** 9)
    m = H.EMAIL_MARK
    dup_id = good[3]["id"]
    bad_lines = [
        ("bad e-mail", 'bad-01,b1.%s@localhost,,,' % m),
        ("bad phone", 'bad-02,b2.%s@example.org,+49 900 123,abfall:email,email:letter:2026-01' % m),
        ("unknown channel", 'bad-03,b3.%s@example.org,,abfall:fax,email:letter:2026-01' % m),
        ("quoting error", 'bad-04,"b4.%s@example.org"x,,,' % m),
        ("wrong column count", 'bad-05,b5.%s@example.org,%s123456' % (m, H.PHONE_PREFIX)),
        ("blank", ""),
        ("duplicate id", '%s,b6.%s@example.org,,,' % (dup_id, m)),
        ("unclosed quote", 'bad-07,"b7.%s@example.org,,,' % m),
        ("phone too long", 'bad-08,,%s1234567890123,,' % H.PHONE_PREFIX),
        ("consent not channel:method:version", 'bad-09,b9.%s@example.org,,,email:letter' % m),
        ("topic without channels", 'bad-10,b10.%s@example.org,,abfall,' % m),
    ]
    columns = ("id", "email", "phone", "topics", "consent")
    for x in good:
        x["_consents"] = [s for s in x["_consents"] if s.split(":")[0] != "webhook" and
                          s.split(":")[1] != "import"]
        x["consent"] = ";".join(x["_consents"])
        for c in ("lang", "tz", "quiet", "consent_at", "confirmed_at"):
            x[c] = ""
    path = os.path.join(ctx.dir, name)
    where = _imp_write(path, good, columns=columns, bom=True,
                       extra=[(20, [raw for _, raw in bad_lines])])
    first_bad = where[19] + 1
    labels = {}
    for k, (label, raw) in enumerate(bad_lines):
        if label != "blank":
            labels[first_bad + k] = label
    labels[where[3]] = "duplicate id (first)"
    values = ["+49 900 123", "b1.%s@localhost" % m] + [x["email"] for x in good if x["email"]] \
        + [x["phone"] for x in good if x["phone"]]
    bad_ids = [raw.split(",")[0] for label, raw in bad_lines if raw.startswith("bad-")]
    return path, [x for x in good if x["id"] != dup_id], labels, bad_ids + [dup_id], values


@test
def import_bad_rows_nothing_written(ctx):
    r, m, cfg, cli = basic(ctx)
    path, good, labels, bad_ids, values = _imp_bad_file(ctx)

    for args in ((), ("--dry-run",)):
        rc, out, err = cli.run("citizens", "import", path, *args)
        ctx.expect(rc == 1, "import %s: rc=%d, want 1; %r" % (" ".join(args), rc, err[-300:]))
        got = _imp_reported(err)
        ctx.expect(got == sorted(labels), "import %s reported lines %s, want %s (%s)"
                   % (" ".join(args), got, sorted(labels),
                      ", ".join("%d %s" % kv for kv in sorted(labels.items()))))
        _imp_private(ctx, out + err, "the report", values)
        ctx.expect(not _imp_keys(r, ctx.prefix), "import %s wrote under %s: %s"
                   % (" ".join(args), ctx.prefix, _imp_keys(r, ctx.prefix)[:5]))
    ctx.expect("nothing imported" in err or "nothing written" in out,
               "the report does not say that nothing was imported")
    for line in sorted(labels):
        msg = [x for x in err.splitlines() if x.startswith("herold: line %d," % line) or
               x.startswith("herold: line %d:" % line)]
        ctx.note("%-36s %s" % (labels[line], msg[0][len("herold: "):] if msg else "?"))
    rc, out, err = cli.run("citizens", "import", path, "--dry-run")
    ctx.expect("%d rows: %d valid, %d invalid" % (len(good) + len(labels), len(good),
                                                  len(labels)) in out,
               "dry-run summary %r" % out.strip())

    # header errors: nothing is checked further, nothing written
    hdr = os.path.join(ctx.dir, "header.csv")
    cases = [
        ("unknown column", "id,email,colour\nh-1,h1.%s@example.org,red\n" % H.EMAIL_MARK, "colour"),
        ("no header row", "h-1,h1.%s@example.org,%s000001\nh-2,,\n" % (H.EMAIL_MARK, H.PHONE_PREFIX),
         "header row missing"),
        ("semicolons", "id;email\nh-1;h1.%s@example.org\n" % H.EMAIL_MARK, "';'"),
        ("column twice", "id,email,EMAIL\nh-1,,\n", "twice"),
        ("no id column", "email,phone\nh1.%s@example.org,\n" % H.EMAIL_MARK, 'no column "id"'),
        ("empty file", "", "empty"),
    ]
    for label, text, want in cases:
        with open(hdr, "w", encoding="utf-8") as f:
            f.write(text)
        rc, out, err = cli.run("citizens", "import", hdr, "--skip-invalid")
        ctx.expect(rc == 1, "%s: rc=%d, want 1; %r" % (label, rc, err))
        ctx.expect(want in err, "%s: stderr %r does not mention %r" % (label, err.strip(), want))
        _imp_private(ctx, out + err, "%s report" % label)
        ctx.note("%-14s %s" % (label, err.strip()[:150]))
    ctx.expect(not _imp_keys(r, ctx.prefix), "a bad header wrote under %s" % ctx.prefix)


@test
def import_skip_invalid(ctx):
    r, m, cfg, cli = basic(ctx)
    d = ctx.daemon(cfg)                 # an idle heroldd beside the import
    path, good, labels, bad_ids, values = _imp_bad_file(ctx)
    rc, out, err = cli.run("citizens", "import", path, "--skip-invalid")
    ctx.expect(rc == 1, "rc=%d, want 1 (rows were skipped); %r" % (rc, err[-300:]))
    got = _imp_reported(err)
    ctx.expect(got == sorted(labels), "reported lines %s, want %s" % (got, sorted(labels)))
    _imp_private(ctx, out + err, "the report", values)
    want = (len(good) + len(labels), len(good), 0, 0, len(labels), 0)
    ctx.expect(_imp_summary(ctx, out) == want, "summary %r, want %s" % (out.strip(), want))
    _imp_check_redis(ctx, r, good)
    with r.client() as c:
        there = [i for i in bad_ids if c.call("EXISTS", ctx.prefix + "citizen:" + i)]
    ctx.expect(not there, "invalid rows were imported: %s" % there)
    ctx.note(out.strip())
    # again: the good rows are unchanged, the bad ones still skipped
    rc, out, err = cli.run("citizens", "import", path, "--skip-invalid")
    want = (len(good) + len(labels), 0, 0, len(good), len(labels), 0)
    ctx.expect(rc == 1 and _imp_summary(ctx, out) == want,
               "second run: rc=%d summary %r, want %s" % (rc, out.strip(), want))
    ctx.expect(d.alive(), "heroldd died")
    d.term()


@test
def import_limits(ctx):
    r, m, cfg, cli = basic(ctx)
    # a line over 16384 bytes is one invalid row; the others are fine
    path = os.path.join(ctx.dir, "long.csv")
    with open(path, "w", encoding="utf-8") as f:
        f.write("id,topics\nl-1,abfall:email\nl-2,%s\nl-3,kultur:email\n"
                % ";".join("t%05d:email" % i for i in range(1700)))
    rc, out, err = cli.run("citizens", "import", path)
    ctx.expect(rc == 1 and _imp_reported(err) == [3] and "16384" in err,
               "long line: rc=%d stderr %r" % (rc, err.strip()[:300]))
    ctx.note("long line: %s" % err.strip().splitlines()[0])
    # more than a million rows: refused before anything is written
    path = os.path.join(ctx.dir, "million.csv")
    with open(path, "w", encoding="ascii") as f:
        f.write("id\n")
        for i in range(0, 1000001, 10000):
            f.write("".join("u%07d\n" % j for j in range(i, min(i + 10000, 1000001))))
    t0 = time.monotonic()
    rc, out, err = cli.run("citizens", "import", path, "--skip-invalid", timeout=180)
    ctx.expect(rc == 1 and "more than 1000000 rows" in err,
               "1000001 rows: rc=%d stderr %r" % (rc, err.strip()[:300]))
    ctx.expect(not _imp_keys(r, ctx.prefix), "rows were written from a file over the limit")
    ctx.note("1000001 rows refused in %.1f s: %s" % (time.monotonic() - t0, err.strip()[:120]))
    # a directory or a missing file is a system error
    rc, out, err = cli.run("citizens", "import", os.path.join(ctx.dir, "missing.csv"))
    ctx.expect(rc == 2, "missing file: rc=%d, want 2; %r" % (rc, err))


@test
def import_redis_dies_midway(ctx):
    r, m, cfg, cli = basic(ctx)
    rows = _imp_rows(10000, seed=23)
    path = os.path.join(ctx.dir, "citizens.csv")
    _imp_write(path, rows)
    forms = sum(1 for x in rows if any(s.startswith("email:form:") for s in x["_consents"]))
    outp, errp = os.path.join(ctx.dir, "import.out"), os.path.join(ctx.dir, "import.err")
    with open(outp, "wb") as o, open(errp, "wb") as e:
        p = procs.spawn([H.program("herold"), "-c", cfg, "citizens", "import", path],
                        stdout=o, stderr=e, env=H.base_env())

    def some_written():
        if p.poll() is not None:
            raise Fail("the import ended (rc=%s) before Redis was killed" % p.returncode)
        with r.client() as c:
            return c.call("ZCARD", ctx.prefix + "citizens") >= 1000
    procs.wait_until(some_written, 120, "1000 citizens to be written")
    r.kill()
    try:
        rc = p.wait(timeout=60 * procs.SCALE)
    except subprocess.TimeoutExpired:
        procs.kill(p)
        raise Fail("the import did not end within 60 s after Redis died")
    with open(outp, encoding="utf-8") as f:
        out = f.read()
    with open(errp, encoding="utf-8") as f:
        err = f.read()
    with open(os.path.join(ctx.dir, "cli.log"), "a", encoding="utf-8") as f:
        f.write("$ herold citizens import %s  (Redis killed)\n-> rc=%d\n%s%s" % (path, rc, out, err))
    ctx.expect(rc == 2, "rc=%d after Redis died, want 2; %r" % (rc, err[-300:]))
    ctx.expect("import stopped" in err and "again is safe" in err,
               "stderr does not say the import stopped and can be repeated: %r" % err[-300:])
    _imp_private(ctx, out + err, "the failure report")
    first = _imp_summary(ctx, out)
    ctx.note("killed Redis: %s / %s" % (out.strip(), err.strip().splitlines()[0]))
    ctx.expect(0 < first[1] < 10000, "created %d before the kill" % first[1])

    r.start()                           # the AOF (fsync always) holds every acknowledged write
    with r.client() as c:
        kept = c.call("ZCARD", ctx.prefix + "citizens")
    ctx.expect(kept >= first[1], "Redis holds %d citizens after the restart, the import "
               "counted %d created" % (kept, first[1]))
    rc, out, err = cli.run("citizens", "import", path, timeout=180)
    ctx.expect(rc == 0, "the import after the restart: rc=%d; %r" % (rc, err[-300:]))
    second = _imp_summary(ctx, out)
    ctx.expect(second[0] == 10000 and second[1] == 10000 - kept and second[2] == 0 and
               second[3] == kept and second[4] == 0,
               "second run %r: want %d created, %d unchanged" % (out.strip(), 10000 - kept, kept))
    ctx.expect(first[5] + second[5] == forms, "opt-ins %d + %d, want %d in all (none twice)"
               % (first[5], second[5], forms))
    _imp_check_redis(ctx, r, rows)
    optins = [k for k in _imp_keys(r, ctx.prefix) if k.startswith(ctx.prefix + "optin:")]
    ctx.expect(len(optins) == forms, "%d pending opt-ins, want %d" % (len(optins), forms))
    ctx.note("after the restart: %s" % out.strip())


@test
def import_optin_needs_address(ctx):
    """An e-mail consent by form is confirmed by e-mail: pass 1 refuses
    such a row when neither the row nor Redis has an address, so nothing
    is half-imported; a changed cell counts as changed."""
    r, m, cfg, cli = basic(ctx)
    m1, m2 = "q1.%s@example.org" % H.EMAIL_MARK, "q1-neu.%s@example.org" % H.EMAIL_MARK
    first = os.path.join(ctx.dir, "first.csv")
    with open(first, "w", encoding="utf-8") as f:
        f.write("id,email\nq-1,%s\nq-3,\n" % m1)
    rc, out, err = cli.run("citizens", "import", first)
    ctx.expect(rc == 0 and _imp_summary(ctx, out) == (2, 2, 0, 0, 0, 0),
               "first import: rc=%d %r %r" % (rc, out, err))

    forms = os.path.join(ctx.dir, "forms.csv")
    with open(forms, "w", encoding="utf-8") as f:
        f.write("id,consent\nq-1,email:form:2026-01\nq-2,email:form:2026-01\n"
                "q-3,email:form:2026-01\n")
    before = _imp_snapshot(r, ctx.prefix)
    for args in (("--dry-run",), ()):
        rc, out, err = cli.run("citizens", "import", forms, *args)
        ctx.expect(rc == 1 and _imp_reported(err) == [3, 4] and "column email: missing" in err,
                   "form consents without an address %s: rc=%d %r" % (args, rc, err))
        ctx.expect(_imp_snapshot(r, ctx.prefix) == before, "a refused file changed Redis")
    _imp_private(ctx, out + err, "the report", [m1])
    ctx.note(err.strip().splitlines()[0])
    rc, out, err = cli.run("citizens", "import", forms, "--skip-invalid")
    ctx.expect(rc == 1 and _imp_summary(ctx, out) == (3, 0, 1, 0, 2, 1),
               "--skip-invalid: rc=%d %r, want q-1 changed with one opt-in" % (rc, out))
    with r.client() as c:
        cons = json.loads(c.call("HGET", ctx.prefix + "citizen:q-1", "consent:email") or "{}")
        ctx.expect(cons.get("state") == "pending" and cons.get("method") == "form",
                   "q-1 consent:email %s, want pending by form" % cons)
        ctx.expect(not c.call("EXISTS", ctx.prefix + "citizen:q-2"), "q-2 was created")
        ctx.expect(c.call("HGET", ctx.prefix + "citizen:q-3", "consent:email") is None,
                   "q-3 got a consent")

    with open(first, "w", encoding="utf-8") as f:
        f.write("id,email\nq-1,%s\nq-3,\n" % m2)
    rc, out, err = cli.run("citizens", "import", first)
    ctx.expect(rc == 0 and _imp_summary(ctx, out)[:5] == (2, 0, 1, 1, 0),
               "new address: rc=%d %r, want 1 changed, 1 unchanged" % (rc, out))
    with r.client() as c:
        ctx.expect(c.call("HGET", ctx.prefix + "citizen:q-1", "email") == m2,
                   "q-1's address was not replaced")
    ctx.note("new address: %s" % out.strip())
