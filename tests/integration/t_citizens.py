# t_citizens - citizens, topics and consent (docs/citizens.md) through the
# real `herold` CLI against a private redis-server; one test also runs
# heroldd with the e-mail channel to deliver a double opt-in message.
#
# Exec'd by run.py in its own namespace: test, basic, ctx, H, procs, Fail,
# Sink, make_certs, email_cfg, EMAIL_ENV, parse_eml, TEMPLATE_DIR are run.py's.
#
#   /usr/bin/python3 tests/integration/run.py citizen
#
# `citizen show` and `citizen export` print contact points by design and the
# command lines carry them, so _CzCli writes the full transcript to
# cli-citizen.log (kept for debugging, not grepped) and only the command
# words and stderr to cli.log, which the run-wide privacy check greps:
# errors must never quote a contact point.

import base64 as _cz_b64
import hashlib as _cz_hashlib
import hmac as _cz_hmac

CZ_UNSUB_KEY = "cz-unsub-key-0123456789abcdef0123"
CZ_CONFIRM_URL = "https://buergerservice.musterstadt.example/bestaetigen?t={token}"


class _CzCli(H.Cli):
    """herold -c CONFIG ... for citizen commands (see the file comment)."""

    def __init__(self, tdir, cfg_path, env=None):
        super().__init__(tdir, cfg_path, env)
        self.full = os.path.join(tdir, "cli-citizen.log")

    def run(self, *args, stdin_data=None, timeout=60):
        args = [str(a) for a in args]
        argv = [H.program("herold"), "-c", self.cfg_path] + args
        try:
            r = subprocess.run(argv, input=stdin_data, capture_output=True,
                               env=self.env, timeout=timeout * procs.SCALE)
        except subprocess.TimeoutExpired:
            raise procs.Timeout("herold %s did not finish" % " ".join(args[:2]))
        out = r.stdout.decode("utf-8", "replace")
        err = r.stderr.decode("utf-8", "replace")
        with open(self.full, "a", encoding="utf-8") as f:
            f.write("$ herold %s\n-> rc=%d\n%s%s" % (" ".join(args), r.returncode, out, err))
        with open(self.log, "a", encoding="utf-8") as f:
            f.write("$ herold %s ...\n-> rc=%d\n%s" % (" ".join(args[:2]), r.returncode, err))
        return r.returncode, out, err

    def ok(self, *args):
        rc, out, err = self.run(*args)
        if rc != 0:
            raise Fail("herold %s: rc=%d %s" % (" ".join(map(str, args[:3])), rc, err.strip()))
        return out


def _cz_setup(ctx, redis_kw=None, **citizens):
    c = {"optin_ttl_hours": 1, "confirm_url": CZ_CONFIRM_URL, "unsubscribe_key": CZ_UNSUB_KEY}
    c.update(citizens)
    r, m, cfg, _ = basic(ctx, redis_kw=redis_kw, citizens=c)
    return r, cfg, _CzCli(ctx.dir, cfg)


def _cz_email(n):
    return "buerger%d.%s@Example.ORG" % (n, H.EMAIL_MARK)


def _cz_phone(n):
    return "%s%06d" % (H.PHONE_PREFIX, n)


def _cz_keys(r, prefix):
    keys = []
    with r.client() as c:
        cursor = "0"
        while True:
            cursor, batch = c.call("SCAN", cursor, "MATCH", prefix + "*", "COUNT", "1000")
            keys += batch
            if cursor == "0":
                break
    return sorted(set(keys))


def _cz_dump(r, prefix):
    """{key: (type, content)} of every key under prefix: everything Redis holds."""
    out = {}
    with r.client(timeout=30) as c:
        for k in _cz_keys(r, prefix):
            t = c.call("TYPE", k)
            if t == "hash":
                v = c.call("HGETALL", k)
            elif t == "zset":
                v = c.call("ZRANGE", k, "0", "-1", "WITHSCORES")
            elif t == "list":
                v = c.call("LRANGE", k, "0", "-1")
            elif t == "set":
                v = sorted(c.call("SMEMBERS", k))
            elif t == "stream":
                v = c.call("XRANGE", k, "-", "+")
            else:
                v = c.call("GET", k)
            out[k] = (t, v)
    return out


def _cz_record(r, prefix, cid):
    with r.client() as c:
        return _cz_pairs(c.call("HGETALL", prefix + "citizen:" + cid))


def _cz_pairs(flat):
    return {flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}


def _cz_history(r, prefix, cid):
    with r.client() as c:
        return [json.loads(x) for x in c.call("LRANGE", prefix + "citizen:%s:history" % cid, "0", "-1")]


def _cz_optin_jobs(r, prefix):
    """The opt-in jobs in the normal lane, parsed, oldest first."""
    return [json.loads(f["job"]) for _, f in H.stream(r, H.lane_key(prefix))
            if json.loads(f["job"])["id"].startswith("optin-")]


def _cz_mac(cid, topic, key=CZ_UNSUB_KEY):
    msg = cid.encode() + b"\0" + topic.encode()
    return _cz_hmac.new(key.encode(), msg, _cz_hashlib.sha256).hexdigest()[:24]


def _cz_optin_key(prefix, token):
    return prefix + "optin:" + _cz_hashlib.sha256(token.encode()).hexdigest()


def _cz_expect_clean_err(ctx, err, *values):
    for v in values:
        ctx.expect(v not in err, "the error quotes a value: %r" % err.strip())


