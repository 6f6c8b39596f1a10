#!/usr/bin/env bash
# Side-by-side: the edge proxy's player front vs nginx serving the same segments.
# Needs nginx (nginx-light) and a release build; the load generator always runs on core 1.
#
#   bash benches/scripts/edge-vs-nginx.sh [seconds]
#
# Prints:
# - cache hit: shoal-edge (core 0) vs nginx (core 0, sendfile, one worker), closed loop;
#   shoal-edge's resident memory idle and under load;
# - miss (pass-through of a URL in no playlist, and segments of a playlist walked so that each
#   is a cache miss) at half of nginx's peak rate, open loop, for a 1 MB and a 750 KB
#   (2 s x 3 Mbit/s) segment: nginx alone, shoal-edge -> nginx, and nginx as a reverse proxy
#   -> nginx (what any proxy costs), in two layouts: all servers on core 0 ("shared"), and the
#   origin nginx moved to core 1 beside the load ("split").
# Each line gives p50/p99 and every server's CPU time per request (from /proc/PID/stat).
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
head -c 750000 /dev/urandom > "$work/other750.ts"
printf '#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:2.0,\nseg1.ts\n#EXT-X-ENDLIST\n' > "$work/vod.m3u8"
# A long VOD playlist whose segments are all the same file: walked in order with a cache far
# smaller than the playlist, every request is a miss through the segment scheduler.
nseg=2000
mkdir -p "$work/long"
{
  printf '#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n'
  for i in $(seq 0 $((nseg - 1))); do
    ln -s ../other.ts "$work/long/s$i.ts"
    printf '#EXTINF:2.0,\ns%d.ts\n' "$i"
  done
  printf '#EXT-X-ENDLIST\n'
} > "$work/long/vod.m3u8"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
np=$(port); pp=$(port); ep=$(port)
nginx_conf() { # name, server block
  mkdir -p "$work/$1/logs"
  cat > "$work/$1.conf" <<CONF
worker_processes 1;
daemon off;
master_process off;
error_log $work/$1/logs/error.log;
pid $work/$1/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path $work/$1; proxy_temp_path $work/$1; fastcgi_temp_path $work/$1;
  uwsgi_temp_path $work/$1; scgi_temp_path $work/$1;
  types { video/mp2t ts; application/vnd.apple.mpegurl m3u8; }
  $2
}
CONF
}
nginx_conf origin "server { listen 127.0.0.1:$np; root $work; }"
nginx_conf proxy "upstream o { server 127.0.0.1:$np; keepalive 64; }
  server { listen 127.0.0.1:$pp; location / { proxy_pass http://o; proxy_http_version 1.1;
    proxy_set_header Connection \"\"; proxy_max_temp_file_size 0; } }"
taskset -c 0 /usr/sbin/nginx -c "$work/origin.conf" -p "$work/origin" &
origin_pid=$!
taskset -c 0 /usr/sbin/nginx -c "$work/proxy.conf" -p "$work/proxy" &
proxy_pid=$!
taskset -c 0 "$edge" --listen 127.0.0.1:$ep --peer-listen 127.0.0.1:0 --cache-size 64MiB \
  --origin 127.0.0.1:$np --origin-scheme 127.0.0.1:$np=http >/dev/null 2>&1 &
edge_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ep/healthz" >/dev/null && break; sleep 0.1; done
rss() { awk '/VmRSS/ {print $2 " kB"}' /proc/$edge_pid/status; }
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "shoal-edge RSS idle: $(rss)"
# Learn the playlists and cache the segment.
curl -sf "http://127.0.0.1:$ep/127.0.0.1:$np/vod.m3u8" >/dev/null
curl -sf "http://127.0.0.1:$ep/127.0.0.1:$np/long/vod.m3u8" >/dev/null
curl -sf "http://127.0.0.1:$ep/127.0.0.1:$np/seg1.ts" -o /dev/null

run() { taskset -c 1 "$load" --duration "${secs}s" "$@"; }
echo "== cache hit, 1 MB segment, closed loop, 16 connections"
run --url "http://127.0.0.1:$np/seg1.ts" --rate 0 --cpu-pid $origin_pid
run --url "http://127.0.0.1:$ep/127.0.0.1:$np/seg1.ts" --rate 0 --cpu-pid $edge_pid &
lp=$!
sleep $((secs / 2 + 2)); echo "shoal-edge RSS under load: $(rss)"; wait $lp

cpu="--cpu-pid $origin_pid --cpu-pid $edge_pid --cpu-pid $proxy_pid"
misses() { # layout, file, rate
  echo "-- $1: $2 at $3 req/s (cpu: origin nginx, shoal-edge, proxy nginx)"
  run --url "http://127.0.0.1:$np/$2" --rate "$3" $cpu
  run --url "http://127.0.0.1:$ep/127.0.0.1:$np/$2" --rate "$3" $cpu
  run --url "http://127.0.0.1:$pp/$2" --rate "$3" $cpu
}
for file in other.ts other750.ts; do
  taskset -p -c 0 $origin_pid >/dev/null
  peak=$(run --url "http://127.0.0.1:$np/$file" --rate 0 --json |
    python3 -c 'import json,sys; print(int(json.load(sys.stdin)["requests_per_sec"]))')
  half=$((peak / 2))
  [ "$file" = other.ts ] && half_1mb=$half
  echo "== miss (pass-through) at half of nginx's peak: $file, peak $peak req/s -> $half req/s"
  misses shared "$file" "$half"
  taskset -p -c 1 $origin_pid >/dev/null
  misses split "$file" "$half"
done
taskset -p -c 0 $origin_pid >/dev/null
echo "== segment misses through the scheduler (a $nseg-segment playlist walked in order, 64 MiB cache)"
origin_bytes() {
  curl -sf "http://127.0.0.1:$ep/metrics" | awk '/^shoal_edge_origin_bytes_total/ {print $2}'
}
for rate in 100 "$half_1mb"; do
  before=$(origin_bytes)
  run --url "http://127.0.0.1:$ep/127.0.0.1:$np/long/s{n}.ts" --distinct $nseg --rate "$rate" $cpu
  echo "  origin bytes during the run (warm-up included): $(($(origin_bytes) - before))"
done
echo "shoal-edge RSS after: $(rss)"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
