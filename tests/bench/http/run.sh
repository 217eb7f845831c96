#!/bin/sh
# run.sh - HTTP benchmark: wrk against `retro serve` (/health, /v1/search by
# vector, /v1/search by text) and against a minimal libmicrohttpd responder
# (minimal.c, built here) on the same machine in the same run, and search by
# vector against faiss_peer.c (a bare FAISS IndexFlatIP of the same size
# behind libmicrohttpd and jansson); prints
# requests/s, p50, p99 and server CPU per request for each and the ratio
# ours / minimal (requests/s; the minimal's POST is timed twice: with a
# 7-byte body, as in earlier reports, and with the very body of the search
# by vector, the like-for-like figure), then search by vector's server CPU
# per request split into the index scan (from retro's /metrics) and
# everything else, against the minimal responder's (goal: at most the scan
# plus twice the minimal's, given the same body: once at its own full rate,
# and once at the search's request rate, spending the scan's CPU time per
# request in a loop first, as minimal.c's WORK_US does; ROUNDS times in
# turns, and the median); then holds
# SLOW_CLIENTS (500) stalled connections open and reports RSS and /health
# latency meanwhile (slow_clients.py).
#   tests/bench/http/run.sh [BUILD_DIR]        (default: build-bench, release)
# Environment: DURATION (s, default 10), CONNS (default 32), THREADS (wrk, 2),
#   HTTP_THREADS (server pool, 2), DOCS (documents ingested, 2000),
#   ROUNDS (search by vector and the minimal responder at its rate, in turns, 3),
#   MODELS (dir with encoder/ decoder/; default: tiny random ones made here),
#   DATA (an existing data dir to serve instead of ingesting DOCS, e.g. a
#   copy of the README main job's; MODELS then defaults to model/default),
#   SERVER_CPUS and CLIENT_CPUS (taskset CPU lists: the servers on the one,
#   wrk on the other, so that the load generator's wake-ups and interrupts
#   do not land on the servers' cores; e.g. SERVER_CPUS=0 CLIENT_CPUS=1
#   HTTP_THREADS=1 THREADS=1 on a 2-core machine).
set -eu
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
. "$ROOT/tests/bench/http/bench_lib.sh"
BUILD=${1:-$ROOT/build-bench}
DURATION=${DURATION:-10}; CONNS=${CONNS:-32}; THREADS=${THREADS:-2}
HTTP_THREADS=${HTTP_THREADS:-2}; DOCS=${DOCS:-2000}
# (exec: run in the background, the server keeps the PID that $! gives)
exec_on_servers() { if [ -n "${SERVER_CPUS:-}" ]; then exec taskset -c "$SERVER_CPUS" "$@"; else exec "$@"; fi; }
on_client() { if [ -n "${CLIENT_CPUS:-}" ]; then taskset -c "$CLIENT_CPUS" "$@"; else "$@"; fi; }
command -v wrk >/dev/null || { echo "run.sh: wrk not installed (apt-get install wrk)"; exit 77; }
[ -d "$BUILD" ] || meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
ninja -C "$BUILD" server/retro index/libindex.a >/dev/null
WORK=$(mktemp -d)
trap 'kill $RPID $MPID $FPID $WPID 2>/dev/null || true; rm -rf "$WORK"' EXIT
RPID=; MPID=; FPID=; WPID=
cc -O2 -o "$WORK/minimal" "$ROOT/tests/bench/http/minimal.c" $(pkg-config --cflags --libs libmicrohttpd)
cc -O2 -o "$WORK/faiss_peer" "$ROOT/tests/bench/http/faiss_peer.c" "$BUILD/index/libindex.a" -lfaiss \
  $(pkg-config --libs openblas) -lstdc++ -lgomp -lm $(pkg-config --cflags --libs libmicrohttpd jansson)
DATA=${DATA:-}
MODELS=${MODELS:-${DATA:+$ROOT/model/default}}
if [ -z "$MODELS" ]; then
  MODELS=$WORK/models
  /usr/bin/python3 "$ROOT/tests/http/make_models.py" "$MODELS" >/dev/null
fi
PORT_R=$((20000 + $$ % 10000)); PORT_M=$((PORT_R + 1))
exec_on_servers env ${SERVER_ENV:-} "$BUILD/server/retro" serve --data "${DATA:-$WORK/data}" --encoder "$MODELS/encoder" --decoder none \
  --port $PORT_R --http-threads $HTTP_THREADS --max-per-ip 0 --idle-timeout 30 --log "$WORK/retro.log" 2>"$WORK/serve.err" &
