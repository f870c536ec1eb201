#!/usr/bin/python3
"""selftest - the harness tested on its own, without heroldd.

    python3 tests/harness/selftest.py

Checks the RESP client against a private redis-server (types, errors,
pipelines, binary-safe payloads), RedisServer (restart with AOF reload,
SIGSTOP/SIGCONT, requirepass, kill), the HTTP mock against curl with
signatures computed independently by the openssl CLI (valid, tampered,
stale, missing), every control mode, keep-alive, HTTPS with a
self-signed certificate, and the checker on synthetic records.  Ends
with "N passed, N failed"; exit 1 on any failure.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import herold as H              # noqa: E402
import procs                    # noqa: E402
from mockhttp import MockHTTP, sign  # noqa: E402
from redisd import RedisServer  # noqa: E402
from resp import Client, RespError, pairs  # noqa: E402

RESULTS = []


def case(name):
    def wrap(fn):
        RESULTS.append((name, fn))
        return fn
    return wrap


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


BASE = None


# -- resp + redisd -------------------------------------------------------------

@case("resp: reply types, errors, pipeline, binary payloads")
def t_resp():
    r = RedisServer(BASE).start()
    with r.client() as c:
        expect(c.call("PING") == "PONG", "PING")
        expect(c.call("SET", "k", "Grüße ✓") == "OK", "SET")
        expect(c.call("GET", "k") == "Grüße ✓", "GET utf-8")
        expect(c.call("GET", "missing") is None, "nil bulk")
        expect(c.call("INCR", "n") == 1, "integer")
        raw = b"\xff\xfe\x00ok\r\n"
        c.call("SET", "bin", raw)
        got = c.call("GET", "bin")
        expect(got.encode("utf-8", "surrogateescape") == raw, "binary round trip")
        c.call("SET", "bin2", got)           # a surrogate-escaped str goes back as the same bytes
        expect(c.call("STRLEN", "bin2") == len(raw), "surrogateescape argument")
        big = "x" * (2 * 1024 * 1024)
        c.call("SET", "big", big)
        expect(c.call("GET", "big") == big, "2 MB bulk")
        try:
            c.call("NOSUCHCOMMAND")
            raise AssertionError("no RespError")
        except RespError as e:
            expect(e.kind == "ERR", "error kind %r" % e.kind)
        out = c.pipeline([("SET", "a", 1), ("INCR", "k"), ("GET", "a")], raise_on_error=False)
        expect(out[0] == "OK" and isinstance(out[1], RespError) and out[2] == "1", "pipeline %r" % out)
        try:
            c.pipeline([("INCR", "k"), ("PING",)])
            raise AssertionError("pipeline did not raise")
        except RespError:
            pass
        expect(c.call("PING") == "PONG", "connection usable after a pipeline error")
        eid = c.call("XADD", "s", "*", "job", '{"v":1}', "n", 5)
        rng = c.call("XRANGE", "s", "-", "+")
        expect(rng[0][0] == eid and pairs(rng[0][1]) == {"job": '{"v":1}', "n": "5"}, "XRANGE %r" % rng)
        expect(c.call("XRANGE", "nostream", "-", "+") == [], "empty array")
        m = c.call("MULTI"), c.call("INCR", "k2"), c.call("EXEC")
        expect(m[2] == [1], "EXEC %r" % (m,))
    r.stop()


@case("redisd: AOF on, restart reloads, same port")
def t_restart():
    r = RedisServer(BASE).start()
    info = r.info("persistence")
    expect(info.get("aof_enabled") == "1", "aof_enabled %r" % info.get("aof_enabled"))
    with r.client() as c:
        expect(c.call("CONFIG", "GET", "appendfsync")[1] == "always", "appendfsync")
        expect(c.call("CONFIG", "GET", "maxmemory-policy")[1] == "noeviction", "policy")
        c.call("SET", "survives", "yes")
    port, pid = r.port, r.pid
    r.restart()
    expect(r.port == port and r.pid != pid, "restart: port %d->%d pid %d->%d" % (port, r.port, pid, r.pid))
    with r.client() as c:
        expect(c.call("GET", "survives") == "yes", "AOF not reloaded")
    r.kill()
    expect(not r.alive(), "kill")
    r.start()
    with r.client() as c:
        expect(c.call("GET", "survives") == "yes", "AOF not reloaded after kill -9")
    r.stop()
    r.wait_port_closed()


@case("redisd: sigstop hangs clients (timeout), sigcont resumes")
def t_sigstop():
    r = RedisServer(BASE).start()
    c = r.client(timeout=1)
    r.sigstop()
    try:
        try:
            c.call("PING")
            raise AssertionError("PING answered while stopped")
        except (socket.timeout, TimeoutError):
            pass
    finally:
        r.sigcont()
    c.close()
    with r.client() as c2:
        expect(c2.call("PING") == "PONG", "after SIGCONT")
    r.sigstop()
    r.stop()            # stop() must cope with a stopped server
    expect(not r.alive(), "stop after sigstop")


@case("redisd: requirepass and unsafe variants")
def t_password():
    r = RedisServer(BASE, password=H.REDIS_PASSWORD).start()
    with Client("127.0.0.1", r.port) as c:
        try:
            c.call("GET", "x")
            raise AssertionError("no NOAUTH")
        except RespError as e:
            expect(e.kind == "NOAUTH", "kind %r" % e.kind)
    with r.client() as c:
        expect(c.call("PING") == "PONG", "authenticated client")
    r.stop()
    u = RedisServer(BASE, appendonly=False, policy="allkeys-lru").start()
    info = u.info("persistence")
    expect(info.get("aof_enabled") == "0", "appendonly no")
    with u.client() as c:
        expect(c.call("CONFIG", "GET", "maxmemory-policy")[1] == "allkeys-lru", "policy")
    u.stop()


@case("redisd: start fails loudly on a bad config")
def t_badconf():
    r = RedisServer(BASE, extra_conf=["no-such-directive yes"])
    try:
        r.start(timeout=10)
        raise AssertionError("started")
    except RuntimeError as e:
        expect("exited" in str(e), str(e))


# -- mockhttp --------------------------------------------------------------------

def openssl_sig(key, msg_id, ts, body):
    """The signature as an independent implementation (openssl CLI) sees it."""
    p = subprocess.run(["openssl", "dgst", "-sha256", "-mac", "HMAC", "-macopt",
                        "hexkey:" + key.hex(), "-binary"],
                       input=msg_id.encode() + b"." + str(ts).encode() + b"." + body,
                       capture_output=True, check=True)
    return base64.b64encode(p.stdout).decode()


def curl(url, body=b"", headers=(), extra=(), timeout=30):
    """POST with curl; returns (exit code, http code, stdout)."""
    argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
            "--data-binary", "@-"] + list(extra)
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    p = subprocess.run(argv, input=body, capture_output=True, timeout=timeout)
    out = p.stdout.decode()
    return p.returncode, out[-3:] if out else "", out


def signed(job="j-1", rcpt="r-1", attempt=1, msg_id="msg_selftest", ts=None, tamper=False):
    ts = int(time.time()) if ts is None else ts
    body = json.dumps({"type": "herold.message", "timestamp": "2026-01-01T00:00:00Z",
                       "data": {"job": job, "kind": "announcement", "priority": "normal",
                                "recipient": rcpt, "attempt": attempt, "lang": "de",
                                "subject": "s", "text": "t"}}).encode()
    sig = openssl_sig(H.WEBHOOK_KEY, msg_id, ts, body)
    if tamper:
        body = body.replace(b'"t"', b'"T"')
    return body, ["webhook-id: " + msg_id, "webhook-timestamp: %d" % ts,
                  "webhook-signature: v1,AAAA v1," + sig, "Idempotency-Key: " + msg_id]


_MOCK = {}


def mock():
    if "m" not in _MOCK:
        _MOCK["m"] = MockHTTP(BASE, H.WEBHOOK_SECRET).start()
    return _MOCK["m"]


@case("mock: signature computed by openssl verifies; mock's own signer agrees")
def t_sig():
    m = mock()
    body, hdrs = signed()
    expect(sign(H.WEBHOOK_KEY, "msg_selftest", hdrs[1].split(": ")[1], body)
           == hdrs[2].rsplit("v1,", 1)[1], "mockhttp.sign disagrees with openssl")
    rc, code, _ = curl(m.url, body, hdrs)
    expect(rc == 0 and code == "200", "curl rc=%d code=%s" % (rc, code))
    rec = m.records()[-1]
    expect(rec["sig_ok"] and rec["effect"] and rec["status"] == 200, rec)
    expect(rec["job"] == "j-1" and rec["recipient"] == "r-1" and rec["attempt"] == 1, rec)
    expect(rec["webhook_id"] == "msg_selftest" and rec["idempotency_key"] == "msg_selftest", rec)


@case("mock: tampered body, stale timestamp, missing headers -> 401, sig_ok false")
def t_badsig():
    m = mock()
    n0 = len(m.records())
    for label, (body, hdrs) in (("tampered", signed(tamper=True)),
                                ("stale", signed(ts=int(time.time()) - 400)),
                                ("future", signed(ts=int(time.time()) + 400)),
                                ("no signature", (signed()[0], signed()[1][:2]))):
        rc, code, _ = curl(m.url, body, hdrs)
        expect(code == "401", "%s: http %s" % (label, code))
    recs = m.records()[n0:]
    expect(len(recs) == 4 and not any(x["sig_ok"] or x["effect"] for x in recs), recs)
    expect(m.stats()["mode"]["mode"] == "ok", "a bad request consumed a mode")


@case("mock: --tolerance widens the timestamp window; mono, references, msg_type recorded")
def t_tolerance():
    m = MockHTTP(BASE, H.WEBHOOK_SECRET, name="mock-tolerance", tolerance=7200).start()
    try:
        body, hdrs = signed(ts=int(time.time()) + 3600)
        expect(curl(m.url, body, hdrs)[1] == "200", "+1 h rejected with tolerance 7200")
        body, hdrs = signed(ts=int(time.time()) + 7500)
        expect(curl(m.url, body, hdrs)[1] == "401", "+7500 s accepted with tolerance 7200")
        doc = json.loads(signed()[0])
        doc["data"].update(references="alert-0", msg_type="cancel")
        body = json.dumps(doc).encode()
        ts = int(time.time())
        sig = openssl_sig(H.WEBHOOK_KEY, "msg_ref", ts, body)
        rc, code, _ = curl(m.url, body, ["webhook-id: msg_ref", "webhook-timestamp: %d" % ts,
                                         "webhook-signature: v1," + sig])
        expect(code == "200", "http %s" % code)
        rec = m.records()[-1]
        expect(rec["references"] == "alert-0" and rec["msg_type"] == "cancel", rec)
        expect(isinstance(rec["mono"], float) and abs(rec["mono"] - time.monotonic()) < 60, rec)
    finally:
        m.stop()


@case("mock: status mode with count, then ok; count -1 until changed")
def t_status():
    m = mock()
    m.set_mode("status", code=500, count=2)
    codes = [curl(m.url, *signed())[1] for _ in range(3)]
    expect(codes == ["500", "500", "200"], codes)
    m.set_mode("status", code=503, count=-1)
    codes = [curl(m.url, *signed())[1] for _ in range(3)]
    expect(codes == ["503"] * 3, codes)
    m.set_mode("ok")
    expect(curl(m.url, *signed())[1] == "200", "ok after reset")


@case("mock: 429 with Retry-After seconds, HTTP-date, absent")
def t_429():
    m = mock()
    for ra in ("2", "Wed, 21 Oct 2037 07:28:00 GMT", None):
        m.set_mode("429", retry_after=ra, count=1)
        body, hdrs = signed()
        p = subprocess.run(["curl", "-s", "-D", "-", "-o", "/dev/null", "-X", "POST",
                            "--data-binary", "@-"] + sum([["-H", h] for h in hdrs], []) + [m.url],
                           input=body, capture_output=True, timeout=30)
        head = p.stdout.decode()
        expect(head.startswith("HTTP/1.1 429"), head[:40])
        if ra is None:
            expect("retry-after" not in head.lower(), head)
        else:
            expect("Retry-After: %s" % ra in head, head)


@case("mock: slow mode records the request, answers after the delay")
def t_slow():
    m = mock()
    m.set_mode("slow", delay=2, count=1)
    n0 = m.stats()["received"]
    rc, code, _ = curl(m.url, *signed(msg_id="msg_slow"), extra=["--max-time", "1"])
    expect(rc == 28, "curl rc=%d, want 28 (timeout)" % rc)
    expect(m.stats()["received"] == n0 + 1, "slow request not recorded")
    rec = m.records()[-1]
    expect(rec["webhook_id"] == "msg_slow" and rec["mode"] == "slow" and rec["effect"], rec)
    t0 = time.monotonic()
    m.set_mode("slow", delay=1, count=1)
    rc, code, _ = curl(m.url, *signed())
    expect(code == "200" and time.monotonic() - t0 >= 1, "slow answer")


@case("mock: trickle mode trips curl's low-speed limit")
def t_trickle():
    m = mock()
    m.set_mode("trickle", count=1, interval=2)
    rc, code, _ = curl(m.url, *signed(), extra=["--speed-limit", "1", "--speed-time", "3",
                                                 "--max-time", "20"])
    expect(rc == 28, "curl rc=%d, want 28 (too slow)" % rc)
    procs.wait_until(lambda: m.stats()["trickle_active"] == 0, 10, "trickle to notice the close")
    expect(m.stats()["trickle_ended"] >= 1, "trickle_ended")


@case("mock: huge mode streams a body far beyond any cap")
def t_huge():
    m = mock()
    m.set_mode("huge", count=1)
    p = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "--max-time", "2",
                        "-X", "POST", "--data-binary", "@-"] +
                       sum([["-H", h] for h in signed()[1]], []) + [m.url],
                       input=signed()[0], capture_output=True, timeout=30)
    size = int(float(p.stdout.decode() or 0))
    expect(size >= 4 * 1024 * 1024, "only %d bytes downloaded" % size)
    procs.wait_until(lambda: m.stats()["huge_ended"] >= 1, 10, "huge to notice the close")
    expect(curl(m.url, *signed())[1] == "200", "back to ok")


@case("mock: reset mode sends RST after reading the body")
def t_reset():
    m = mock()
    m.set_mode("reset", count=1)
    rc, code, _ = curl(m.url, *signed(msg_id="msg_reset"))
    expect(rc in (52, 56), "curl rc=%d, want 56 (reset) or 52 (empty reply)" % rc)
    rec = m.records()[-1]
    expect(rec["webhook_id"] == "msg_reset" and rec["status"] is None and not rec["effect"], rec)
    expect(curl(m.url, *signed())[1] == "200", "back to ok")


@case("mock: HTTP/1.1 keep-alive reuses the connection")
def t_keepalive():
    m = mock()
    body, hdrs = signed()
    bf = os.path.join(BASE, "body.json")
    with open(bf, "wb") as f:
        f.write(body)
    argv = ["curl", "-s", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects}\n"]
    for h in hdrs:
        argv += ["-H", h]
    argv += ["--data-binary", "@" + bf, m.url, m.url]
    p = subprocess.run(argv, capture_output=True, timeout=30)
    expect(p.stdout.decode().split() == ["1", "0"], "num_connects %r" % p.stdout)


@case("mock: control errors are 400, /_stats counts")
def t_control():
    m = mock()
    try:
        m.set_mode("nonsense")
        raise AssertionError("accepted an unknown mode")
    except RuntimeError as e:
        expect("400" in str(e), str(e))
    st = m.stats()
    expect(st["received"] == len(m.records()) and st["by_status"].get("200", 0) >= 1, st)
    p = subprocess.run(["curl", "-s", "-X", "GET", "--data", '{"mode":"status","code":502,"count":1}',
                        "http://127.0.0.1:%d/_control" % m.port], capture_output=True, timeout=30)
    expect(json.loads(p.stdout)["mode"]["code"] == 502, p.stdout)
    expect(curl(m.url, *signed())[1] == "502", "GET /_control did not take")


@case("mock: HTTPS with a self-signed certificate")
def t_tls():
    cert, key = os.path.join(BASE, "c.pem"), os.path.join(BASE, "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, check=True)
    m = MockHTTP(BASE, H.WEBHOOK_SECRET, tls=(cert, key), name="tlsmock").start()
    expect(m.url.startswith("https://"), m.url)
    rc, code, _ = curl(m.url, *signed())
    expect(rc == 60, "curl without the CA: rc=%d, want 60" % rc)
    procs.wait_until(lambda: m.stats()["tls_failures"] >= 1, 10, "tls_failures")
    expect(m.records() == [], "a request body reached the mock over an untrusted handshake")
    rc, code, _ = curl(m.url, *signed(), extra=["--cacert", cert])
    expect(rc == 0 and code == "200", "curl with the CA: rc=%d code=%s" % (rc, code))
    expect(len(m.records()) == 1 and m.records()[0]["sig_ok"], m.records())
    m.stop()


@case("mock: fixed port, started late (connection refused before)")
def t_lateport():
    port = procs.free_port()
    m = MockHTTP(BASE, H.WEBHOOK_SECRET, port=port, name="late")
    rc, code, _ = curl(m.url, *signed())
    expect(rc == 7, "curl before start: rc=%d, want 7 (refused)" % rc)
    m.start()
    expect(m.port == port and curl(m.url, *signed())[1] == "200", "after start")
    m.stop()
    expect(not m.alive(), "stop")


# -- checker and procs ------------------------------------------------------------

@case("checker: lost, duplicates, unexpected, id mismatch, accounted, in_doubt")
def t_checker():
    def rec(job, rcpt, wid, effect=True, sig=True):
        return {"job": job, "recipient": rcpt, "webhook_id": wid, "idempotency_key": wid,
                "effect": effect, "sig_ok": sig}
    expected = {("j", "r-%d" % i) for i in range(1, 6)}
    records = [rec("j", "r-1", "a"), rec("j", "r-1", "a"),            # dup, same id
               rec("j", "r-2", "b"), rec("j", "r-2", "b2"),           # dup, other id
               rec("j", "r-3", "c", effect=False),                    # 500, not an effect
               rec("x", "r-9", "z"),                                   # unexpected
               rec("j", "r-4", "d", sig=False)]                       # forged
    status = {"id": "j", "counts": {"webhook": {"in_doubt": 2}},
              "failures": [{"recipient": "r-5", "channel": "webhook", "state": "failed"},
                           {"recipient": "r-3", "channel": "webhook", "state": "retry"}]}
    r = H.check(expected, records, [status])
    expect(r.lost == {("j", "r-3"), ("j", "r-4")}, r.lost)
    expect(r.accounted == {("j", "r-5")}, r.accounted)
    expect(r.dup_by_unit == 2 and r.dup_by_id == 1, (r.dup_by_unit, r.dup_by_id))
    expect(r.unexpected == [("x", "r-9")] and r.bad_sig == 1 and r.in_doubt == 2, r.summary())
    expect(set(r.id_mismatch) == {("j", "r-2")}, r.id_mismatch)
    expect(r.distinct_ids == 4, r.distinct_ids)
    expect("lost=2" in r.summary(), r.summary())


@case("procs: scope kills what it started, no leftovers")
def t_procs():
    with procs.Scope():
        p = procs.spawn(["sleep", "300"])
        expect(p.poll() is None, "sleep not running")
    expect(p.poll() is not None, "scope did not kill")
    m = _MOCK.pop("m", None)
    if m:
        m.stop()
    left = procs.leftovers()
    expect(not left, "leftover processes: %s" % [x.args for x in left])


def main():
    global BASE
    BASE = tempfile.mkdtemp(prefix="herold-harness-")
    passed = failed = 0
    for name, fn in RESULTS:
        try:
            fn()
            print("PASS " + name)
            passed += 1
        except Exception as e:
            print("FAIL %s: %s: %s" % (name, type(e).__name__, e))
            failed += 1
    procs.kill_all()
    if failed == 0:
        shutil.rmtree(BASE, ignore_errors=True)
    else:
        print("files kept in " + BASE)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
