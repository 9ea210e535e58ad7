#!/usr/bin/env bash
# Router benchmark: the same keep-alive load with wrk straight to a backend, through
# `drove router`, and through HAProxy configured the same way (Host ACL, leastconn, the same
# forwarding headers, upstream keep-alive), with equal worker threads. Everything binds
# 127.0.0.1 only.
#
#   benches/router/run.sh                       # THREADS=1 DURATION=10 CONNS="64 8 1" REPEAT=3
#   THREADS=2 benches/router/run.sh
#
# Each (target, connections) pair is measured REPEAT times, interleaved with the other targets
# (so a burst of load from elsewhere on the machine hits all of them alike); the table shows
# the median of each column and the raw runs follow it. Besides wrk's req/s and p50/p99, it
# reports the proxy's CPU time per request (user+sys of the proxy process over the run, from
# /proc, divided by the requests served): the figure least disturbed by other load.
#
# A fourth target, "pingora alone", is Pingora's HTTP proxy with none of drove's code (the
# router crate's `bare_pingora` example: one fixed upstream, default hooks, the same allocator):
# the floor any Pingora-based router starts from.
#
# With THREADS=1 on a machine of 2+ CPUs (PIN=auto), each proxy is pinned to CPU 1 and wrk,
# nginx and the stand-in PaaS to CPU 0, so both proxies get one core of their own and the
# result does not depend on where the scheduler puts three busy processes. PIN=0 turns that
# off; with THREADS>1 nothing is pinned.
#
# Needs: wrk, haproxy, nginx-light (Debian packages), python3, taskset (util-linux), and
# `dist`-profile (fat LTO) builds of drove and of the bare_pingora example (built here if missing; DROVE=path
# selects another drove binary).
# BARE_VARIANTS=1 adds two rows: the Pingora floor with drove's peer timeouts, and with the same
# five header inserts drove makes, to take drove's cost over the floor apart.
# DROVE_BEFORE=path adds a row for a second drove binary (e.g. a build of the previous commit),
# run alongside, for before/after figures from the same run.
#
# TLS=1 measures HTTPS instead: drove's HTTPS listener (rustls) against HAProxy's `bind ... ssl`
# (OpenSSL), the same ECDSA P-256 certificate for `localhost` in both (made here with openssl;
# drove gets it on the route stream). Each connection count is run twice: keep-alive (CPU per
# request over TLS) and `Connection: close`, a new TLS handshake per request (handshakes/s and
# CPU per handshake). wrk offers TLS 1.3 and HTTP/1.1; the SNI is `localhost`.
set -euo pipefail
cd "$(dirname "$0")/../.."

THREADS=${THREADS:-1}
TLS=${TLS:-0}
DURATION=${DURATION:-10}
CONNS=${CONNS:-"64 8 1"}
REPEAT=${REPEAT:-3}
PIN=${PIN:-auto}
HOST=bench.localhost
[ "$TLS" = 1 ] && HOST=localhost
DROVE=${DROVE:-target/dist/drove}
DROVE_BEFORE=${DROVE_BEFORE:-}
BARE=${BARE:-target/dist/examples/bare_pingora}

for tool in wrk haproxy nginx python3 taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y wrk haproxy nginx-light util-linux)" >&2; exit 1; }
done
[ -x "$DROVE" ] || cargo build --profile dist --bin drove
[ "$TLS" = 1 ] || [ -x "$BARE" ] || cargo build --profile dist -p drove-router --example bare_pingora

if [ "$PIN" = auto ]; then
  if [ "$THREADS" = 1 ] && [ "$(nproc)" -ge 2 ]; then PIN=1; else PIN=0; fi