@test
def citizen_bad_input(ctx):
    """Every bad field is refused with its path, nothing is written, and the
    error never quotes the value."""
    r, cfg, cli = _cz_setup(ctx)
    bad_email = "kaputt..%s@@example.org" % H.EMAIL_MARK
    bad_phone = H.PHONE_PREFIX + "12345678901"
    cases = [
        (("--email", bad_email), 1, "email: expected an e-mail address"),
        (("--phone", bad_phone), 1, "phone: expected an E.164 number"),
        (("--topic", "abfall=sms,fax"), 1, "topics[0].channels: expected distinct channels"),
        (("--topic", "abfall=sms", "--topic", "Kultur=email"), 1, "topics[1].topic: expected"),
        (("--topic", "abfall"), 1, "topics[0]: expected --topic NAME=CH,CH"),
        (("--topic", "all=email"), 1, "topics[0].topic: \"all\" is reserved"),
        (("--consent", "email:mail:2026-01"), 1, "consents[0].method: expected form, letter"),
        (("--consent", "email:form"), 1, "consents[0]: expected --consent"),
        (("--consent", "sms:letter:v1", "--consent", "sms:form:v1"), 1,
         "consents[1].channel: channel given twice"),
        (("--quiet", "22-7"), 1, "quiet: expected quiet hours HH:MM-HH:MM"),
        (("--tz", "Mars/Olympus_Mons"), 1, "tz: expected an IANA time zone"),
        (("--lang", "Deutsch"), 1, "lang: expected a language tag"),
        (("--push", "apns:nicht-hex"), 1, "push[0].token: expected a apns push token"),
        (("--push", "fcm"), 1, "push: expected --push PLATFORM:TOKEN"),
        # valid syntax, but an e-mail consent by form needs an address to confirm
        (("--consent", "email:form:2026-01"), 1, "email: an e-mail consent must be confirmed"),
        (("--no-email",), 64, "only for citizen update"),
        (("--bogus", "x"), 64, "unknown option"),
        (("--lang",), 64, "needs a value"),
    ]
    for extra, want_rc, want in cases:
        rc, out, err = cli.run("citizen", "add", "b-1", *extra)
        ctx.expect(rc == want_rc, "add %s: rc=%d, want %d (%s)" % (extra[0], rc, want_rc, err.strip()))
        ctx.expect(want in err, "add %s: stderr %r lacks %r" % (extra[0], err.strip(), want))
        _cz_expect_clean_err(ctx, err, bad_email, bad_phone, "nicht-hex")
    rc, out, err = cli.run("citizen", "add", "kanarienvogel@example.org")
    ctx.expect(rc == 1 and "id: expected 1-64 characters" in err, "an address as id: rc=%d %r" % (rc, err))
    _cz_expect_clean_err(ctx, err, "kanarienvogel@")
    rc, out, err = cli.run("citizen", "add")
    ctx.expect(rc == 64, "citizen add without id: rc=%d" % rc)
    rc, out, err = cli.run("citizen", "update", "b-1", "--lang", "en")
    ctx.expect(rc == 4 and "no such citizen" in err, "update of a missing citizen: rc=%d %r" % (rc, err))
    left = _cz_keys(r, ctx.prefix)
    ctx.expect(not left, "refused input wrote keys: %s" % left)

    # a valid record; then refused updates change nothing at all
    email = _cz_email(1)
    out = cli.ok("citizen", "add", "b-1", "--email", email, "--phone", _cz_phone(1),
                 "--topic", "abfall=email,sms", "--consent", "email:letter:2026-01",
                 "--consent", "sms:counter:2026-01", "--lang", "de-x-ls", "--quiet", "22:00-07:00")
    ctx.expect(out.strip() == "created b-1", "add printed %r" % out)
    before = _cz_dump(r, ctx.prefix)
    for extra, want in [
            (("--topic", "abfall=email", "--topic", "Bad=sms"), "topics[1].topic"),
            (("--drop-topic", "abfall", "--topic", "abfall=sms"), "both subscribed and dropped"),
            (("--withdraw", "fax"), "withdraw[0]: expected email, sms, push or webhook"),
            (("--withdraw", "sms", "--consent", "sms:letter:v2"), "both given and withdrawn"),
            (("--email", bad_email), "email: expected an e-mail address")]:
        rc, out, err = cli.run("citizen", "update", "b-1", *extra)
        ctx.expect(rc == 1 and want in err, "update %s: rc=%d %r" % (extra, rc, err.strip()))
        _cz_expect_clean_err(ctx, err, bad_email)
    rc, out, err = cli.run("citizen", "add", "b-1", "--email", email)
    ctx.expect(rc == 1 and "citizen exists" in err, "second add: rc=%d %r" % (rc, err))
    # the same data again is no change at all (not even updated_at)
    out = cli.ok("citizen", "update", "b-1", "--email", email, "--topic", "abfall=sms,email",
                 "--consent", "email:letter:2026-01")
    ctx.expect(out.strip() == "unchanged b-1", "same update printed %r" % out)
    after = _cz_dump(r, ctx.prefix)
    ctx.expect(after == before, "refused or empty updates changed Redis: %s"
               % sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k)))

    # the domain is stored lower-case; show, show --json
    rec = _cz_pairs(before[ctx.prefix + "citizen:b-1"][1])
    ctx.expect(rec["email"] == email.split("@")[0] + "@example.org", "address stored as %r" % rec["email"])
    out = cli.ok("citizen", "show", "b-1")
    for want in ("Citizen b-1", "abfall", "email,sms", "confirmed", "by letter", "22:00-07:00",
                 "de-x-ls", rec["email"]):
        ctx.expect(want in out, "show lacks %r:\n%s" % (want, out))
    j = json.loads(cli.ok("citizen", "show", "b-1", "--json"))
    ctx.expect(j["consent:sms"]["state"] == "confirmed" and j["consent:sms"]["method"] == "counter",
               "show --json consent:sms %r" % j.get("consent:sms"))
    rc, out, err = cli.run("citizen", "show", "b-2")
    ctx.expect(rc == 4, "show of a missing citizen: rc=%d" % rc)

    # update semantics: remove contact points, change channels, drop, withdraw
    out = cli.ok("citizen", "update", "b-1", "--no-phone", "--topic", "abfall=email",
                 "--topic", "kultur=email", "--withdraw", "sms")
    ctx.expect(out.strip() == "updated b-1", "update printed %r" % out)
    rec = _cz_record(r, ctx.prefix, "b-1")
    ctx.expect("phone" not in rec and "phone_state" not in rec, "phone not removed")
    ctx.expect(rec["topic:abfall"] == "email" and rec["topic:kultur"] == "email", "topics %r" % rec)
    ctx.expect(json.loads(rec["consent:sms"])["state"] == "withdrawn", "sms consent %r" % rec["consent:sms"])
    cli.ok("citizen", "update", "b-1", "--drop-topic", "abfall")
    with r.client() as c:
        ctx.expect(c.call("ZSCORE", ctx.prefix + "topic:abfall", "b-1") is None, "still in topic:abfall")
        ctx.expect(c.call("ZSCORE", ctx.prefix + "topic:kultur", "b-1") is not None, "not in topic:kultur")
        ctx.expect(c.call("ZSCORE", ctx.prefix + "citizens", "b-1") is not None, "not in citizens")
        ctx.expect(c.call("SISMEMBER", ctx.prefix + "topics", "abfall") == 1, "topics lost abfall")
    events = [e["event"] for e in _cz_history(r, ctx.prefix, "b-1")]
    want = ["created", "subscribed", "consent_given", "consent_given", "channels_changed",
            "subscribed", "consent_withdrawn", "unsubscribed"]
    ctx.expect(events == want, "history %s, want %s" % (events, want))
    for e in _cz_history(r, ctx.prefix, "b-1"):
        ctx.expect(H.EMAIL_MARK not in json.dumps(e), "a contact point in the history")


