#!/usr/bin/env bash
# Side-by-side: the edge proxy's player front vs nginx serving the same 1 MB segment.
# Servers on core 0, load on core 1 (taskset). Needs nginx (nginx-light) and a release build.
#
#   bash benches/scripts/edge-vs-nginx.sh [seconds]
#
# Prints: cache-hit throughput of shoal-edge vs nginx (sendfile, one worker); latency of a miss
# (pass-through to nginx) vs nginx alone at half of nginx's peak rate; shoal-edge's resident
# memory idle and under load.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}
cargo build --release -q -p shoal-edge-proxy --bin shoal-edge -p shoal-bench --bin http-load
edge=target/release/shoal-edge
load=target/release/http-load
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

head -c 1000000 /dev/urandom > "$work/seg1.ts"
cp "$work/seg1.ts" "$work/other.ts"   # not in any playlist: a miss, passed through
printf '#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:2.0,\nseg1.ts\n#EXT-X-ENDLIST\n' > "$work/vod.m3u8"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
np=$(port); ep=$(port)
mkdir -p "$work/nginx/logs"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
error_log $work/nginx/logs/error.log;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  types { video/mp2t ts; application/vnd.apple.mpegurl m3u8; }
  server { listen 127.0.0.1:$np; root $work; }
}
CONF
taskset -c 0 /usr/sbin/nginx -c "$work/nginx.conf" -p "$work/nginx" &
taskset -c 0 "$edge" --listen 127.0.0.1:$ep --peer-listen 127.0.0.1:0 \
  --origin 127.0.0.1:$np --origin-scheme 127.0.0.1:$np=http >/dev/null 2>&1 &
edge_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ep/healthz" >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2 " kB"}' /proc/$edge_pid/status; }
echo "shoal-edge RSS idle: $(rss)"
# Learn the playlist and cache the segment.
curl -sf "http://127.0.0.1:$ep/127.0.0.1:$np/vod.m3u8" >/dev/null
curl -sf "http://127.0.0.1:$ep/127.0.0.1:$np/seg1.ts" -o /dev/null

run() { taskset -c 1 "$load" --duration "${secs}s" "$@"; }
echo "== cache hit, 1 MB segment, closed loop, 16 connections"
run --url "http://127.0.0.1:$np/seg1.ts" --rate 0
run --url "http://127.0.0.1:$ep/127.0.0.1:$np/seg1.ts" --rate 0 &
lp=$!
sleep $((secs / 2 + 2)); echo "shoal-edge RSS under load: $(rss)"; wait $lp
peak=$(run --url "http://127.0.0.1:$np/other.ts" --rate 0 --json | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["requests_per_sec"]))')
half=$((peak / 2))
echo "== miss (pass-through) latency at half of nginx's peak ($peak req/s -> $half req/s)"
run --url "http://127.0.0.1:$np/other.ts" --rate "$half"
run --url "http://127.0.0.1:$ep/127.0.0.1:$np/other.ts" --rate "$half"
echo "shoal-edge RSS after: $(rss)"
