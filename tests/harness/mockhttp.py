#!/usr/bin/python3
"""mockhttp - an HTTP webhook receiver that checks what a real one checks.

Run as a process (what the tests do, through MockHTTP below):

    mockhttp.py --port 0 --portfile F --log F.jsonl --secret whsec_...
                [--secret-env NAME] [--tls-cert C --tls-key K] [--host H]

or import MockHTTP and call .start().

Every POST other than the control paths is a delivery.  The mock verifies
its Standard Webhooks signature (webhook-id, webhook-timestamp,
webhook-signature "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>", key
= base64 of the secret after "whsec_", compared with
hmac.compare_digest, timestamp within 5 minutes), answers per the
current mode, and appends one JSON line per received request to the log:

    {"t", "mono", "path", "webhook_id", "idempotency_key", "job",
     "recipient", "attempt", "references", "msg_type", "sig_ok", "status",
     "mode", "effect", ...}

"t" is the wall clock at arrival, "mono" CLOCK_MONOTONIC (the same clock
in every process on this machine, and never stepped: use it for rates).

"status" is the code the mock answered (null when it reset the
connection).  "effect" is true when a real receiver would have acted on
the request: the signature was valid and the mock answered (or, in slow
mode, was going to answer) 2xx with a complete body.  A request with a
bad signature is answered 401 like a real receiver would, and never
consumes a mode.

Control: GET or POST /_control with a JSON body sets the mode for the
next requests:
    {"mode": "ok"}                                    200
    {"mode": "status", "code": 500, "count": N}       that code N times
    {"mode": "429", "retry_after": "2"|"<HTTP-date>"|null, "count": N}
    {"mode": "slow", "delay": S, "count": N}          read body, sleep S, 200
    {"mode": "trickle", "count": N, "interval": 2}    headers, 1 byte / 2 s
    {"mode": "huge", "count": N, "bytes": 104857600}  a 100 MB body
    {"mode": "reset", "count": N}                     read body, send RST
After N requests the mode reverts to ok; count -1 (the default) means
until changed.  GET /_stats returns counters as JSON.
"""

import argparse
import base64
import collections
import hashlib
import hmac
import http.client
import json
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_S = 300          # --tolerance: a faked sender clock needs more
MODES = ("ok", "status", "429", "slow", "trickle", "huge", "reset")


def secret_key(secret):
    """The HMAC key of a Standard Webhooks secret ("whsec_" + base64)."""
    s = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    return base64.b64decode(s)