@test
def citizen_optin_tokens(ctx):
    """Double opt-in: the confirmation job in the normal lane, the hashed
    single-use key, idempotent re-puts, confirm once, expired / superseded /
    withdrawn tokens refused, a new address asks again."""
    r, cfg, cli = _cz_setup(ctx)
    email = _cz_email(2)
    out = cli.ok("citizen", "add", "c-1", "--email", email, "--lang", "en",
                 "--topic", "abfall=email,sms", "--topic", "kultur=sms",
                 "--consent", "email:form:2026-01")
    ctx.expect("created c-1" in out and "confirmation e-mail queued" in out, "add printed %r" % out)
    jobs = _cz_optin_jobs(r, ctx.prefix)
    ctx.expect(len(jobs) == 1, "%d opt-in jobs in the normal lane" % len(jobs))
    job = jobs[0]
    token = job["data"]["token"]
    ctx.expect(len(token) == 43 and re.match(r"^[A-Za-z0-9_-]{43}$", token), "token %r" % token)
    want = {"v": 1, "kind": "notice", "priority": "normal", "channels": ["email"],
            "audience": {"recipients": [{"id": "c-1", "email": email.split("@")[0] + "@example.org"}]},
            "template": "optin-bestaetigung", "lang": "en"}
    for k, v in want.items():
        ctx.expect(job.get(k) == v, "job %s = %r, want %r" % (k, job.get(k), v))
    ctx.expect(re.match(r"^optin-[0-9a-f]{16}$", job["id"]), "job id %r" % job["id"])
    ctx.expect(job["data"]["confirm_url"] == CZ_CONFIRM_URL.replace("{token}", token),
               "confirm_url %r" % job["data"].get("confirm_url"))
    ctx.expect(job["data"]["hours"] == 1 and job["data"].get("topics") == ["abfall"],
               "data %r" % {k: v for k, v in job["data"].items() if k != "token"})
    okey = _cz_optin_key(ctx.prefix, token)
    with r.client() as c:
        o = _cz_pairs(c.call("HGETALL", okey))
        ttl = c.call("TTL", okey)
        ctx.expect(c.call("HGET", ctx.prefix + "job:" + job["id"], "state") == "queued",
                   "the opt-in job has no record: enqueued other than by script_enqueue?")
        leaked = [k for k in _cz_keys(r, ctx.prefix) if token in k]
    ctx.expect(o.get("citizen") == "c-1" and o.get("channel") == "email" and o.get("created_at"),
               "optin hash %r" % o)
    ctx.expect(0 < ttl <= 3600, "optin TTL %r, want <= 1 h" % ttl)
    ctx.expect(not leaked, "the token is in a key name")
    rec = _cz_record(r, ctx.prefix, "c-1")
    con = json.loads(rec["consent:email"])
    ctx.expect(con["state"] == "pending" and con["double_opt_in"] is False and con["method"] == "form"
               and con["text_version"] == "2026-01" and con.get("optin_expires_at"), "consent %r" % con)
    ctx.expect(token not in json.dumps(rec), "the token is in the record")
    ctx.expect(rec["email_state"] == "unverified", "email_state %r" % rec["email_state"])

    # the same consent again: no second message while one is pending
    out = cli.ok("citizen", "update", "c-1", "--email", email, "--consent", "email:form:2026-01")
    ctx.expect(out.strip() == "unchanged c-1", "re-put printed %r" % out)
    ctx.expect(len(_cz_optin_jobs(r, ctx.prefix)) == 1, "a second opt-in job for a pending consent")

    out = cli.ok("confirm", token)
    ctx.expect("confirmed: email consent of citizen c-1" in out, "confirm printed %r" % out)
    rec = _cz_record(r, ctx.prefix, "c-1")
    con = json.loads(rec["consent:email"])
    ctx.expect(con["state"] == "confirmed" and con["double_opt_in"] is True and con.get("confirmed_at")
               and "optin" not in con and "optin_expires_at" not in con, "consent after confirm %r" % con)
    ctx.expect(rec["email_state"] == "verified", "email_state %r" % rec["email_state"])
    last = _cz_history(r, ctx.prefix, "c-1")[-1]
    ctx.expect(last["event"] == "consent_confirmed" and last["channel"] == "email"
               and last["double_opt_in"] is True, "last history event %r" % last)
    with r.client() as c:
        ctx.expect(c.call("EXISTS", okey) == 0, "the optin key survived its use")
    rc, out, err = cli.run("confirm", token)
    ctx.expect(rc == 1 and "unknown, expired or already used" in err, "second confirm: rc=%d %r" % (rc, err))
    rc, out, err = cli.run("confirm", "not-a-token")
    ctx.expect(rc == 1 and "not a confirmation token" in err, "junk token: rc=%d %r" % (rc, err))
    # confirmed with the same text version: giving it again sends nothing
    out = cli.ok("citizen", "update", "c-1", "--consent", "email:form:2026-01")
    ctx.expect(out.strip() == "unchanged c-1" and len(_cz_optin_jobs(r, ctx.prefix)) == 1,
               "re-consent after confirmation: %r" % out)

    # expired
    cli.ok("citizen", "add", "c-2", "--email", _cz_email(3), "--consent", "email:form:2026-01")
    t2 = _cz_optin_jobs(r, ctx.prefix)[-1]["data"]["token"]
    with r.client() as c:
        c.call("PEXPIRE", _cz_optin_key(ctx.prefix, t2), "1")
    procs.wait_until(lambda: r.client().call("EXISTS", _cz_optin_key(ctx.prefix, t2)) == 0, 10,
                     "the optin key to expire")
    rc, out, err = cli.run("confirm", t2)
    ctx.expect(rc == 1 and "expired" in err, "expired token: rc=%d %r" % (rc, err))
    ctx.expect(json.loads(_cz_record(r, ctx.prefix, "c-2")["consent:email"])["state"] == "pending",
               "an expired token changed the consent")

    # superseded by a newer request (new text version): the old token is void
    cli.ok("citizen", "add", "c-3", "--email", _cz_email(4), "--consent", "email:form:v1")
    t3a = _cz_optin_jobs(r, ctx.prefix)[-1]["data"]["token"]
    out = cli.ok("citizen", "update", "c-3", "--consent", "email:form:v2")
    ctx.expect("confirmation e-mail queued" in out, "new text version sent nothing: %r" % out)
    t3b = _cz_optin_jobs(r, ctx.prefix)[-1]["data"]["token"]
    ctx.expect(t3a != t3b, "the same token twice")
    rc, out, err = cli.run("confirm", t3a)
    ctx.expect(rc == 1 and "replaced by a newer request" in err, "superseded token: rc=%d %r" % (rc, err))
    cli.ok("confirm", t3b)
    con = json.loads(_cz_record(r, ctx.prefix, "c-3")["consent:email"])
    ctx.expect(con["state"] == "confirmed" and con["text_version"] == "v2", "c-3 consent %r" % con)

    # withdrawn before confirming
    cli.ok("citizen", "add", "c-4", "--email", _cz_email(5), "--consent", "email:form:v1")
    t4 = _cz_optin_jobs(r, ctx.prefix)[-1]["data"]["token"]
    cli.ok("citizen", "update", "c-4", "--withdraw", "email")
    rc, out, err = cli.run("confirm", t4)
    ctx.expect(rc == 1, "a token confirmed a withdrawn consent (rc=%d)" % rc)
    ctx.expect(json.loads(_cz_record(r, ctx.prefix, "c-4")["consent:email"])["state"] == "withdrawn",
               "withdrawn consent changed by confirm")

    # a new address for a double-opt-in consent asks again, at the new address
    n = len(_cz_optin_jobs(r, ctx.prefix))
    new = _cz_email(6)
    out = cli.ok("citizen", "update", "c-1", "--email", new)
    ctx.expect("confirmation e-mail queued" in out, "address change sent nothing: %r" % out)
    jobs = _cz_optin_jobs(r, ctx.prefix)
    ctx.expect(len(jobs) == n + 1 and jobs[-1]["audience"]["recipients"][0]["email"]
               == new.split("@")[0] + "@example.org", "no opt-in to the new address")
    rec = _cz_record(r, ctx.prefix, "c-1")
    ctx.expect(json.loads(rec["consent:email"])["state"] == "pending" and rec["email_state"] == "unverified",
               "after the address change: %s / %s" % (rec["consent:email"], rec["email_state"]))
    # letter consent: confirmed at once, no message
    out = cli.ok("citizen", "add", "c-5", "--email", _cz_email(7), "--consent", "email:letter:v1")
    ctx.expect("queued" not in out and len(_cz_optin_jobs(r, ctx.prefix)) == n + 1,
               "a letter consent sent an opt-in")


