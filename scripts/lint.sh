#!/bin/sh
# lint.sh - rules a compiler cannot check, enforced on every `make test`:
#  - TLS verification is never switched off (RELIABILITY 4.5);
#  - curl's verbose wire trace is never switched on (it prints headers);
#  - job streams are never trimmed by length (XTRIM MAXLEN deletes
#    pending entries, RELIABILITY 0.2);
#  - hiredis is included only by dispatcher/redisq.c, curl only by
#    channels/http.c (STYLE 1).
set -u
cd "$(dirname "$0")/.."
rc=0
src=$(find dispatcher channels config templates -name '*.[ch]')
if grep -nE 'VERIFY(PEER|HOST)[^;]*,[[:space:]]*0' $src; then
    echo "lint: TLS verification switched off" >&2; rc=1
fi
if grep -nE 'CURLOPT_VERBOSE[^;]*,[[:space:]]*1' $src; then
    echo "lint: CURLOPT_VERBOSE switched on" >&2; rc=1
fi
if grep -nE "'XTRIM'[^)]*'MAXLEN'|\"XTRIM\"[^;]*\"MAXLEN\"" $src; then
    echo "lint: a stream trimmed by length" >&2; rc=1
fi
for f in $(grep -lE '#include <hiredis' $src); do
    [ "$f" = dispatcher/redisq.c ] || { echo "lint: $f includes hiredis" >&2; rc=1; }
done
for f in $(grep -lE '#include <curl' $src); do
    [ "$f" = channels/http.c ] || { echo "lint: $f includes curl" >&2; rc=1; }
done
[ $rc -eq 0 ] && echo "lint: ok"
exit $rc
