"""resp - a minimal RESP2 client for the tests (standard library only).

    c = Client("127.0.0.1", port)
    c.call("XADD", "herold:jobs:normal", "*", "job", payload)
    c.pipeline([("PING",), ("GET", "k")])

Replies map to Python values: simple string and bulk string -> str (UTF-8,
errors="surrogateescape", so any bytes round-trip through
s.encode("utf-8", "surrogateescape")), integer -> int, array -> list,
nil -> None.  An error reply raises RespError from call(); inside an
array (EXEC) or a pipeline it comes back as a RespError value.
Arguments may be str (encoded the same way), bytes, int or float.
"""

import socket


class RespError(Exception):
    """An error reply (-ERR, -OOM, -NOGROUP, ...) from the server."""

    @property
    def kind(self):
        """The first word of the error: 'ERR', 'OOM', 'LOADING', ..."""
        msg = str(self)
        return msg.split(" ", 1)[0] if msg else ""


def _arg(a):
    if isinstance(a, bytes):
        return a
    if isinstance(a, (bytearray, memoryview)):
        return bytes(a)
    if isinstance(a, str):
        return a.encode("utf-8", "surrogateescape")
    if isinstance(a, bool):
        return b"1" if a else b"0"
    if isinstance(a, (int, float)):
        return str(a).encode()
    raise TypeError("unsupported RESP argument type %r" % type(a).__name__)


def encode_command(args):
    """The RESP2 encoding of one command (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = _arg(a)
        parts.append(b"$%d\r\n" % len(b))
        parts.append(b)
        parts.append(b"\r\n")
    return b"".join(parts)


def _text(b):
    return b.decode("utf-8", "surrogateescape")


class Client:
    """One blocking connection.  timeout (seconds) bounds every read, so a
    SIGSTOP'd server raises socket.timeout instead of hanging the test."""

    def __init__(self, host="127.0.0.1", port=6379, timeout=10.0,
                 password=None, username=None):
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()
        if password is not None:
            if username:
                self.call("AUTH", username, password)
            else:
                self.call("AUTH", password)

    def settimeout(self, timeout):
        self.sock.settimeout(timeout)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection")
        self._buf += chunk

    def _line(self):
        while True:
            i = self._buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[:i + 2]
                return line
            self._fill()

    def _exact(self, n):
        while len(self._buf) < n + 2:
            self._fill()
        data = bytes(self._buf[:n])
        if self._buf[n:n + 2] != b"\r\n":
            raise ConnectionError("RESP protocol error: bulk not terminated")
        del self._buf[:n + 2]
        return data

    def _reply(self):
        line = self._line()
        if not line:
            raise ConnectionError("RESP protocol error: empty line")
        t, rest = line[:1], line[1:]
        if t == b"+":
            return _text(rest)
        if t == b"-":
            return RespError(_text(rest))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            return _text(self._exact(n))
        if t == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._reply() for _ in range(n)]
        raise ConnectionError("RESP protocol error: type byte %r" % t)

    def call(self, *args):
        """Send one command and return its reply; raise RespError on -ERR."""
        self.sock.sendall(encode_command(args))
        r = self._reply()
        if isinstance(r, RespError):
            raise r
        return r

    def pipeline(self, commands, raise_on_error=True):
        """Send every command (a list of argument tuples) in one write and
        read all replies.  With raise_on_error, the first error reply is
        raised after all replies were read (the connection stays usable);
        otherwise errors are returned in place as RespError values."""
        if not commands:
            return []
        self.sock.sendall(b"".join(encode_command(tuple(c)) for c in commands))
        replies = [self._reply() for _ in commands]
        if raise_on_error:
            for r in replies:
                if isinstance(r, RespError):
                    raise r
        return replies

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def pairs(flat):
    """['a', '1', 'b', '2'] -> {'a': '1', 'b': '2'} (stream entry fields,
    HGETALL, XINFO replies)."""
    if flat is None:
        return {}
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}