RPID=$!
exec_on_servers "$WORK/minimal" $PORT_M $HTTP_THREADS & MPID=$!
for i in $(seq 100); do curl -fs "http://127.0.0.1:$PORT_R/ready" >/dev/null 2>&1 && break; sleep 0.2; done
# corpus: DOCS short documents (unless DATA holds one)
[ -n "$DATA" ] || bench_ingest "http://127.0.0.1:$PORT_R" "$DOCS" "$WORK"
VEC=$(bench_vector "http://127.0.0.1:$PORT_R")
# the FAISS peer: a plain IndexFlatIP as large as retro's index, same dimension
set -- $(curl -fsS "http://127.0.0.1:$PORT_R/v1/info" | \
  /usr/bin/python3 -c 'import json,sys; i=json.load(sys.stdin); print(i["chunks"], i["encoder"]["dim"])')
CHUNKS=$1; DIM=$2
PORT_F=$((PORT_R + 2))
exec_on_servers env OMP_WAIT_POLICY=passive "$WORK/faiss_peer" $PORT_F $HTTP_THREADS $CHUNKS $DIM & FPID=$!
mklua "{\"vector\":$VEC,\"k\":10,\"with_text\":false}" > "$WORK/vec.lua"
mklua '{"query":"alpha beta gamma delta","k":10,"with_text":false}' > "$WORK/text.lua"
mklua '{"x":1}' > "$WORK/post.lua"
http_ticks() { # the same for its libmicrohttpd threads alone
  for t in /proc/$1/task/*; do case $(cat $t/comm) in MHD-worker|MHD-single) true;; *) false;; esac && awk '{print $14 + $15}' $t/stat; done | \
    awk '{s += $1} END {print s + 0}'
}
run() { # name pid url [lua] -> requests/s on stdout; a line with p50, p99 and the
        # server's CPU per request (from /proc, steadier than req/s here) on stderr
  t0=$(ticks $2)
  if [ -n "${4:-}" ]; then out=$(on_client wrk -t$THREADS -c$CONNS -d${DURATION}s --latency -s "$4" "$3"); \
  else out=$(on_client wrk -t$THREADS -c$CONNS -d${DURATION}s --latency "$3"); fi
  t1=$(ticks $2)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}'); p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  cpu=$(awk -v a=$t0 -v b=$t1 -v n=$n -v hz=$(getconf CLK_TCK) 'BEGIN { printf "%.1f", (b - a) * 1e6 / hz / n }')
  printf '%-26s %10s req/s  p50 %8s  p99 %8s  server CPU %6s us/req  %s\n' "$1" "$rps" "$p50" "$p99" "$cpu" \
    "${non2xx:+non-2xx: $non2xx}" >&2
  echo "$cpu $n" > "$WORK/last_run" # server CPU per request and requests, for the split below
  echo "$rps"
}
metric() { # name -> its value in retro's /metrics
  curl -fsS "http://127.0.0.1:$PORT_R/metrics" | awk -v m="$1" '$1 == m {print $2}'
}
echo "wrk -t$THREADS -c$CONNS -d${DURATION}s; server pools: $HTTP_THREADS MHD threads; $(nproc) CPUs${SERVER_CPUS:+, servers on CPUs $SERVER_CPUS}${CLIENT_CPUS:+, wrk on CPUs $CLIENT_CPUS}; $(if [ -n "$DATA" ]; then echo "data $DATA"; else echo "$DOCS docs"; fi)" >&2
m_get=$(run "minimal GET" $MPID "http://127.0.0.1:$PORT_M/health")
r_get=$(run "retro /health" $RPID "http://127.0.0.1:$PORT_R/health")
m_post=$(run "minimal POST" $MPID "http://127.0.0.1:$PORT_M/" "$WORK/post.lua")
m_vec=$(run "minimal POST, search body" $MPID "http://127.0.0.1:$PORT_M/" "$WORK/vec.lua")
read m_vec_cpu _ < "$WORK/last_run"
# search by vector, then the minimal responder at its request rate, ROUNDS
# times in turns (the runs' noise is the size of the margin); the last
# round's figures are the ones split below
PORT_W=$((PORT_R + 3)); : > "$WORK/rounds"
for round in $(seq ${ROUNDS:-3}); do
  scans0=$(metric retro_index_scans_total); timed0=$(metric retro_index_scan_cpu_seconds_count)
  scan_s0=$(metric retro_index_scan_cpu_seconds_sum); h0=$(http_ticks $RPID)
  r_vec=$(run "retro search by vector" $RPID "http://127.0.0.1:$PORT_R/v1/search" "$WORK/vec.lua")
  read r_vec_cpu r_vec_n < "$WORK/last_run"
  h1=$(http_ticks $RPID)
  scans1=$(metric retro_index_scans_total); timed1=$(metric retro_index_scan_cpu_seconds_count)
  scan_s1=$(metric retro_index_scan_cpu_seconds_sum)
  # the scan's CPU per request (retro's /metrics: the mean CPU time of the timed
  # scans, times the scans), then the minimal responder at the search's request
  # rate: each POST first spends that long in a loop (minimal.c WORK_US)
  scan_us=$(awk -v s0=$scan_s0 -v s1=$scan_s1 -v c0=$scans0 -v c1=$scans1 -v t0=$timed0 -v t1=$timed1 \
    -v n=$r_vec_n 'BEGIN { printf "%.1f", (t1 > t0 ? (s1 - s0) / (t1 - t0) * (c1 - c0) * 1e6 / n : 0) }')
  exec_on_servers "$WORK/minimal" $PORT_W $HTTP_THREADS $scan_us & WPID=$!
  for i in $(seq 50); do curl -fs "http://127.0.0.1:$PORT_W/health" >/dev/null 2>&1 && break; sleep 0.1; done
  run "minimal POST, + scan-long work" $WPID "http://127.0.0.1:$PORT_W/" "$WORK/vec.lua" >/dev/null
  read w_cpu w_n < "$WORK/last_run"
  set -- $(curl -fsS "http://127.0.0.1:$PORT_W/work")
  w_rest=$(awk -v cpu=$w_cpu -v s=$1 -v n=$w_n 'BEGIN { printf "%.1f", cpu - s * 1e6 / n }')
  kill $WPID; wait $WPID 2>/dev/null || true; WPID=
  echo "$r_vec_cpu $scan_us $w_rest" >> "$WORK/rounds"
done
f_vec=$(run "FAISS peer, same search" $FPID "http://127.0.0.1:$PORT_F/" "$WORK/vec.lua")
r_txt=$(run "retro search by text" $RPID "http://127.0.0.1:$PORT_R/v1/search" "$WORK/text.lua")
ratio() { /usr/bin/python3 -c "import sys; print('%.2f' % (float(sys.argv[1]) / float(sys.argv[2])))" "$1" "$2"; }
echo "ratio /health / minimal GET:            $(ratio $r_get $m_get)"
echo "ratio search-by-vector / minimal POST:  $(ratio $r_vec $m_post)   (goal >= 0.80)"
echo "  the same, minimal given the search body: $(ratio $r_vec $m_vec)"
echo "ratio search-by-text / minimal POST:    $(ratio $r_txt $m_post)"
echo "ratio search-by-vector / FAISS peer:    $(ratio $r_vec $f_vec)   ($CHUNKS x $DIM, k = 10)"
# search by vector's server CPU split: the index scan (scan_us above) and
# everything else, against the minimal responder given the same body
awk -v cpu=$r_vec_cpu -v n=$r_vec_n -v c0=$scans0 -v c1=$scans1 \
    -v t0=$timed0 -v t1=$timed1 -v m=$m_vec_cpu -v h=$((h1 - h0)) -v hz=$(getconf CLK_TCK) \
    -v w=$w_rest -v wu=$scan_us 'BEGIN {
  scan = wu; rest = cpu - scan
  printf "search by vector, server CPU per request: %.1f us = scan %.1f + everything else %.1f" \
    " (%d scans for %d requests, %d timed); minimal responder, same body: %.1f us\n", \
    cpu, scan, rest, c1 - c0, n, t1 - t0, m
  printf "  on the HTTP threads: %.1f us (the rest on the workers, when the search is handed to them)\n", \
    h * 1e6 / hz / n
  printf "  everything else / minimal: %.2f; goal: %.1f <= scan + 2 x minimal = %.1f: %s\n", \
    rest / m, cpu, scan + 2 * m, cpu <= scan + 2 * m ? "met" : "NOT met"
  printf "  minimal responder at this request rate (%.1f us of work first): %.1f us besides the work;" \
    " everything else / it: %.2f; goal: %.1f <= scan + 2 x it = %.1f: %s\n", \
    wu, w, rest / w, cpu, scan + 2 * w, cpu <= scan + 2 * w ? "met" : "NOT met" }'
awk '{ rest = $1 - $2; printf "%s %.1f / %.1f = %.2f", (NR > 1 ? ";" : "  everything else / minimal at the same rate, by round:"), rest, $3, rest / $3 }
     END { print "" }' "$WORK/rounds"
awk '{ print ($1 - $2) / $3 }' "$WORK/rounds" | sort -g | awk '{ r[NR] = $1 }
  END { m = NR % 2 ? r[(NR + 1) / 2] : (r[NR / 2] + r[NR / 2 + 1]) / 2
        printf "  median of %d rounds: %.2f (goal <= 2: %s)\n", NR, m, (m <= 2 ? "met" : "NOT met") }'
# hundreds of stalled clients: bounded memory, others still served
/usr/bin/python3 "$ROOT/tests/bench/http/slow_clients.py" $PORT_R $RPID ${SLOW_CLIENTS:-500}