def sign(key, msg_id, ts, body):
    """The v1 signature value (without the "v1," prefix)."""
    mac = hmac.new(key, msg_id.encode() + b"." + str(ts).encode() + b"." + body,
                   hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def verify(key, msg_id, ts, sig_header, body, now=None, tolerance=TOLERANCE_S):
    """(ok, why) for a Standard Webhooks request; never raises."""
    if not msg_id or not ts or not sig_header:
        return False, "missing webhook-id, webhook-timestamp or webhook-signature"
    try:
        ts_i = int(ts)
    except ValueError:
        return False, "webhook-timestamp not an integer"
    now = time.time() if now is None else now
    if abs(now - ts_i) > tolerance:
        return False, "webhook-timestamp outside tolerance"
    want = sign(key, msg_id, ts, body).encode()
    ok = False
    for part in sig_header.split(" "):
        ver, _, val = part.partition(",")
        if ver == "v1" and val:
            # compare every candidate; constant time per comparison
            if hmac.compare_digest(val.encode(), want):
                ok = True
    return (True, "") if ok else (False, "no matching v1 signature")


class State:
    """Mode, counters and the record log, shared by the handler threads."""

    def __init__(self, key, log_path, tolerance=TOLERANCE_S):
        self.key = key
        self.tolerance = tolerance
        self.lock = threading.Lock()
        self.mode = {"mode": "ok"}
        self.remaining = -1
        self.stats = collections.Counter()
        self.by_status = collections.Counter()
        self.by_mode = collections.Counter()
        self.log = open(log_path, "a", encoding="utf-8")
        self.stopping = threading.Event()

    def set_mode(self, spec):
        if not isinstance(spec, dict) or spec.get("mode") not in MODES:
            raise ValueError("mode must be one of %s" % ", ".join(MODES))
        m = spec["mode"]
        if m == "status" and not isinstance(spec.get("code"), int):
            raise ValueError("status mode needs an integer code")
        if m == "slow" and not isinstance(spec.get("delay"), (int, float)):
            raise ValueError("slow mode needs a numeric delay")
        count = spec.get("count", -1)
        if not isinstance(count, int) or count < -1:
            raise ValueError("count must be an integer >= -1")
        with self.lock:
            if m == "ok" or count == 0:
                self.mode, self.remaining = {"mode": "ok"}, -1
            else:
                self.mode, self.remaining = dict(spec), count
            return self.snapshot_locked()

    def take(self):
        """The mode for this request; counts it down."""
        with self.lock:
            cur = self.mode
            if cur["mode"] != "ok" and self.remaining > 0:
                self.remaining -= 1
                if self.remaining == 0:
                    self.mode, self.remaining = {"mode": "ok"}, -1
            return cur

    def record(self, rec):
        line = json.dumps(rec, ensure_ascii=True, sort_keys=True)
        with self.lock:
            self.stats["received"] += 1
            if rec.get("effect"):
                self.stats["effects"] += 1
            if not rec.get("sig_ok"):
                self.stats["sig_bad"] += 1
            self.by_status[str(rec.get("status"))] += 1
            self.by_mode[rec.get("mode") or "-"] += 1
            self.log.write(line + "\n")
            self.log.flush()

    def bump(self, name, n=1):
        with self.lock:
            self.stats[name] += n

    def snapshot_locked(self):
        d = dict(self.stats)
        for k in ("received", "effects", "sig_bad", "tls_failures",
                  "trickle_active", "trickle_ended", "huge_ended", "resets",
                  "control"):
            d.setdefault(k, 0)
        d["by_status"] = dict(self.by_status)
        d["by_mode"] = dict(self.by_mode)
        d["mode"] = dict(self.mode)
        d["remaining"] = self.remaining
        return d

    def snapshot(self):
        with self.lock:
            return self.snapshot_locked()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "herold-mock/1"
    timeout = 300           # idle keep-alive connections end eventually

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError):
                self.server.state.bump("tls_failures")
                raise _HandshakeFailed()
        super().setup()

    def log_message(self, fmt, *args):     # quiet: the JSON log is the record
        pass

    # -- plumbing ---------------------------------------------------------

    def _read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            parts = []
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(8)
            return b"".join(parts)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _send(self, code, body=b"", ctype="application/json", headers=()):
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True

    def _json(self, code, obj):
        self._send(code, (json.dumps(obj) + "\n").encode())

    # -- dispatch -----------------------------------------------------------

    def do_GET(self):
        if self.path.startswith("/_control"):
            return self._control()
        if self.path.startswith("/_stats"):
            self._read_body()
            return self._json(200, self.server.state.snapshot())
        self._read_body()
        self._json(404, {"error": "not found"})

    def do_POST(self):
        if self.path.startswith("/_control"):
            return self._control()
        if self.path.startswith("/_stats"):
            self._read_body()
            return self._json(200, self.server.state.snapshot())
        return self._delivery()

    def do_PUT(self):
        self._read_body()
        self._json(405, {"error": "method not allowed"})

    def _control(self):
        body = self._read_body()
        st = self.server.state
        try:
            spec = json.loads(body or b"{}")
            snap = st.set_mode(spec)
        except (ValueError, json.JSONDecodeError) as e:
            return self._json(400, {"error": str(e)})
        st.bump("control")
        self._json(200, snap)

    def _delivery(self):
        st = self.server.state
        now = time.time()
        mono = time.monotonic()
        body = self._read_body()
        h = self.headers
        wid = h.get("webhook-id")
        ts = h.get("webhook-timestamp")
        sig_ok, why = verify(st.key, wid, ts, h.get("webhook-signature"), body, now,
                             st.tolerance)
        rec = {"t": now, "mono": mono, "path": self.path, "webhook_id": wid,
               "idempotency_key": h.get("Idempotency-Key"),
               "timestamp": ts, "sig_ok": sig_ok, "bytes": len(body)}
        if not sig_ok:
            rec["sig_error"] = why
        try:
            doc = json.loads(body.decode("utf-8"))
            data = doc.get("data") if isinstance(doc, dict) else None
            data = data if isinstance(data, dict) else {}
            rec.update(type=doc.get("type") if isinstance(doc, dict) else None,
                       job=data.get("job"), recipient=data.get("recipient"),
                       attempt=data.get("attempt"), kind=data.get("kind"),
                       priority=data.get("priority"), lang=data.get("lang"),
                       subject=data.get("subject"), text=data.get("text"),
                       references=data.get("references"), msg_type=data.get("msg_type"),
                       body_ok=True)
        except (UnicodeDecodeError, ValueError, AttributeError):
            rec.update(job=None, recipient=None, attempt=None, body_ok=False)

        if not sig_ok:
            rec.update(status=401, mode="reject", effect=False)
            st.record(rec)
            return self._json(401, {"error": "bad signature"})

        m = st.take()
        mode = m["mode"]
        rec["mode"] = mode
        if mode == "ok":
            rec.update(status=200, effect=True)
            st.record(rec)
            return self._json(200, {"ok": True})
        if mode == "status":
            code = int(m["code"])
            rec.update(status=code, effect=200 <= code < 300)
            st.record(rec)
            return self._json(code, {"error": "mock status %d" % code})
        if mode == "429":
            ra = m.get("retry_after")
            rec.update(status=429, effect=False, retry_after=ra)
            st.record(rec)
            hdrs = [("Retry-After", str(ra))] if ra is not None else []
            return self._send(429, b'{"error":"rate limited"}\n', headers=hdrs)
        if mode == "slow":
            rec.update(status=200, effect=True, delay=m["delay"])
            st.record(rec)
            if not st.stopping.wait(float(m["delay"])):
                self._json(200, {"ok": True, "slow": True})
            return
        if mode == "trickle":
            rec.update(status=200, effect=False)
            st.record(rec)
            return self._trickle(float(m.get("interval", 2.0)))
        if mode == "huge":
            rec.update(status=200, effect=False)
            st.record(rec)
            return self._huge(int(m.get("bytes", 100 * 1024 * 1024)))
        if mode == "reset":
            rec.update(status=None, effect=False)
            st.record(rec)
            return self._reset()

    def _trickle(self, interval):
        st = self.server.state
        st.bump("trickle_active")
        self.close_connection = True
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.flush()
            for _ in range(1000000):
                if st.stopping.wait(interval):
                    break
                self.wfile.write(b" ")
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass
        finally:
            st.bump("trickle_active", -1)
            st.bump("trickle_ended")

    def _huge(self, total):
        st = self.server.state
        self.close_connection = True
        chunk = b"[" + b"0," * 32767 + b"0"        # 64 KiB of broken JSON
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(total))
            self.end_headers()
            sent = 0
            while sent < total and not st.stopping.is_set():
                piece = chunk[:total - sent]
                self.wfile.write(piece)
                sent += len(piece)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass
        finally:
            st.bump("huge_ended")

    def _reset(self):
        """Close with SO_LINGER 0: the peer gets a TCP RST, no reply."""
        self.server.state.bump("resets")
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # Drop the buffered file objects first: they hold references that
        # would keep the descriptor open past sock.close().
        for f in (self.rfile, self.wfile):
            try:
                f.close()
            except (OSError, ValueError):
                pass
        try:
            sock.close()
        except OSError:
            pass