@test
def citizen_optin_delivered(ctx):
    """The opt-in message end to end: heroldd renders optin-bestaetigung
    and delivers it; the link's token confirms; the List-Unsubscribe token
    the e-mail channel made is accepted by `herold unsubscribe` (the key
    comes from channels.email.unsubscribe.key)."""
    certs = make_certs(ctx)
    sink = Sink(ctx, "--tls-cert", os.path.join(certs, "good.pem"), "--tls-key",
                os.path.join(certs, "good.key"), "--auth", "%s:%s" % (SMTP_USER, SMTP_PASS)).start()
    r = ctx.redis()
    cfg = email_cfg(ctx, r, sink, certs)
    with open(cfg) as f:
        doc = json.load(f)
    doc["citizens"] = {"optin_ttl_hours": 48, "confirm_url": CZ_CONFIRM_URL}
    doc["templates"] = {"dir": TEMPLATE_DIR}
    H.write_config(cfg, doc)
    d = ctx.daemon(cfg, env=EMAIL_ENV)
    cli = _CzCli(ctx.dir, cfg, env=EMAIL_ENV)
    email = _cz_email(8)
    cli.ok("citizen", "add", "d.1", "--email", email, "--topic", "abfall=email",
           "--topic", "baustellen=email", "--consent", "email:form:2026-01")
    # heroldd may have finished the job (and deleted its payload) already:
    # the events stream keeps its id
    def optin_id():
        for _, f in H.stream(r, ctx.prefix + "events"):
            if (f.get("job") or "").startswith("optin-"):
                return f["job"]
        jobs = _cz_optin_jobs(r, ctx.prefix)
        return jobs[0]["id"] if jobs else None
    job = {"id": procs.wait_until(optin_id, 30, "the opt-in job to be queued")}
    cli.wait_state(job["id"], daemons=[d])
    msgs = sink.messages()
    ctx.expect(len(msgs) == 1, "sink got %d messages" % len(msgs))
    msg = parse_eml(msgs[0][1])
    ctx.expect(msg["To"].addresses[0].addr_spec.lower() == email.lower(), "To %r" % str(msg["To"]))
    ctx.expect(str(msg["Subject"]) == "Bitte bestätigen Sie Ihre Anmeldung für E-Mail-Benachrichtigungen",
               "subject %r" % str(msg["Subject"]))
    text = msg.get_body(("plain",)).get_content()
    for want in ("48 Stunden", "- abfall", "- baustellen", "müssen Sie nichts tun",
                 "Stadt Musterstadt – Bürgeramt"):
        ctx.expect(want in text, "the text lacks %r" % want)
    m = re.search(r"bestaetigen\?t=([A-Za-z0-9_-]{43})", text)
    ctx.expect(m, "no confirmation link in the text")
    ctx.expect(msg.get_body(("html",)) is not None, "no HTML part")
    out = cli.ok("confirm", m.group(1))
    ctx.expect("confirmed" in out, "confirm printed %r" % out)
    lu = str(msg["List-Unsubscribe"] or "")
    um = re.search(r"abmelden\?t=([^>,\s]+)", lu)
    ctx.expect(um, "no unsubscribe token in %r" % lu)
    ctx.expect(um.group(1).startswith("d.1.all."), "token %r" % um.group(1))
    out = cli.ok("unsubscribe", um.group(1))
    ctx.expect("unsubscribed from 2 topics" in out, "unsubscribe printed %r" % out)
    rec = _cz_record(r, ctx.prefix, "d.1")
    ctx.expect(not [k for k in rec if k.startswith("topic:")], "topics left: %r" % rec)
    ctx.expect(json.loads(rec["consent:email"])["state"] == "confirmed", "unsubscribe touched consent")


