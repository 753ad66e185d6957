#!/usr/bin/env bash
# API fuzzing: schemathesis against the real binary (`spooler serve --no-worker` on a temporary
# SQLite file), every check, positive and negative data, the stateful phase over the document's
# links, once without a token and once with one (the two runs side by side). Fails on any 5xx,
# on any response the document does not allow, and when fewer than SPOOLER_FUZZ_MIN_CASES cases
# ran in a mode.
#
#   tests/fuzz/schemathesis.sh                            # what CI runs
#   SPOOLER_FUZZ_SEED=N tests/fuzz/schemathesis.sh        # replay a run (its log names the seed)
#   SPOOLER_FUZZ_EXAMPLES=50 SPOOLER_FUZZ_MIN_CASES=0 tests/fuzz/schemathesis.sh   # a quick look
set -euo pipefail
cd "$(dirname "$0")/../.."

version=4.32.5
root="$(pwd)"
venv="${SPOOLER_FUZZ_VENV:-$root/target/fuzz-venv}"
examples="${SPOOLER_FUZZ_EXAMPLES:-450}"    # cases per operation in the fuzzing phase
min_cases="${SPOOLER_FUZZ_MIN_CASES:-5000}" # cases each token mode must have run
seed="${SPOOLER_FUZZ_SEED:-$RANDOM}"

# CPython 3.11.7's ast.parse fails inside hypothesis ("AST constructor recursion depth mismatch"):
# take the newest Python 3.12+ that pyenv has, else python3.
python=python3
if command -v pyenv >/dev/null 2>&1; then
  newest="$(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9])\.[0-9]+$' | sort -V | tail -n 1 || true)"
  if [ -n "$newest" ]; then
    python="$(pyenv prefix "$newest")/bin/python3"
  fi
fi
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "version $version"; then
  echo "fuzz: installing schemathesis $version into $venv (with $("$python" --version))" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$version"
fi

cargo build --quiet -p spooler-cli
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/debug/spooler"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A server for one phase of one token mode, on a store of its own: sets `server` and `base`.
start_server() {
  local mode="$1" dir="$2"
  mkdir -p "$dir"
  local port
  port="$(free_port)"
  base="http://127.0.0.1:$port"
  local args=(serve --no-worker --store "sqlite://$dir/jobs.db" --listen "127.0.0.1:$port" --log-format json --max-wait 200ms)
  if [ "$mode" = token ]; then
    args+=(--token fuzz-token)
  fi
  env -u SPOOLER_TOKEN -u SPOOLER_CONFIG -u SPOOLER_STORE -u SPOOLER_LISTEN "$bin" "${args[@]}" 2>"$dir/serve.log" &
  server=$!
  for _ in $(seq 1 300); do
    if curl -fsS "$base/healthz" >/dev/null 2>&1; then return 0; fi
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  echo "fuzz ($mode): the server did not start; its log:" >&2
  cat "$dir/serve.log" >&2
  return 1
}

# One token mode: each phase against a fresh server, stopped after. Exit status 0 when clean.
fuzz_mode() {
  local mode="$1" dir="$work/$1"
  mkdir -p "$dir"
  local auth=()
  if [ "$mode" = token ]; then
    auth=(-H "Authorization: Bearer fuzz-token")
  fi
  echo "fuzz ($mode): $examples examples per operation, seed $seed" >&2
  local status=0 total=0 phases workers out code cases server base exclude
  # The stateful phase runs apart, on a fresh store, one worker, and without the bulk endpoint:
  # a bulk delete runs on in the background (an operation), and would remove the job a later
  # sequence was just handed (a duplicate unique_key answers with the existing job), which reads
  # as "created resource not found". Bulk requests are fuzzed in the other phases.
  for phases in examples,coverage,fuzzing stateful; do
    workers=2
    exclude=()
    if [ "$phases" = stateful ]; then
      workers=1
      exclude=(--exclude-path /v1/jobs/bulk)
    fi
    start_server "$mode" "$dir/$phases" || return 1
    # Without a token the server asks for none: test it against the document less its security.
    local location="$base/openapi.json" url_args=()
    if [ "$mode" = open ]; then
      curl -fsS "$base/openapi.json" | python3 -c '
import json, sys
doc = json.load(sys.stdin)
doc.pop("security", None)
for item in doc["paths"].values():
    for op in item.values():
        if isinstance(op, dict):
            op.pop("security", None)
json.dump(doc, sys.stdout)' >"$dir/$phases/openapi.json"
      location="$dir/$phases/openapi.json"
      url_args=(--url "$base")
    fi
    out="$dir/schemathesis-$phases.txt"
    set +e
    # From the phase's directory, where schemathesis leaves its cache.
    (cd "$dir/$phases" && "$venv/bin/schemathesis" --config-file "$root/tests/fuzz/schemathesis.toml" run "$location" "${url_args[@]}" \
      --checks all --mode all --phases "$phases" --generation-allow-x00 false \
      --max-examples "$examples" --seed "$seed" --workers "$workers" --no-shrink \
      --request-timeout 10 --generation-database none "${exclude[@]}" \
      --no-color "${auth[@]}") >"$out" 2>&1
    code=$?
    set -e
    if grep -q panicked "$dir/$phases/serve.log"; then
      echo "fuzz ($mode, $phases): the server panicked:" >&2
      grep panicked "$dir/$phases/serve.log" >&2
      status=1
    fi
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    cases="$(grep -A1 '^Test cases:' "$out" | tail -n 1 | grep -oE '[0-9]+' | head -n 1 || true)"
    total=$((total + ${cases:-0}))
    echo "fuzz ($mode, $phases): ${cases:-0} cases, exit $code" >&2
    if [ "$code" -ne 0 ]; then
      echo "fuzz ($mode, $phases): schemathesis found failures; its output:" >&2
      cat "$out" >&2
      status=1
    fi
  done
  echo "fuzz ($mode): $total cases" >&2
  if [ "$total" -lt "$min_cases" ]; then
    echo "fuzz ($mode): only $total cases ran, fewer than $min_cases" >&2
    status=1
  fi
  return "$status"
}

fuzz_mode open >"$work/open.out" 2>&1 &
open_pid=$!
fuzz_mode token >"$work/token.out" 2>&1 &
token_pid=$!
status=0
wait "$open_pid" || status=1
wait "$token_pid" || status=1
cat "$work/open.out" "$work/token.out"
if [ "$status" -eq 0 ]; then
  echo "fuzz: no failures (seed $seed)"
else
  echo "fuzz: failures (seed $seed; SPOOLER_FUZZ_SEED=$seed replays)" >&2
fi
exit "$status"
