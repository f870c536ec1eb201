#!/usr/bin/python3
"""demo - herold end to end, for Stadt Musterstadt (`make demo`).

Starts a private redis-server and the webhook mock (the app backend of
the city) in a temporary directory, writes a configuration, starts
heroldd, registers a few citizens with `herold citizen add` (their topics,
channel choices and consent), and sends two jobs through it: the waste
collection dates for December to the subscribers of the topic "abfall"
(an announcement, normal lane) and a storm warning to everyone (an alert,
urgent lane, rendered in each citizen's language).  A third, invalid job
shows how herold refuses work.
Prints what happened, stops everything, and exits 0 only if all of it
worked.  Leaves no process behind.
"""

import base64
import calendar
import json
import os
import random
import shutil
import string
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(REPO, "tests", "harness"))

import procs                      # noqa: E402
import redisd                     # noqa: E402
import herold as H                # noqa: E402
from mockhttp import MockHTTP     # noqa: E402
from resp import pairs            # noqa: E402

PREFIX = "musterstadt:"
# (id, herold citizen add options, gets the announcement, gets the alert)
CITIZENS = [
    ("haushalt-10017", ["--topic", "abfall=webhook", "--consent", "webhook:letter:2026-01"],
     True, True),
    ("haushalt-10018", ["--topic", "abfall=webhook", "--topic", "kultur=webhook",
                        "--consent", "webhook:counter:2026-01"], True, True),
    ("haushalt-10231", ["--lang", "en", "--topic", "abfall=webhook",
                        "--consent", "webhook:form:2026-01"], True, True),
    ("haushalt-10232", ["--lang", "de-x-ls", "--topic", "kultur=webhook",
                        "--consent", "webhook:letter:2026-01"], False, True),
    # subscribed, but never gave consent for the app channel: suppressed
    ("haushalt-10540", ["--topic", "abfall=webhook"], False, False),
]


class DemoFailed(Exception):
    pass


def say(msg=""):
    print(msg, flush=True)


def indent(text, by="     "):
    return "\n".join(by + ln for ln in text.rstrip("\n").splitlines())


def suffix():
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(6))


def demo_config(redis_port, mock_url):
    return {
        "redis": {"host": "127.0.0.1", "port": redis_port, "prefix": PREFIX},
        "queue": {"consumer": "rathaus-1", "block_ms": 500},
        "delivery": {"window": 64, "backoff_base_ms": 500, "backoff_max_ms": 5000,
                     "drain_timeout_ms": 5000},
        "http": {"connect_timeout_ms": 2000, "timeout_ms": 5000},
        "flow": {"schedule_poll_ms": 250,
                 "providers": {"webhook": {"rate": 50, "burst": 10}}},
        "log": {"level": "info", "pseudonym_key": "${HEROLD_PSEUDONYM_KEY}"},
        "templates": {"dir": TEMPLATES},
        "channels": {"webhook": {"endpoints": [
            {"name": "stadt-app", "url": mock_url, "secret": "${HEROLD_WEBHOOK_SECRET}"}]}},
    }


TEMPLATES = os.path.join(H.REPO, "templates", "default")


def example(name):
    with open(os.path.join(TEMPLATES, name, "example.json"), encoding="utf-8") as f:
        return json.load(f)