@test
def citizen_unsubscribe(ctx):
    """Unsubscribe tokens: one topic, then "all"; forged or mismatched MACs
    are refused; ids with dots parse."""
    r, cfg, cli = _cz_setup(ctx)
    cli.ok("citizen", "add", "u.7.x", "--email", _cz_email(9), "--consent", "email:letter:v1",
           "--topic", "abfall=email", "--topic", "baustellen=email,sms", "--topic", "kultur=email")
    cli.ok("citizen", "add", "u-8", "--email", _cz_email(10), "--topic", "abfall=email")
    tok = "u.7.x.abfall." + _cz_mac("u.7.x", "abfall")
    forged = [tok[:-1] + ("0" if tok[-1] != "0" else "1"),        # one hex digit off
              "u-8.abfall." + _cz_mac("u.7.x", "abfall"),           # another citizen
              "u.7.x.kultur." + _cz_mac("u.7.x", "abfall"),         # another topic
              "u.7.x.all." + _cz_mac("u.7.x", "all", key="wrong-key-0123456789abcdef"),
              "u.7.x.abfall." + _cz_mac("u.7.x", "abfall")[:23],    # short
              "abfall." + _cz_mac("u.7.x", "abfall"), "", "..."]
    before = _cz_dump(r, ctx.prefix)
    for f in forged:
        rc, out, err = cli.run("unsubscribe", f)
        ctx.expect(rc == 1 and "invalid unsubscribe token" in err, "forged %r: rc=%d %r" % (f, rc, err))
    ctx.expect(_cz_dump(r, ctx.prefix) == before, "a forged token changed Redis")
    out = cli.ok("unsubscribe", tok)
    ctx.expect("unsubscribed from 1 topic" in out, "printed %r" % out)
    rec = _cz_record(r, ctx.prefix, "u.7.x")
    ctx.expect("topic:abfall" not in rec and "topic:kultur" in rec, "topics after: %r" % sorted(rec))
    with r.client() as c:
        ctx.expect(c.call("ZSCORE", ctx.prefix + "topic:abfall", "u.7.x") is None, "still in topic:abfall")
        ctx.expect(c.call("ZSCORE", ctx.prefix + "topic:abfall", "u-8") is not None, "u-8 lost abfall")
    last = _cz_history(r, ctx.prefix, "u.7.x")[-1]
    ctx.expect(last["event"] == "unsubscribed" and last["topic"] == "abfall" and last["via"] == "link",
               "history %r" % last)
    out = cli.ok("unsubscribe", tok)
    ctx.expect("nothing to unsubscribe" in out, "second use printed %r" % out)
    out = cli.ok("unsubscribe", "u.7.x.all." + _cz_mac("u.7.x", "all"))
    ctx.expect("unsubscribed from 2 topics" in out, "all printed %r" % out)
    rec = _cz_record(r, ctx.prefix, "u.7.x")
    ctx.expect(not [k for k in rec if k.startswith("topic:")], "topics left after all: %r" % sorted(rec))
    ctx.expect(json.loads(rec["consent:email"])["state"] == "confirmed", "unsubscribe withdrew consent")
    with r.client() as c:
        for t in ("baustellen", "kultur"):
            ctx.expect(c.call("ZSCORE", ctx.prefix + "topic:" + t, "u.7.x") is None, "still in " + t)
    rc, out, err = cli.run("unsubscribe", "nobody.all." + _cz_mac("nobody", "all"))
    ctx.expect(rc == 4, "unsubscribe of a missing citizen: rc=%d" % rc)


