# serve_lib.sh - sourced by the shell test runners (tests/compat/run.sh,
# tests/webui/run.sh): the tiny random test models and `retro serve` on a
# random loopback port. Needs from the runner: RETRO, WORK, HERE (its own
# folder, beside tests/http), skip(), and PIDS, the servers to kill on exit.

# make_test_models: tests/http/make_models.py into $WORK/models (skips
# without PyTorch, bails out on any other failure).
make_test_models() {
  /usr/bin/python3 "$HERE/../http/make_models.py" "$WORK/models" >/dev/null 2>&1
  rc=$?
  [ $rc = 77 ] && skip "PyTorch not available for the test models"
  [ $rc = 0 ] || { echo "Bail out! make_models.py failed ($rc)"; exit 1; }
}

# serve NAME ARGS...: `retro serve` over $WORK/NAME with the test models and
# ARGS, stderr in $WORK/NAME.err; adds its pid to PIDS, sets PORT, and waits
# (up to 30 s) until /ready answers.
serve() {
  name=$1; shift
  "$RETRO" serve --data "$WORK/$name" --encoder "$WORK/models/encoder" --decoder "$WORK/models/decoder" \
    --reranker "$WORK/models/reranker" --port 0 --threads 1 "$@" 2>"$WORK/$name.err" &
  LAST=$!
  PIDS="$PIDS $LAST"
  PORT=
  for i in $(seq 300); do
    PORT=$(sed -n 's/.*listening on [^ ]*:\([0-9][0-9]*\).*/\1/p' "$WORK/$name.err" | head -1)
    [ -n "$PORT" ] && break
    kill -0 $LAST 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$PORT" ] || { echo "Bail out! retro serve did not start: $(cat "$WORK/$name.err")"; exit 1; }
  for i in $(seq 300); do
    curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
}