def jobs(tag):
    announcement = {
        "v": 1, "id": "abfuhr-2026-12-01-%s" % tag, "kind": "announcement",
        "channels": ["webhook"], "topic": "abfall", "lang": "de",
        "audience": {"topic": "abfall"},
        "subject": "Abfuhrtermine Dezember",
        "text": ("Liebe Bürgerinnen und Bürger,\n\n"
                 "die Abfuhrtermine im Dezember:\n"
                 "  Restmüll:     Mittwoch, 3. und 17. Dezember\n"
                 "  Biotonne:     Freitag, 5., 12. und 19. Dezember\n"
                 "  Gelbe Tonne:  Mittwoch, 10. Dezember\n"
                 "  Papiertonne:  Dienstag, 23. Dezember\n\n"
                 "Wegen der Feiertage wird die Biotonne in der Woche vom 22. Dezember "
                 "erst am Samstag, 27. Dezember, geleert. Bitte stellen Sie die Tonnen "
                 "bis 6 Uhr an den Straßenrand.\n\n"
                 "Ihre Stadtverwaltung Musterstadt"),
    }
    # the alert is written once as a template, rendered per channel and in
    # each citizen's language (no "lang" in the job)
    alert = {
        "v": 1, "id": "unwetter-2026-12-01-%s" % tag, "kind": "alert",
        "channels": ["webhook"],
        "audience": {"all": True},
        "template": "unwetterwarnung", "data": example("unwetterwarnung"),
    }
    # invalid on purpose: no subject, and a kind herold does not know
    invalid = {
        "v": 1, "id": "werbung-2026-12-01-%s" % tag, "kind": "werbung",
        "channels": ["webhook"],
        "audience": {"citizens": ["haushalt-10017"]},
        "text": "Besuchen Sie den Weihnachtsmarkt!",
    }
    # a reminder scheduled a few seconds ahead: it waits in the scheduled set
    at = time.time() + 4
    reminder = {
        "v": 1, "id": "sitzung-2026-12-04-%s" % tag, "kind": "notice",
        "channels": ["webhook"], "topic": "abfall", "lang": "de",
        "audience": {"topic": "abfall"},
        "send_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + "Z",
        "subject": "Erinnerung: Ratssitzung am Donnerstag",
        "text": "Die öffentliche Ratssitzung beginnt am Donnerstag um 18 Uhr im Rathaussaal.",
    }
    return announcement, alert, invalid, reminder


def wait_rejected(redis, entry, timeout=30):
    def poll():
        for eid, fields in H.stream(redis, PREFIX + "rejected"):
            if fields.get("entry") == entry:
                return fields
        time.sleep(0.1)
        return None
    return procs.wait_until(poll, timeout, "the invalid job to be rejected")