def _cz_plant(r, prefix, cid, email, phone):
    """What heroldd would have written about cid: ledger fields, a waiting
    unit, a daily-cap mark, a bounce mark, a rejected and a dead job."""
    field = "email:" + _cz_hashlib.sha256(email.lower().encode()).hexdigest()[:32]
    with r.client() as c:
        c.call("HSET", prefix + "job:x", "id", "x", "kind", "announcement", "topic", "abfall",
               "c:webhook:sent", "1", "c:email:suppressed", "1")
        c.call("HSET", prefix + "job:x:units", "webhook:" + cid, "sent|1|200|",
               "email:" + cid, "suppressed|0|0|consent pending", "webhook:other-9", "sent|1|200|")
        c.call("HSET", prefix + "job:y", "id", "y", "kind", "newsletter")
        c.call("ZADD", prefix + "job:y:later", "1790000000", "email:" + cid, "1790000000", "email:other-9")
        c.call("HSET", prefix + "job:y:units", "email:" + cid, "deferred|0|0|quiet hours")
        c.call("HSET", prefix + "cap:2026-03-01", cid, "x,y", "other-9", "x")
        c.call("HSET", prefix + "contacts:bounced", field, "550|2026-03-01T07:00:00Z|x")
        c.call("XADD", prefix + "rejected", "*", "payload",
               json.dumps({"id": "bad-1", "audience": {"recipients": [{"id": cid, "email": email}]}}),
               "reason", "subject: line break", "lane", "normal", "entry", "1-1", "ts", "t")
        c.call("XADD", prefix + "rejected", "*", "payload", '{"id":"bad-2","x":"unrelated"}',
               "reason", "v: expected 1", "lane", "normal", "entry", "1-2", "ts", "t")
        c.call("XADD", prefix + "dead", "*", "payload",
               json.dumps({"id": "poison-1", "audience": {"recipients": [{"id": "p", "phone": phone}]}}),
               "reason", "poison", "lane", "bulk", "entry", "1-3", "deliveries", "4", "ts", "t")
    return field