class _HandshakeFailed(Exception):
    pass


class MockServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (_HandshakeFailed, ConnectionError, ssl.SSLError,
                            TimeoutError, socket.timeout, ValueError)):
            return          # client went away or failed TLS: counted already
        super().handle_error(request, client_address)


def serve(args):
    secret = args.secret
    if args.secret_env:
        secret = os.environ.get(args.secret_env, "")
    if not secret:
        sys.exit("mockhttp: no secret given (--secret or --secret-env)")
    state = State(secret_key(secret), args.log, args.tolerance)
    server = MockServer((args.host, args.port), Handler)
    server.state = state
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                        do_handshake_on_connect=False)
    if args.mode:
        state.set_mode(json.loads(args.mode))
    port = server.server_address[1]
    if args.portfile:
        tmp = args.portfile + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.portfile)       # readers never see half a file

    def on_signal(signum, frame):
        state.stopping.set()
        threading.Thread(target=server.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        state.stopping.set()
        server.server_close()
        state.log.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--portfile")
    ap.add_argument("--log", required=True, help="JSON lines, one per request")
    ap.add_argument("--secret", help="whsec_... (visible in ps; prefer --secret-env)")
    ap.add_argument("--secret-env", help="name of an environment variable holding the secret")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--mode", help="initial mode as control JSON")
    ap.add_argument("--tolerance", type=int, default=TOLERANCE_S,
                    help="webhook-timestamp tolerance in seconds (default %(default)s)")
    args = ap.parse_args(argv)
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    serve(args)


# -- the Python API the tests use -------------------------------------------

class MockHTTP:
    """Starts mockhttp.py as a subprocess (own process group, killed at
    exit) and talks to its control endpoint.

        m = MockHTTP(tmpdir, secret).start()
        m.url                 -> "http://127.0.0.1:PORT/hook"
        m.set_mode("status", code=500, count=2)
        m.records()           -> list of dicts, one per received request
        m.stop()
    """

    def __init__(self, basedir, secret, tls=None, port=0, name="mock", path="/hook",
                 tolerance=None):
        """tls: (cert_file, key_file) for HTTPS, or None.  tolerance: the
        webhook-timestamp window in seconds (None: the standard 300), for
        a sender whose clock is faked on purpose."""
        self.basedir = basedir
        self.secret = secret
        self.tls = tls
        self.port = port
        self.name = name
        self.path = path
        self.tolerance = tolerance
        self.log_path = os.path.join(basedir, name + ".jsonl")
        self.portfile = os.path.join(basedir, name + ".port")
        self.err_path = os.path.join(basedir, name + ".stderr")
        self.proc = None

    @property
    def scheme(self):
        return "https" if self.tls else "http"

    @property
    def url(self):
        return "%s://127.0.0.1:%d%s" % (self.scheme, self.port, self.path)

    def start(self, timeout=15):
        import procs
        if os.path.exists(self.portfile):
            os.unlink(self.portfile)
        argv = [sys.executable, os.path.abspath(__file__), "--port", str(self.port),
                "--portfile", self.portfile, "--log", self.log_path,
                "--secret-env", "MOCKHTTP_SECRET"]
        if self.tls:
            argv += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        if self.tolerance is not None:
            argv += ["--tolerance", str(int(self.tolerance))]
        env = dict(os.environ, MOCKHTTP_SECRET=self.secret)
        err = open(self.err_path, "ab")
        try:
            self.proc = procs.spawn(argv, stdout=err, stderr=err, env=env)
        finally:
            err.close()

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("mockhttp exited with %s:\n%s"
                                   % (self.proc.returncode, procs.tail(self.err_path, 20)))
            try:
                with open(self.portfile) as f:
                    return int(f.read().strip())
            except (OSError, ValueError):
                return None
        self.port = procs.wait_until(ready, timeout, "mockhttp %s to listen" % self.name)
        procs.wait_until(lambda: self._try_stats() is not None, timeout,
                         "mockhttp %s to answer /_stats" % self.name)
        return self

    def _conn(self, timeout=10):
        if self.tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE     # our own mock's control channel
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def _request(self, method, path, obj=None):
        c = self._conn()
        try:
            body = json.dumps(obj).encode() if obj is not None else None
            hdrs = {"Content-Type": "application/json"} if body is not None else {}
            c.request(method, path, body=body, headers=hdrs)
            r = c.getresponse()
            data = r.read()
            if r.status != 200:
                raise RuntimeError("mockhttp %s %s: %d %s" % (method, path, r.status, data[:200]))
            return json.loads(data)
        finally:
            c.close()

    def _try_stats(self):
        try:
            return self._request("GET", "/_stats")
        except (OSError, RuntimeError, http.client.HTTPException, ValueError):
            return None

    def set_mode(self, mode, **kw):
        """set_mode("status", code=500, count=2); set_mode("ok")."""
        spec = dict(kw, mode=mode)
        return self._request("POST", "/_control", spec)

    def stats(self):
        return self._request("GET", "/_stats")

    def records(self):
        """Every received request so far (a partly written last line is
        skipped)."""
        out = []
        try:
            with open(self.log_path, encoding="utf-8") as f:
                for line in f:
                    if line.endswith("\n"):
                        out.append(json.loads(line))
        except FileNotFoundError:
            pass
        return out

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10):
        import procs
        if self.proc is not None:
            procs.stop(self.proc, signal.SIGTERM, timeout)


if __name__ == "__main__":
    main()
