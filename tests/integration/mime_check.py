#!/usr/bin/python3
"""mime_check - check herold's MIME output with an independent parser.

    HEROLD_MIME_OUT=/tmp/mimeout build/plain/tests/test_mime
    /usr/bin/python3 tests/integration/mime_check.py /tmp/mimeout

test_mime writes sample-N.eml (the bytes mime_build produced) and
sample-N.json (the values it was given).  This script builds nothing: it
parses each .eml with Python's email package (policy.default) and checks
the wire rules (CRLF only, lines <= 998), the header set (exactly one
From/To/Subject/Message-ID/Date/MIME-Version, no Bcc), that the subject,
display names and bodies decode back to the originals, and the
List-Unsubscribe headers.  Prints "N passed, N failed"; exits non-zero on
any failure or when there are no samples.
"""
import email
import email.policy
import json
import pathlib
import re
import sys

ONCE = ("From", "To", "Subject", "Message-ID", "Date", "MIME-Version")


def norm(s):
    """Line ends as LF, for comparing decoded text with the original."""
    return s.replace("\r\n", "\n").replace("\r", "\n")


def wire_problems(data):
    """Bare CR/LF, lines over 998 octets, a missing final CRLF."""
    out = []
    if re.search(rb"\r(?!\n)", data):
        out.append("bare CR")
    if re.search(rb"(?<!\r)\n", data):
        out.append("bare LF")
    longest = max((len(line) for line in data.split(b"\r\n")), default=0)
    if longest > 998:
        out.append("line of %d octets" % longest)
    if not data.endswith(b"\r\n"):
        out.append("no final CRLF")
    return out


def body_matches(got, want):
    """Decoded part equals the original after CRLF normalisation; a
    single-part body may carry one added final line end."""
    got, want = norm(got), norm(want)
    return got == want or (not want.endswith("\n") and got == want + "\n")


def check(eml, want):
    """Problems found in one sample (an empty list when it is right)."""
    data = eml.read_bytes()
    problems = wire_problems(data)
    msg = email.message_from_bytes(data, policy=email.policy.default)
    if msg.defects:
        problems.append("message defects: %r" % msg.defects)
    for name in ONCE:
        n = len(msg.get_all(name, []))
        if n != 1:
            problems.append("%s appears %d times" % (name, n))
    for name in ("Bcc", "Cc", "Resent-To"):
        if msg.get_all(name):
            problems.append("unexpected %s" % name)
    if problems:
        return problems

    if str(msg["Subject"]) != want["subject"]:
        problems.append("subject %r != %r" % (str(msg["Subject"]), want["subject"]))
    if msg["MIME-Version"] != "1.0":
        problems.append("MIME-Version %r" % msg["MIME-Version"])
    if msg["Message-ID"] != want["message_id"]:
        problems.append("Message-ID %r" % msg["Message-ID"])
    if msg["Date"].datetime is None:
        problems.append("Date does not parse")
    for field, addr_key, name_key in (("From", "from_addr", "from_name"),
                                      ("To", "to_addr", "to_name")):
        addrs = msg[field].addresses
        if len(addrs) != 1:
            problems.append("%s holds %d addresses" % (field, len(addrs)))
            continue
        if addrs[0].addr_spec != want[addr_key]:
            problems.append("%s address %r" % (field, addrs[0].addr_spec))
        if addrs[0].display_name != (want[name_key] or ""):
            problems.append("%s name %r != %r" % (field, addrs[0].display_name,
                                                  want[name_key]))
    if want["reply_to"]:
        rt = msg["Reply-To"]
        if rt is None or [a.addr_spec for a in rt.addresses] != [want["reply_to"]]:
            problems.append("Reply-To %r" % rt)

    unsub = msg.get_all("List-Unsubscribe", [])
    if want["unsub_https"] or want["unsub_mailto"]:
        urls = [u for u in (want["unsub_https"], want["unsub_mailto"]) if u]
        expect = ", ".join("<%s>" % u for u in urls)
        got = [re.sub(r"\s+", " ", str(v)) for v in unsub]
        if got != [expect]:
            problems.append("List-Unsubscribe %r != %r" % (got, expect))
    elif unsub:
        problems.append("List-Unsubscribe without unsubscribe URLs")
    post = msg.get_all("List-Unsubscribe-Post", [])
    if want["unsub_https"]:
        if [str(p) for p in post] != ["List-Unsubscribe=One-Click"]:
            problems.append("List-Unsubscribe-Post %r" % post)
    elif post:
        problems.append("List-Unsubscribe-Post without an https URL")
    if want["list_id"] and want["list_id"] not in str(msg.get("List-Id", "")):
        problems.append("List-Id %r" % msg.get("List-Id"))
    if want["bulk"]:
        if msg.get("Precedence") != "bulk" or \
           msg.get("Auto-Submitted") != "auto-generated":
            problems.append("bulk headers missing")

    if want["html"] is None:
        if msg.get_content_type() != "text/plain":
            problems.append("single part is %s" % msg.get_content_type())
        elif not body_matches(msg.get_content(), want["text"]):
            problems.append("text body differs")
    else:
        if msg.get_content_type() != "multipart/alternative":
            problems.append("type %s" % msg.get_content_type())
            return problems
        parts = list(msg.iter_parts())
        types = [p.get_content_type() for p in parts]
        if types != ["text/plain", "text/html"]:
            problems.append("parts %r" % types)
            return problems
        for part, key in zip(parts, ("text", "html")):
            if part.get_content_charset() != "utf-8":
                problems.append("%s charset %r" % (key, part.get_content_charset()))
            if norm(part.get_content()) != norm(want[key]):
                problems.append("%s part differs" % key)
        boundary = msg.get_boundary()
        for part in parts:
            raw = part.get_payload(decode=False)
            if boundary in raw:
                problems.append("boundary inside a part")
        delims = [l for l in data.split(b"\r\n") if boundary.encode() in l]
        want_delims = [b"--" + boundary.encode()] * 2 + [b"--" + boundary.encode() + b"--"]
        if [l for l in delims if l.startswith(b"--")] != want_delims:
            problems.append("delimiter lines %r" % delims)
    return problems


def main():
    if len(sys.argv) != 2:
        print("usage: mime_check.py DIR", file=sys.stderr)
        return 2
    samples = sorted(pathlib.Path(sys.argv[1]).glob("sample-*.eml"))
    passed = failed = 0
    for eml in samples:
        want = json.loads(eml.with_suffix(".json").read_text(encoding="utf-8"))
        problems = check(eml, want)
        if problems:
            failed += 1
            for p in problems:
                print("FAIL %s: %s" % (eml.name, p))
        else:
            passed += 1
            print("ok   %s" % eml.name)
    if not samples:
        print("FAIL no samples in %s" % sys.argv[1])
        failed += 1
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