@test
def citizen_export(ctx):
    """Art. 15: the export holds the record, topics, history, pending
    opt-ins (without token), bounce and cap marks, deliveries, waiting
    units and the stream entries that name the citizen; nobody else's."""
    r, cfg, cli = _cz_setup(ctx)
    email, phone = _cz_email(11), _cz_phone(11)
    cli.ok("citizen", "add", "e-1", "--email", email, "--phone", phone,
           "--push", "apns:" + "ab" * 32, "--tz", "Europe/Vienna", "--quiet", "21:30-06:00",
           "--topic", "abfall=email,sms,push", "--topic", "kultur=sms",
           "--consent", "email:form:2026-01", "--consent", "sms:counter:2026-01")
    cli.ok("citizen", "add", "other-9", "--email", _cz_email(12), "--topic", "abfall=email")
    field = _cz_plant(r, ctx.prefix, "e-1", email, phone)
    token = _cz_optin_jobs(r, ctx.prefix)[0]["data"]["token"]
    out = cli.ok("citizen", "export", "e-1")
    ex = json.loads(out)
    rec = ex["record"]
    ctx.expect(ex["id"] == "e-1" and rec["email"].lower() == email.lower() and rec["phone"] == phone,
               "record contact points")
    ctx.expect(rec["push"] == [{"platform": "apns", "token": "ab" * 32, "state": "active"}],
               "push %r" % rec.get("push"))
    ctx.expect(rec["tz"] == "Europe/Vienna" and rec["quiet"] == "21:30-06:00", "tz/quiet")
    ctx.expect(rec["consent:email"]["state"] == "pending" and "optin" not in rec["consent:email"],
               "consent:email %r" % rec["consent:email"])
    ctx.expect(rec["consent:sms"]["state"] == "confirmed", "consent:sms")
    ctx.expect(ex["topics"] == {"abfall": "email,sms,push", "kultur": "sms"}, "topics %r" % ex["topics"])
    ctx.expect(sorted(ex["member_of"]) == ["abfall", "kultur"], "member_of %r" % ex["member_of"])
    ctx.expect([e["event"] for e in ex["history"]] ==
               ["created", "subscribed", "subscribed", "consent_requested", "consent_given"],
               "history %r" % [e["event"] for e in ex["history"]])
    ctx.expect(len(ex["pending_optins"]) == 1 and ex["pending_optins"][0]["channel"] == "email"
               and 0 < ex["pending_optins"][0]["expires_in_s"] <= 3600, "pending %r" % ex["pending_optins"])
    ctx.expect(ex["bounced"] == {"field": field, "value": "550|2026-03-01T07:00:00Z|x"},
               "bounced %r" % ex["bounced"])
    ctx.expect(ex["daily_cap"] == {"2026-03-01": "x,y"}, "daily_cap %r" % ex["daily_cap"])
    dl = sorted((x["job"], x["channel"], x["state"], x.get("kind"), x.get("topic")) for x in ex["deliveries"])
    ctx.expect(dl == [("x", "email", "suppressed", "announcement", "abfall"),
                      ("x", "webhook", "sent", "announcement", "abfall"),
                      ("y", "email", "deferred", "newsletter", None)], "deliveries %r" % dl)
    ctx.expect([(w["job"], w["channel"]) for w in ex["waiting"]] == [("y", "email")],
               "waiting %r" % ex["waiting"])
    se = sorted((x["stream"], x["citizen_alone"]) for x in ex["stream_entries"])
    ctx.expect(se == [("dead", True), ("jobs:normal", True), ("rejected", True)],
               "stream entries %r" % se)
    ctx.expect(token not in out and "optin:" not in out, "the export shows the opt-in token or its key")
    ctx.expect("other-9" not in out and _cz_email(12).split("@")[0] not in out,
               "the export shows another citizen")
    rc, out, err = cli.run("citizen", "export", "nobody")
    ctx.expect(rc == 4, "export of a missing citizen: rc=%d" % rc)


def _cz_aof_idle(r):
    def idle():
        i = r.info("persistence")
        return i.get("aof_rewrite_in_progress") == "0" and i.get("aof_rewrite_scheduled") == "0"
    procs.wait_until(idle, 60, "the AOF rewrite to finish")
    return r.info("persistence")


