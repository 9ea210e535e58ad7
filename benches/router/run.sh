#!/usr/bin/env bash
# Router benchmark: the same keep-alive load with wrk straight to a backend, through
# `drove router`, and through HAProxy configured the same way (Host ACL, leastconn, the same
# forwarding headers), with equal worker threads. Everything binds 127.0.0.1 only.
#
#   benches/router/run.sh            # THREADS=1 DURATION=15 CONNS="64 8"
#   THREADS=2 DURATION=20 benches/router/run.sh
#
# Needs: wrk, haproxy, nginx-light (Debian packages), python3, and a release build of drove
# (built here if missing). Prints a markdown table of req/s and p50/p99 latency.
set -euo pipefail
cd "$(dirname "$0")/../.."

THREADS=${THREADS:-1}
DURATION=${DURATION:-15}
CONNS=${CONNS:-"64 8"}
HOST=bench.localhost
DROVE=${DROVE:-target/release/drove}

for tool in wrk haproxy nginx python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install -y wrk haproxy nginx-light)" >&2; exit 1; }
done
[ -x "$DROVE" ] || cargo build --release --bin drove

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
B1=$(free_port); B2=$(free_port); PAAS=$(free_port); ROUTER=$(free_port); ADMIN=$(free_port); HAP=$(free_port)
ROUTER_JE=$(free_port); ADMIN_JE=$(free_port)
# Optional extra row: the same router binary with jemalloc preloaded (Debian libjemalloc2),
# to show what a non-glibc allocator is worth.
JEMALLOC=${JEMALLOC:-/usr/lib/x86_64-linux-gnu/libjemalloc.so.2}

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

python3 benches/router/paas.py "$PAAS" bench "127.0.0.1:$B1" "127.0.0.1:$B2" &
PIDS+=($!)

DROVE_LOG=warn "$DROVE" router --paas "http://127.0.0.1:$PAAS" --listen "127.0.0.1:$ROUTER" \
  --admin "127.0.0.1:$ADMIN" --threads "$THREADS" 2>"$WORK/router.log" &
PIDS+=($!)
if [ -f "$JEMALLOC" ]; then
  LD_PRELOAD="$JEMALLOC" DROVE_LOG=warn "$DROVE" router --paas "http://127.0.0.1:$PAAS" \
    --listen "127.0.0.1:$ROUTER_JE" --admin "127.0.0.1:$ADMIN_JE" --threads "$THREADS" 2>>"$WORK/router.log" &
  PIDS+=($!)
fi

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
  option forwardfor
  http-request set-header X-Forwarded-Proto http
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

# Wait until all three answer.
URLS=("http://127.0.0.1:$B1/" "http://127.0.0.1:$ROUTER/" "http://127.0.0.1:$HAP/")
[ -f "$JEMALLOC" ] && URLS+=("http://127.0.0.1:$ROUTER_JE/")
for url in "${URLS[@]}"; do
  for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $HOST" "$url" || true)
    [ "$code" = 200 ] && break
    sleep 0.1
  done
  [ "$code" = 200 ] || { echo "$url did not answer 200 (got $code)" >&2; cat "$WORK/router.log" >&2; exit 1; }
done

# wrk prints e.g. "Requests/sec:  12345.67" and "     50%  1.23ms" — normalise latencies to ms.
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; printf "%.3f", v}'; }
measure() { # name port conns
  wrk -t1 -c"$3" -d2s -H "Host: $HOST" "http://127.0.0.1:$2/" >/dev/null 2>&1  # warm-up
  out=$(wrk -t1 -c"$3" -d"${DURATION}s" --latency -H "Host: $HOST" "http://127.0.0.1:$2/")
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}' | to_ms)
  p99=$(echo "$out" | awk '$1=="99%" {print $2}' | to_ms)
  errs=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
  printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$3" "$rps" "$p50" "$p99" "${errs:-none}"
}

echo "machine: $(nproc) cores, $(awk '/model name/ {$1=$2=$3=""; print; exit}' /proc/cpuinfo | sed 's/^ *//'), $(uname -r)"
echo "versions: $(haproxy -v | head -1 | cut -d' ' -f1-3), $(nginx -v 2>&1 | cut -d' ' -f3), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), $("$DROVE" --version)"
echo "threads: proxy worker threads=$THREADS (drove --threads, haproxy nbthread), wrk -t1, nginx 1 worker, ${DURATION}s per run"
echo
echo "| target | connections | req/s | p50 ms | p99 ms | errors |"
echo "|---|---|---|---|---|---|"
for c in $CONNS; do
  measure "direct (nginx)" "$B1" "$c"
  measure "drove router" "$ROUTER" "$c"
  [ -f "$JEMALLOC" ] && measure "drove router, jemalloc preloaded" "$ROUTER_JE" "$c"
  measure "haproxy 2.6" "$HAP" "$c"
done
