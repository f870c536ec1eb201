#!/bin/sh
# deps.sh - install the Debian packages herold needs to build, test and
# demo (and, with --bench, to benchmark), when any is missing.  Idempotent:
# a no-op when all are present.  As root it runs apt-get; otherwise it
# names the packages and fails, so nobody builds against a half-installed
# system.
set -eu

PKGS="gcc make pkg-config libev-dev libhiredis-dev libcurl4-openssl-dev \
libesmtp-dev libjansson-dev libssl-dev libcmocka-dev redis-server \
python3 openssl ca-certificates curl procps clang libclang-rt-14-dev \
valgrind libunistring-dev libopendkim-dev python3-dkim python3-aiosmtpd \
python3-trustme libcsv-dev tzdata faketime"
# the benchmarks' providers: nginx for webhooks, Postfix's smtp-sink and
# smtp-source for e-mail (Postfix itself never runs)
if [ "${1:-}" = "--bench" ]; then
    PKGS="$PKGS nginx-light postfix"
fi

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "herold: missing Debian packages:$missing" >&2
    echo "herold: install them with: sudo apt-get install$missing" >&2
    exit 1
fi
echo "herold: installing missing packages:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# postfix is here only for smtp-sink and smtp-source (bench/email_bench.py);
# preseed "No configuration" so it installs without a question and without
# a main.cf, hence without a mail system to start.
case " $missing " in
*" postfix "*)
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    ;;
esac
apt-get update -qq >&2 || true
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >&2
# Debian's packages start their services; herold's tests and demo start
# private instances, so stop the system-wide ones we just installed.
if command -v service >/dev/null 2>&1; then
    service nginx stop >/dev/null 2>&1 || true
    service redis-server stop >/dev/null 2>&1 || true
    service postfix stop >/dev/null 2>&1 || true
fi