def _cz_grep_dir(d, needles):
    """[(path, needle)] for every needle (bytes) found in any file under d."""
    hits = []
    for root, _, files in os.walk(d):
        for n in files:
            p = os.path.join(root, n)
            try:
                with open(p, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            low = data.lower()
            hits += [(p, x) for x in needles if x.lower() in low]
    return hits


@test
def citizen_erase(ctx):
    """Art. 17 (fault-matrix row 45): after `herold citizen erase` no key or
    value under the prefix and no file in Redis' data directory (AOF after
    the rewrite) holds the citizen's id, address or number; other
    citizens are untouched."""
    # rdbcompression off: the AOF's RDB preamble must show its strings, or
    # an LZF-compressed canary would hide from the grep
    r, cfg, cli = _cz_setup(ctx, redis_kw={"extra_conf": {"rdbcompression": "no"}})
    cid = "kanari-x7q"
    email, phone = "loesch.%s@example.org" % H.EMAIL_MARK, _cz_phone(45)
    needles = [cid.encode(), H.EMAIL_MARK.encode(), phone.encode()]
    cli.ok("citizen", "add", cid, "--email", email, "--phone", phone,
           "--topic", "abfall=email,sms", "--topic", "kultur=webhook",
           "--consent", "email:form:2026-01", "--consent", "sms:letter:2026-01",
           "--consent", "webhook:counter:2026-01")
    cli.ok("citizen", "update", cid, "--topic", "kultur=webhook,sms", "--withdraw", "webhook")
    cli.ok("citizen", "add", "keep-1", "--email", "bleibt@musterstadt.example",
           "--topic", "abfall=email", "--consent", "email:letter:2026-01")
    _cz_plant(r, ctx.prefix, cid, email, phone)
    with r.client() as c:
        c.call("SADD", ctx.prefix + "topics", "verwaist")     # a topic only the set knows
        c.call("ZADD", ctx.prefix + "topic:verwaist", "0", cid)
        c.call("BGREWRITEAOF")
    _cz_aof_idle(r)
    # positive control: before the erase, the grep does find the canaries
    hits = _cz_grep_dir(r.dir, needles)
    ctx.expect({x for _, x in hits} == set(needles),
               "control: the data directory should hold every canary before the erase, found %s"
               % sorted({x for _, x in hits}))
    keep_before = {k: v for k, v in _cz_dump(r, ctx.prefix).items() if "keep-1" in k}

    rc, out, err = cli.run("citizen", "erase", cid)
    ctx.expect(rc == 0, "erase: rc=%d %s" % (rc, err.strip()))
    counts = dict(re.findall(r"^  (.+?)\s+(\d+)$", out, re.M))
    want = {"record": "1", "history": "1", "everyone index": "1", "topic memberships": "3",
            "pending opt-ins": "1", "daily-cap marks": "1", "delivery ledger fields": "3",
            "waiting or dead units": "1", "bounce marks": "1", "rejected jobs": "1", "dead jobs": "1",
            "queued jobs": "1"}
    ctx.expect(counts == want, "erase counts %s, want %s" % (counts, want))
    ctx.expect("AOF rewrite started" in out, "no AOF rewrite reported: %r" % out)
    ctx.note("erase: " + ", ".join("%s %s" % kv for kv in sorted(counts.items())))

    # every key and value under the prefix
    pats = {"id": re.compile(re.escape(cid)), "e-mail": H.PII_PATTERNS["e-mail"],
            "phone": H.PII_PATTERNS["phone"]}
    dump = _cz_dump(r, ctx.prefix)
    bad = []
    for k, (t, v) in dump.items():
        blob = k + "\n" + json.dumps(v)
        bad += ["%s in %s (%s)" % (n, k, t) for n, p in pats.items() if p.search(blob)]
    ctx.expect(not bad, "left in Redis after erase: %s" % bad[:10])
    ctx.expect({k: v for k, v in dump.items() if "keep-1" in k} == keep_before,
               "the erase touched another citizen")
    with r.client() as c:
        ctx.expect(c.call("HGET", ctx.prefix + "job:x:units", "webhook:other-9") == "sent|1|200|",
                   "another recipient's ledger field went")
        ctx.expect(c.call("XLEN", ctx.prefix + "rejected") == 1, "the unrelated rejected entry went")
        ctx.expect(c.call("ZSCORE", ctx.prefix + "topic:abfall", "keep-1") is not None, "keep-1 lost abfall")
    rc, out, err = cli.run("citizen", "erase", cid)
    ctx.expect(rc == 4 and "no such citizen" in err, "second erase: rc=%d %r" % (rc, err))

    # the append-only file: the erase's own rewrite, then one more as the
    # fault matrix asks; old AOF files are unlinked in the background
    info = _cz_aof_idle(r)
    ctx.expect(info.get("aof_last_bgrewrite_status") == "ok", "rewrite status %r"
               % info.get("aof_last_bgrewrite_status"))
    procs.wait_until(lambda: not _cz_grep_dir(r.dir, needles) or None, 30,
                     "the data directory to forget the citizen after erase's rewrite")
    with r.client() as c:
        c.call("BGREWRITEAOF")
    _cz_aof_idle(r)
    procs.wait_until(lambda: not _cz_grep_dir(r.dir, needles) or None, 30,
                     "the data directory to forget the citizen")
    # and after a restart (AOF replayed) it is still gone
    r.restart()
    dump = _cz_dump(r, ctx.prefix)
    bad = [k for k, v in dump.items() if any(p.search(k + json.dumps(v)) for p in pats.values())]
    ctx.expect(not bad, "back after restart: %s" % bad)
    files = sum(len(f) for _, _, f in os.walk(r.dir))
    ctx.note("grepped %d keys and %d files in the Redis data directory: 0 hits" % (len(dump), files))


@test
def citizen_topics(ctx):
    """topic list and topic show over more than one page (1000) of
    subscribers."""
    r, cfg, cli = _cz_setup(ctx)
    cli.ok("citizen", "add", "t-0", "--topic", "abfall=email,sms", "--topic", "kultur=push")
    with r.client(timeout=60) as c:
        cmds = []
        for i in range(1, 2501):
            ch = ("email", "email,sms", "push,webhook")[i % 3]
            cmds.append(("HSET", ctx.prefix + "citizen:t-%d" % i, "topic:abfall", ch,
                         "created_at", "2026-03-01T00:00:00Z"))
            cmds.append(("ZADD", ctx.prefix + "topic:abfall", "0", "t-%d" % i))
        for a in range(0, len(cmds), 500):
            c.pipeline(cmds[a:a + 500])
        c.call("ZADD", ctx.prefix + "topic:abfall", "0", "ghost")    # no record
    out = cli.ok("topic", "list")
    ctx.expect(re.search(r"^abfall\s+2502 subscribers$", out, re.M)
               and re.search(r"^kultur\s+1 subscriber$", out, re.M), "topic list:\n%s" % out)
    out = cli.ok("topic", "show", "abfall")
    n = {k: int(v) for k, v in re.findall(r"^  (\w+)\s+(\d+)$", out, re.M)}
    # i % 3: 0 -> email (833), 1 -> email,sms (834), 2 -> push,webhook (833); t-0 email,sms
    want = {"email": 833 + 834 + 1, "sms": 834 + 1, "push": 833, "webhook": 833}
    ctx.expect(n == want, "topic show counts %s, want %s\n%s" % (n, want, out))
    ctx.expect("Topic abfall: 2502 subscribers" in out and "1 member without a matching record" in out,
               "topic show:\n%s" % out)
    rc, out, err = cli.run("topic", "show", "Abfall")
    ctx.expect(rc == 1, "bad topic name: rc=%d" % rc)
    rc, out, err = cli.run("topic", "bogus")
    ctx.expect(rc == 64, "topic bogus: rc=%d" % rc)
