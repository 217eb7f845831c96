# bench_lib.sh - sourced by the HTTP benches (run.sh, tls.sh): their small
# corpus, the query vector they search by, wrk scripts of POST bodies, and
# the CPU time of processes.

# bench_ingest URL N WORK: N short documents of random words (seed 1, so
# every bench and run searches the same corpus) into the server at URL,
# through WORK/docs.ndjson.
bench_ingest() {
  /usr/bin/python3 - "$2" > "$3/docs.ndjson" <<'PY'
import json, random, sys
r = random.Random(1)
words = "alpha beta gamma delta retrieval chunk vector index search query model token server".split()
for i in range(int(sys.argv[1])):
    print(json.dumps({"id": "d%d" % i, "text": " ".join(r.choice(words) for _ in range(60))}))
PY
  curl -fsS -XPOST "$1/v1/documents?wait=true" -H 'Content-Type: application/x-ndjson' \
    --data-binary @"$3/docs.ndjson" -o /dev/null
}

# bench_vector URL: the server's embedding of "alpha beta gamma", as JSON.
bench_vector() {
  curl -fsS -XPOST "$1/v1/embeddings" -H 'Content-Type: application/json' \
    -d '{"input":"alpha beta gamma"}' | /usr/bin/python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["data"][0]["embedding"]))'
}

# mklua BODY: a wrk script that POSTs BODY as JSON.
mklua() {
  /usr/bin/python3 -c 'import json,sys; b=sys.argv[1]; print("wrk.method=\"POST\"\nwrk.body=%s\nwrk.headers[\"Content-Type\"]=\"application/json\"" % json.dumps(b))' "$1"
}

# ticks PID...: the summed user + system CPU ticks of the processes (all
# their threads).
ticks() {
  for p in "$@"; do awk '{print $14 + $15}' /proc/$p/stat; done | awk '{s += $1} END {print s + 0}'
}