fi
# pin CPU PID...: every thread of each process.
pin() { local cpu=$1; shift; [ "$PIN" = 1 ] || return 0; for p in "$@"; do taskset -a -p -c "$cpu" "$p" >/dev/null; done; }
LOADGEN=()
[ "$PIN" = 1 ] && LOADGEN=(taskset -c 0)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
B1=$(free_port); B2=$(free_port); PAAS=$(free_port); ROUTER=$(free_port); ADMIN=$(free_port); HAP=$(free_port)
BARE_PORT=$(free_port); BARE_TO_PORT=$(free_port); BARE_HDR_PORT=$(free_port)
ROUTER_TLS=$(free_port); HAP_TLS=$(free_port)

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Backend: one nginx worker serving two instances of the app (two ports).
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path $WORK/nginx;
  proxy_temp_path $WORK/nginx;
  server { listen 127.0.0.1:$B1; location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:$B2; location / { return 200 "ok\n"; } }
}
CONF
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx"

ROUTER_HTTPS=()
HAP_BIND_TLS=
CURL_TLS=()
if [ "$TLS" = 1 ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost \
    -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
  cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/haproxy.pem"
  export HOSTNAMES=localhost CERT="$WORK/cert.pem" KEY="$WORK/key.pem"
  ROUTER_HTTPS=(--https-listen "127.0.0.1:$ROUTER_TLS")
  HAP_BIND_TLS="bind 127.0.0.1:$HAP_TLS ssl crt $WORK/haproxy.pem alpn http/1.1"
  CURL_TLS=(--cacert "$WORK/cert.pem")
fi
python3 benches/router/paas.py "$PAAS" bench "127.0.0.1:$B1" "127.0.0.1:$B2" &
PIDS+=($!)
PAAS_PID=$!

DROVE_LOG=warn "$DROVE" router --paas "http://127.0.0.1:$PAAS" --listen "127.0.0.1:$ROUTER" \
  --admin "127.0.0.1:$ADMIN" --threads "$THREADS" "${ROUTER_HTTPS[@]}" 2>"$WORK/router.log" &
PIDS+=($!)
DROVE_PID=$!
BEFORE_PID=
if [ -n "$DROVE_BEFORE" ]; then
  ROUTER_B=$(free_port); ADMIN_B=$(free_port)
  DROVE_LOG=warn "$DROVE_BEFORE" router --paas "http://127.0.0.1:$PAAS" --listen "127.0.0.1:$ROUTER_B" \
    --admin "127.0.0.1:$ADMIN_B" --threads "$THREADS" 2>>"$WORK/router.log" &
  PIDS+=($!)
  BEFORE_PID=$!
fi

# Pingora alone: one worker thread, work stealing on (as drove runs it), one fixed upstream.
BARE_PID=
if [ "$TLS" != 1 ]; then
  "$BARE" "127.0.0.1:$BARE_PORT" "127.0.0.1:$B1" "$THREADS" steal 2>>"$WORK/router.log" &
  PIDS+=($!)
  BARE_PID=$!
fi
# BARE_VARIANTS=1: the floor plus drove's peer timeouts, and plus drove's five header inserts.
BARE_TO_PID=; BARE_HDR_PID=
if [ "${BARE_VARIANTS:-0}" = 1 ]; then
  BARE_TIMEOUTS=1 "$BARE" "127.0.0.1:$BARE_TO_PORT" "127.0.0.1:$B1" "$THREADS" steal 2>>"$WORK/router.log" &
  PIDS+=($!); BARE_TO_PID=$!
  BARE_HEADERS=1 "$BARE" "127.0.0.1:$BARE_HDR_PORT" "127.0.0.1:$B1" "$THREADS" steal 2>>"$WORK/router.log" &
  PIDS+=($!); BARE_HDR_PID=$!
fi

# The same features as drove: Host ACL, least outstanding requests, X-Forwarded-For/-Proto/
# -Host, an X-Request-Id, client and upstream keep-alive (`http-reuse always` lets any idle
# upstream connection serve any request, as drove's pool does). No logging, like drove at
# DROVE_LOG=warn.
cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread $THREADS
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 70s
  timeout server 70s
  option http-keep-alive
frontend http-in
  bind 127.0.0.1:$HAP
  $HAP_BIND_TLS
  option forwardfor
  http-request set-header X-Forwarded-Proto https if { ssl_fc }
  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  unique-id-format %{+X}o\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid
  unique-id-header X-Request-Id
  acl host_bench hdr(host) -i $HOST
  use_backend bench if host_bench
backend bench
  balance leastconn
  http-reuse always
  server s1 127.0.0.1:$B1
  server s2 127.0.0.1:$B2
CONF
haproxy -q -f "$WORK/haproxy.cfg" &
PIDS+=($!)
HAP_PID=$!

# Wait until all three answer.
URLS=("http://127.0.0.1:$B1/" "http://127.0.0.1:$ROUTER/" "http://127.0.0.1:$HAP/")
[ -n "$BARE_PID" ] && URLS+=("http://127.0.0.1:$BARE_PORT/")
[ -n "$BEFORE_PID" ] && URLS+=("http://127.0.0.1:$ROUTER_B/")
[ -n "$BARE_TO_PID" ] && URLS+=("http://127.0.0.1:$BARE_TO_PORT/" "http://127.0.0.1:$BARE_HDR_PORT/")
[ "$TLS" = 1 ] && URLS+=("https://localhost:$ROUTER_TLS/" "https://localhost:$HAP_TLS/")
for url in "${URLS[@]}"; do
  for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "${CURL_TLS[@]}" -H "Host: $HOST" "$url" 2>/dev/null || true)
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  [ "$code" = 200 ] || { echo "$url did not answer 200 (got $code)" >&2; cat "$WORK/router.log" >&2; exit 1; }
done
NGINX_PIDS=$(cat "$WORK/nginx.pid"; pgrep -P "$(cat "$WORK/nginx.pid")" || true)
# shellcheck disable=SC2086
pin 0 $NGINX_PIDS "$PAAS_PID"
pin 1 "$DROVE_PID" "$HAP_PID" $BARE_PID $BEFORE_PID $BARE_TO_PID $BARE_HDR_PID

