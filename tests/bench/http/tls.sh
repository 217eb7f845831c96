#!/bin/sh
# tls.sh - what HTTPS costs (not run by CI): wrk against `retro serve` over
# plain HTTP and over its own TLS (--tls-cert, --tls-key), then against nginx
# terminating TLS in front of the plain server (the usual alternative, when
# nginx is installed: apt-get install nginx-light), on the same data in the
# same run. For /health and search by vector on kept-alive connections, and
# for /health with a new connection (a full handshake) per request, it
# prints requests/s, p50 and the server side's CPU per request (retro's, or
# nginx's and retro's together), and the ratios TLS / plain and ours /
# nginx. The certificate is a P-256 key signed by a throwaway authority
# (openssl). wrk keeps its connections unless told `Connection: close`.
#   tests/bench/http/tls.sh [BUILD_DIR]        (default: build-bench, release)
# Environment: DURATION (s, default 5), CONNS (32), THREADS (wrk, 2),
#   DOCS (documents ingested, 2000), HTTP_THREADS (server pool, 2).
set -eu
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
. "$ROOT/tests/bench/http/bench_lib.sh"
BUILD=${1:-$ROOT/build-bench}
DURATION=${DURATION:-5}; CONNS=${CONNS:-32}; THREADS=${THREADS:-2}
HTTP_THREADS=${HTTP_THREADS:-2}; DOCS=${DOCS:-2000}
for tool in wrk openssl curl; do
  command -v $tool >/dev/null || { echo "tls.sh: $tool not installed"; exit 77; }
done
[ -d "$BUILD" ] || meson setup "$BUILD" "$ROOT" --buildtype=release >/dev/null
ninja -C "$BUILD" server/retro >/dev/null
WORK=$(mktemp -d)
RPID=; NPID=
trap 'kill $RPID $NPID 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$((20000 + $$ % 10000)); PORT_N=$((PORT + 1))

# a throwaway authority and a certificate for 127.0.0.1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/ca.key" \
  -out "$WORK/ca.pem" -days 1 -subj /CN=bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/key.pem" \
  -out "$WORK/csr.pem" -subj /CN=127.0.0.1 2>/dev/null
echo "subjectAltName=IP:127.0.0.1" > "$WORK/san.cnf"
openssl x509 -req -in "$WORK/csr.pem" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -out "$WORK/cert.pem" -days 1 -extfile "$WORK/san.cnf" 2>/dev/null

/usr/bin/python3 "$ROOT/tests/http/make_models.py" "$WORK/models" >/dev/null
serve() { # [tls flags...]: starts retro on $PORT (RPID), waits for /ready
  "$BUILD/server/retro" serve --data "$WORK/data" --encoder "$WORK/models/encoder" --decoder none \
    --port $PORT --http-threads $HTTP_THREADS --max-per-ip 0 --log /dev/null "$@" 2>"$WORK/serve.err" &
  RPID=$!
  for i in $(seq 100); do
    curl -fs --cacert "$WORK/ca.pem" "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && return
    curl -fs --cacert "$WORK/ca.pem" "https://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && return
    sleep 0.2
  done
  cat "$WORK/serve.err"; exit 1
}
stop() { kill $RPID; wait $RPID 2>/dev/null || true; RPID=; }

serve
bench_ingest "http://127.0.0.1:$PORT" "$DOCS" "$WORK"
VEC=$(bench_vector "http://127.0.0.1:$PORT")
mklua "{\"vector\":$VEC,\"k\":10,\"with_text\":false}" > "$WORK/vec.lua"

run() { # name url "pids" [wrk args...] -> requests/s on stdout, a line on stderr
  name=$1; url=$2; pids=$3; shift 3
  t0=$(ticks $pids)
  out=$(wrk -t$THREADS -c$CONNS -d${DURATION}s --latency "$@" "$url")
  t1=$(ticks $pids)
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  n=$(echo "$out" | awk '/requests in/ {print $1}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  errs=$(echo "$out" | awk '/Socket errors|Non-2xx/')
  cpu=$(awk -v a=$t0 -v b=$t1 -v n=$n -v hz=$(getconf CLK_TCK) 'BEGIN { printf "%.1f", (b - a) * 1e6 / hz / n }')
  printf '%-40s %9s req/s  p50 %8s  server CPU %7s us/req %s\n' "$name" "$rps" "$p50" "$cpu" "$errs" >&2
  echo "$rps $cpu"
}
echo 'wrk.headers["Connection"] = "close"' > "$WORK/close.lua"
close="-s $WORK/close.lua"
echo "wrk -t$THREADS -c$CONNS -d${DURATION}s; $HTTP_THREADS MHD threads; $(nproc) CPUs; $DOCS docs; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" >&2
p_health=$(run "plain: /health" "http://127.0.0.1:$PORT/health" "$RPID")
p_vec=$(run "plain: search by vector" "http://127.0.0.1:$PORT/v1/search" "$RPID" -s "$WORK/vec.lua")
p_new=$(run "plain: /health, new connection each" "http://127.0.0.1:$PORT/health" "$RPID" $close)
stop

serve --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem"
t_health=$(run "retro TLS: /health" "https://127.0.0.1:$PORT/health" "$RPID")
t_vec=$(run "retro TLS: search by vector" "https://127.0.0.1:$PORT/v1/search" "$RPID" -s "$WORK/vec.lua")
t_new=$(run "retro TLS: /health, new connection each" "https://127.0.0.1:$PORT/health" "$RPID" $close)
stop

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
compare() { # title, then "what:BASE:OURS" for each (a figure: "req/s cpu-per-request")
  echo "$1"; shift
  for pair in "$@"; do
    IFS=: read what base ours <<EOF
$pair
EOF
    set -- $base $ours
    echo "  $what: $(ratio $3 $1) ($(ratio $4 $2)x the CPU)"
  done
}
compare "retro TLS / plain, requests/s (server CPU per request):" \
  "/health:$p_health:$t_health" "search by vector:$p_vec:$t_vec" "new connection each:$p_new:$t_new"

NGINX=$(command -v nginx || ls /usr/sbin/nginx 2>/dev/null || true)
if [ -z "$NGINX" ]; then
  echo "nginx not installed: no peer (apt-get install nginx-light)"
  exit 0
fi
serve
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes $HTTP_THREADS;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx; uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  upstream retro { server 127.0.0.1:$PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$PORT_N ssl;
    ssl_certificate $WORK/cert.pem; ssl_certificate_key $WORK/key.pem;
    location / { proxy_pass http://retro; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' 2>"$WORK/nginx/stderr" &
NPID=$!
for i in $(seq 50); do curl -fs --cacert "$WORK/ca.pem" "https://127.0.0.1:$PORT_N/health" >/dev/null 2>&1 && break; sleep 0.1; done
NPIDS="$NPID $(pgrep -P $NPID | tr '\n' ' ')"
n_health=$(run "nginx TLS -> plain: /health" "https://127.0.0.1:$PORT_N/health" "$NPIDS $RPID")
n_vec=$(run "nginx TLS -> plain: search by vector" "https://127.0.0.1:$PORT_N/v1/search" "$NPIDS $RPID" -s "$WORK/vec.lua")
n_new=$(run "nginx TLS -> plain: /health, new conn." "https://127.0.0.1:$PORT_N/health" "$NPIDS $RPID" $close)
compare "retro TLS / nginx in front, requests/s (server CPU per request, nginx's and retro's together):" \
  "/health:$n_health:$t_health" "search by vector:$n_vec:$t_vec" "new connection each:$n_new:$t_new"
