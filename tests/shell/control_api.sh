#!/usr/bin/env bash
# The control API from a shell, the way a CI script would drive it: curl for HTTP and for
# SMTP, dig for DNS, grep for the answers. Run by tests/integration/test_control_cli.py
# against `mxsandbox serve scenarios/primary-down.yaml --control 127.0.0.1:0 …`.
#
# Usage: control_api.sh CONTROL_HOST:PORT DNS_HOST:PORT SMTP_PORT
set -euo pipefail
api="http://$1/api/v1"
dns_host=${2%:*}
dns_port=${2##*:}
smtp_port=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# status METHOD PATH [curl options…]: the HTTP status; the body is left in $work/body.
status() {
  local method=$1 path=$2
  shift 2
  curl -s -o "$work/body" -w '%{http_code}' -X "$method" "$@" "$api$path"
}

send_mail() {
  printf 'From: bob@example.net\r\nTo: alice@example.test\r\nSubject: Hello\r\n\r\nHi Alice.\r\n' |
    curl -s --max-time 5 "smtp://$1:$smtp_port" --mail-from bob@example.net \
      --mail-rcpt alice@example.test -T -
}

# What there is: the world, and the address DNS gives for mx1.
world=$(curl -sf "$api/world")
grep -q '"name": "mx1.example.test"' <<<"$world" || fail "world: $world"
grep -q '"behaviour": "refuse"' <<<"$world" || fail "mx1 should refuse: $world"
mx1=$(dig +short @"$dns_host" -p "$dns_port" mx1.example.test)
[ -n "$mx1" ] || fail "no address for mx1.example.test"

# mx1 refuses; switched to accept, it takes the mail.
if send_mail "$mx1"; then fail "mx1 should have refused the connection"; fi
code=$(status PUT /hosts/mx1.example.test/behaviour -H 'Content-Type: application/json' \
  --data '"accept"')
[ "$code" = 200 ] || fail "PUT behaviour: $code $(cat "$work/body")"
grep -q '"behaviour": "accept"' "$work/body" || fail "PUT behaviour: $(cat "$work/body")"
send_mail "$mx1" || fail "mx1 should accept now"

# What it saw.
sessions=$(curl -sf "$api/hosts/mx1.example.test/sessions")
grep -q 'RCPT→250' <<<"$sessions" || fail "sessions: $sessions"
grep -q 'MAIL FROM:<bob@example.net>' <<<"$sessions" || fail "sessions: $sessions"
messages=$(curl -sf "$api/hosts/mx1.example.test/messages")
grep -q 'Subject: Hello' <<<"$messages" || fail "messages: $messages"
queries=$(curl -sf "$api/dns/queries")
grep -q '"name": "mx1.example.test"' <<<"$queries" || fail "queries: $queries"

# Mistakes get a 4xx and a sentence.
code=$(status PUT /hosts/mx1.example.test/behaviour --data '{"rcpt": ')
[ "$code" = 400 ] && grep -q '"error": "the body is not JSON' "$work/body" ||
  fail "malformed JSON: $code $(cat "$work/body")"
code=$(status PUT /hosts/mx1.example.test/behaviour --data '{"rcpt": "999 no"}')
[ "$code" = 400 ] && grep -q 'outside 200-599' "$work/body" ||
  fail "a wrong reply: $code $(cat "$work/body")"
code=$(status GET /hosts/mx9.example.test/sessions)
[ "$code" = 404 ] && grep -q '"hosts": \["mx1.example.test", "mx2.example.test"\]' "$work/body" ||
  fail "unknown host: $code $(cat "$work/body")"
head -c 10000000 /dev/zero >"$work/big"
code=$(status PUT /zones/example.test --data-binary @"$work/big")
[ "$code" = 413 ] || fail "a 10 MB body: $code $(cat "$work/body")"

# DNS and zones.
code=$(status PUT /dns/example.test --data '"servfail"')
[ "$code" = 200 ] || fail "PUT dns: $code $(cat "$work/body")"
dig @"$dns_host" -p "$dns_port" example.test MX +tries=1 +time=2 | grep -q 'status: SERVFAIL' ||
  fail "example.test should SERVFAIL"
printf '$TTL 60\n@ IN MX 10 mx2\nmx2 IN A 192.0.2.11\n' >"$work/zone"
status PUT /dns/example.test --data '"answer"' >/dev/null
code=$(status PUT /zones/example.test -H 'Content-Type: text/plain' --data-binary @"$work/zone")
[ "$code" = 200 ] && grep -q '"rule": "single-mx"' "$work/body" ||
  fail "PUT zone: $code $(cat "$work/body")"
[ "$(dig +short @"$dns_host" -p "$dns_port" example.test MX)" = "10 mx2.example.test." ] ||
  fail "the new zone is not served"

# Reset, then watch the event stream: the first thing it sends says it is open.
curl -sf -X POST "$api/reset" | grep -q '"reset": true' || fail "reset"
[ "$(curl -sf "$api/dns/queries")" = '{"queries": []}' ] || fail "reset kept the queries"
exec 3< <(exec curl -sN --max-time 20 "$api/events" 2>/dev/null)
stream=$!
trap 'kill "$stream" 2>/dev/null; rm -rf "$work"' EXIT
read -r first <&3
[ "$first" = "retry: 1000" ] || fail "the stream began with: $first"
dig +short @"$dns_host" -p "$dns_port" example.test MX >/dev/null
seen=""
while read -r line <&3; do
  case $line in
    data:*'"kind": "dns_served"'*) seen=$line; break ;;
  esac
done
[ -n "$seen" ] || fail "no dns_served event on the stream"
echo "ok: $seen"