# wrk prints e.g. "Requests/sec:  12345.67" and "     50%  1.23ms" — normalise latencies to ms.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; printf "%.3f", v}'; }
cpu_ticks() { [ -n "$1" ] && awk '{print $14+$15}' "/proc/$1/stat" || echo 0; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
RAW="$WORK/raw"
measure() { # name url conns pid-of-proxy-or-empty [wrk args...] -> one raw line
  local out t0 t1 n name=$1 url=$2 conns=$3 pid=$4
  shift 4
  t0=$(cpu_ticks "$pid")
  out=$("${LOADGEN[@]}" wrk -t1 -c"$conns" -d"${DURATION}s" --latency -H "Host: $HOST" "$@" "$url")
  t1=$(cpu_ticks "$pid")
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  printf '%s|%s|%s|%s|%s|%s|%s\n' "$name" "$conns" \
    "$(echo "$out" | awk '/Requests\/sec/ {printf "%.0f", $2}')" \
    "$(echo "$out" | awk '$1=="50%" {print $2}' | to_ms)" \
    "$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)" \
    "$([ -n "$pid" ] && awk -v t=$((t1 - t0)) -v n="$n" -v u="$TICK_US" 'BEGIN {printf "%.1f", t * u / n}' || echo -)" \
    "$(echo "$out" | awk '/Non-2xx|Socket errors/' | tr '\n' ' ' | sed 's/ *$//')" >>"$RAW"
}
# name|url|pid|extra wrk header (a new connection per request: a TLS handshake each)
if [ "$TLS" = 1 ]; then
  TARGETS=("drove router, HTTPS keep-alive|https://localhost:$ROUTER_TLS/|$DROVE_PID|"
    "haproxy 2.6, HTTPS keep-alive|https://localhost:$HAP_TLS/|$HAP_PID|"
    "drove router, HTTPS handshake per request|https://localhost:$ROUTER_TLS/|$DROVE_PID|Connection: close"
    "haproxy 2.6, HTTPS handshake per request|https://localhost:$HAP_TLS/|$HAP_PID|Connection: close")
else
  TARGETS=("direct (nginx)|http://127.0.0.1:$B1/||" "drove router|http://127.0.0.1:$ROUTER/|$DROVE_PID|")
  [ -n "$BEFORE_PID" ] && TARGETS+=("drove router (DROVE_BEFORE)|http://127.0.0.1:$ROUTER_B/|$BEFORE_PID|")
  TARGETS+=("pingora alone (no drove code)|http://127.0.0.1:$BARE_PORT/|$BARE_PID|")
  [ -n "$BARE_TO_PID" ] && TARGETS+=("pingora + drove's peer timeouts|http://127.0.0.1:$BARE_TO_PORT/|$BARE_TO_PID|" "pingora + drove's 5 header inserts|http://127.0.0.1:$BARE_HDR_PORT/|$BARE_HDR_PID|")
  TARGETS+=("haproxy 2.6|http://127.0.0.1:$HAP/|$HAP_PID|")
fi
# wrk's extra arguments for a target's header field (none, or -H "...").
extra() { [ -n "$1" ] && printf '%s\0%s\0' -H "$1"; }

echo "machine: $(nproc) cores, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//'), $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
echo "versions: $(haproxy -v | head -1 | cut -d' ' -f1-3), $(nginx -v 2>&1 | cut -d' ' -f3), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $("$DROVE" --version) ($DROVE${DROVE_BEFORE:+; before: $DROVE_BEFORE})"
echo "threads: proxy worker threads=$THREADS (drove --threads, haproxy nbthread), wrk -t1, nginx 1 worker; pinned: $([ "$PIN" = 1 ] && echo 'proxies on CPU 1, wrk+nginx+PaaS on CPU 0' || echo no)"
echo "runs: ${DURATION}s each after a 2s warm-up, $REPEAT interleaved runs per row, medians shown"
echo
for c in $CONNS; do
  for t in "${TARGETS[@]}"; do
    IFS='|' read -r _ url _ hdr <<<"$t"
    mapfile -d '' args < <(extra "$hdr")
    "${LOADGEN[@]}" wrk -t1 -c"$c" -d2s -H "Host: $HOST" "${args[@]}" "$url" >/dev/null 2>&1
  done
  for _ in $(seq "$REPEAT"); do
    for t in "${TARGETS[@]}"; do
      IFS='|' read -r name url pid hdr <<<"$t"
      mapfile -d '' args < <(extra "$hdr")
      measure "$name" "$url" "$c" "$pid" "${args[@]}"
    done
  done
done
# Upstream connections the proxies hold open to the backends (keep-alive reuse check).
UP_DROVE=$(ss -tnp state established "( dport = :$B1 or dport = :$B2 )" 2>/dev/null | grep -c "pid=$DROVE_PID," || true)
UP_HAP=$(ss -tnp state established "( dport = :$B1 or dport = :$B2 )" 2>/dev/null | grep -c "pid=$HAP_PID," || true)

python3 - "$RAW" <<'PY'
import sys, statistics as st
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[1])]
groups = {}
for r in rows:
    groups.setdefault((r[1], r[0]), []).append(r)
def med(rs, i):
    vals = [float(r[i]) for r in rs if r[i] not in ("", "-")]
    return st.median(vals) if vals else None
fmt = lambda v, f: "-" if v is None else f.format(v)
print("| target | connections | req/s | p50 ms | p99 ms | proxy CPU µs/req | errors |")
print("|---|---|---|---|---|---|---|")
for (c, name), rs in groups.items():
    errs = "; ".join(sorted({r[6] for r in rs if r[6]})) or "none"
    print(f"| {name} | {c} | {fmt(med(rs,2),'{:.0f}')} | {fmt(med(rs,3),'{:.3f}')} | {fmt(med(rs,4),'{:.3f}')} | {fmt(med(rs,5),'{:.1f}')} | {errs} |")
print()
print("raw runs (target, connections: req/s p50/p99 ms, proxy CPU µs/req):")
for (c, name), rs in groups.items():
    print(f"- {name}, {c}: " + ", ".join(f"{r[2]} {r[3]}/{r[4]} {r[5]}" for r in rs))
PY
echo
echo "upstream connections held after the runs: drove $UP_DROVE, haproxy $UP_HAP (max connections used: ${CONNS// /, })"