def run(tmp):
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    env = {"HEROLD_WEBHOOK_SECRET": secret,
           "HEROLD_PSEUDONYM_KEY": base64.b64encode(os.urandom(24)).decode()}

    say("herold demo - Stadt Musterstadt")
    say()
    redis = redisd.RedisServer(tmp).start()
    mock = MockHTTP(tmp, secret, name="stadt-app").start()
    cfg_path = H.write_config(os.path.join(tmp, "herold.json"),
                              demo_config(redis.port, mock.url))
    daemon = H.Daemon(tmp, cfg_path, env=env)
    cli = H.Cli(tmp, cfg_path, env=env)
    say("  Redis        127.0.0.1:%d (appendonly yes, appendfsync always)" % redis.port)
    say("  Stadt-App    %s (mock webhook receiver, checks signatures)" % mock.url)
    daemon.start(timeout=30)
    say("  heroldd      pid %d, ready" % daemon.pid)
    say()

    say("  Citizens (herold citizen add): their topics, channels and consent")
    for cid, opts, _, _ in CITIZENS:
        rc, out, err = cli.run("citizen", "add", cid, *opts)
        if rc != 0:
            raise DemoFailed("herold citizen add %s: rc=%d %s" % (cid, rc, err.strip()))
        say("  $ herold citizen add %s %s" % (cid, " ".join(opts)))
    rc, out, err = cli.run("topic", "show", "abfall")
    say("  $ herold topic show abfall")
    say(indent(out))
    say()

    announcement, alert, invalid, reminder = jobs(suffix())
    rc, out, err = cli.run("render", "unwetterwarnung", "--channel", "sms")
    if rc != 0:
        raise DemoFailed("herold render failed: rc=%d %s" % (rc, err.strip()))
    say("  $ herold render unwetterwarnung --channel sms   (preview before sending)")
    say(indent(out))
    say()
    for job, what in ((announcement, "announcement"), (alert, "alert"), (reminder, "reminder")):
        rc, out, err = cli.enqueue(job)
        if rc != 0:
            raise DemoFailed("herold enqueue (%s) failed: rc=%d %s" % (what, rc, err.strip()))
        say("  herold enqueue %-32s -> %s" % (job["id"], out.strip().split(" ", 1)[0]))

    # The invalid job: the CLI refuses it, and so does heroldd when a
    # producer writes it into the stream directly.
    rc, out, err = cli.enqueue(invalid)
    if rc != 1:
        raise DemoFailed("herold enqueue accepted an invalid job (rc=%d)" % rc)
    say("  herold enqueue %-32s -> refused (exit 1): %s"
        % (invalid["id"], err.strip().replace("herold: invalid job: ", "")))
    entry = H.xadd_job(redis, PREFIX, invalid, lane="normal")
    say("  XADD %sjobs:normal (the same job, bypassing the CLI) -> entry %s" % (PREFIX, entry))
    say()

    def scheduled():
        st = cli.status(reminder["id"])
        return st if st and st.get("state") == "scheduled" else None
    procs.wait_until(scheduled, 30, "the reminder to be scheduled")
    rc, out, err = cli.run("schedule", "list")
    say("  $ herold schedule list     (send_at %s: waits, then goes out once)" % reminder["send_at"])
    say(indent(out))
    say()

    statuses = {}
    for job in (announcement, alert, reminder):
        statuses[job["id"]] = cli.wait_state(job["id"], ("done",), timeout=60, daemons=[daemon])
    rejected = wait_rejected(redis, entry)

    say("Delivery report")
    for job in (announcement, alert, reminder):
        rc, out, err = cli.run("status", job["id"])
        if rc != 0:
            raise DemoFailed("herold status %s: rc=%d %s" % (job["id"], rc, err.strip()))
        say("  $ herold status %s" % job["id"])
        say(indent(out))
    say()

    records = mock.records()
    expected = {(announcement["id"], cid) for cid, _, a, _ in CITIZENS if a} | \
               {(alert["id"], cid) for cid, _, _, b in CITIZENS if b} | \
               {(reminder["id"], cid) for cid, _, a, _ in CITIZENS if a}
    res = H.check(expected, records, list(statuses.values()))
    good = sum(1 for r in records if r.get("sig_ok"))
    say("  Stadt-App received %d webhook%s, signatures verified: %s (%d of %d)"
        % (len(records), "" if len(records) == 1 else "s",
           "yes" if records and good == len(records) else "NO", good, len(records)))
    langs = sorted({(r.get("recipient"), r.get("lang")) for r in records
                    if r.get("job") == alert["id"]})
    say("  the alert in each citizen's language: %s"
        % ", ".join("%s=%s" % x for x in langs))
    say("  every subscribed, consenting household reached once: %s (lost %d, duplicates %d)"
        % ("yes" if not res.lost and not res.dup_by_unit else "NO", len(res.lost),
           res.dup_by_unit))
    first = min((r.get("t", 0) for r in records if r.get("job") == reminder["id"]), default=0)
    due = calendar.timegm(time.strptime(reminder["send_at"], "%Y-%m-%dT%H:%M:%SZ"))
    say("  the scheduled reminder went out %.1f s after its send_at" % (first - due))
    alert_lane = statuses[alert["id"]].get("lane")
    say("  alert travelled on the %s lane" % alert_lane)
    say("  rejected entry %s: %s" % (rejected.get("entry"), rejected.get("reason")))
    say()

    problems = []
    if first < due:
        problems.append("the reminder went out before its send_at")
    for job, col in ((announcement, 2), (alert, 3), (reminder, 2)):
        st = statuses[job["id"]]
        want = sum(1 for c in CITIZENS if c[col])
        if H.count(st, "sent") != want:
            problems.append("%s: %d of %d sent" % (job["id"], H.count(st, "sent"), want))
    if len(records) != len(expected) or good != len(records):
        problems.append("the mock received %d requests (%d signed correctly), expected %d"
                        % (len(records), good, len(expected)))
    if res.lost or res.dup_by_unit or res.unexpected:
        problems.append(res.summary())
    if alert_lane != "urgent":
        problems.append("the alert ran on lane %r, not urgent" % alert_lane)

    rc = daemon.term(timeout=20)
    say("  heroldd stopped on SIGTERM, exit code %d" % rc)
    if rc != 0:
        problems.append("heroldd exited with %d on SIGTERM" % rc)
    mock.stop()
    redis.stop()
    left = procs.leftovers()
    if left:
        problems.append("processes still running: %s" % [p.pid for p in left])
    if problems:
        raise DemoFailed("; ".join(problems))


def main():
    missing = H.missing_programs()
    if missing:
        sys.exit("demo: build first (make): missing %s" % ", ".join(missing))
    tmp = tempfile.mkdtemp(prefix="herold-demo-")
    ok = False
    try:
        run(tmp)
        ok = True
    except (DemoFailed, procs.Timeout, H.DaemonExited, RuntimeError, OSError,
            AssertionError) as e:
        say()
        say("demo FAILED: %s" % e)
        for path in H.DAEMON_LOGS:        # every heroldd log of this run
            say("  last lines of %s:" % path)
            say(indent(procs.tail(path, 15), "    "))
    finally:
        procs.kill_all()
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
            say("All done: Redis, the mock and heroldd are stopped, %s removed." % tmp)
        else:
            say("files kept in %s" % tmp)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
