#!/usr/bin/env bash
# The floor of spooler's Postgres drain: the store's own claim and finish functions, on the schema
# `spooler migrate` makes, driven by pgbench exactly as the plain-SQL reference drives its
# claim-100 loop (10 clients, 100 jobs per claim, claim and completion in two transactions), and
# the reference itself, alternately in the same minutes. Variants change one thing on the store's
# schema, to show what it costs. A claim that finds a row moved to `jobs_done` under it fails with
# a serialization failure, which the store runs again; pgbench runs it again too (`--max-tries`).
#
# Usage: bench/postgres-floor/run.sh SPOOLER_BIN [N] [ROUNDS] [VARIANT...]
#   N jobs queued and drained (default 20000), ROUNDS rounds (default 3).
#   Variants (default: store reference):
#   - store:            the schema as migrated;
#   - no-autovacuum:    autovacuum off on both partitions (what the vacuum of a turning-over
#                       queue costs the drain);
#   - old-lease-index:  the lease index as it was before schema version 15 (`state = 'running'`
#                       alone), with statistics taken while nothing ran: the finish's kept plan then
#                       walks every running job for each job it writes;
#   - narrow:           the wide row written by the insert only: claims take ids from a narrow
#                       `ready` table and write leases to `leases`, completions write `outcomes`
#                       (narrow.sql);
#   - sql:FILE:         FILE run by psql on the migrated schema (`:schema` names it), for an
#                       experiment of one's own;
#   - reference:        ../shared/bench/raw-sql's table and claim100.sql.
# Env: PGHOST (127.0.0.1), PGPORT (5432), PGUSER (postgres), PGDATABASE (test; the reference uses
#   bench_raw, as its own run.sh does); CLIENTS (10); DRAIN_SCRIPT (drain.sql beside this file: a
#   pgbench script of one's own for the store's variants, `:schema` naming the schema, `:claim` and
#   `:finish` the claim and finish functions).
# Prints `RESULT postgres-floor variant=V n=N jobs_per_s=… server_cpu_us_per_job=…`: the CPU time
#   of the server's processes per job drained (read from /proc, when the server runs on this host
#   and its data directory is readable; 0 otherwise), which is steadier than the rate on a noisy
#   host.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:?usage: run.sh SPOOLER_BIN [N] [ROUNDS] [VARIANT...]}
n=${2:-20000}
rounds=${3:-3}
shift $(($# < 3 ? $# : 3))
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(store reference)
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
db=${PGDATABASE:-test}
reference_dir=${REFERENCE_DIR:-$here/../../../shared/bench/raw-sql}
PATH=$PATH:$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | head -1)
schema=postgres_floor
clients=${CLIENTS:-10}
scripts=$((n / clients / 100))

tps() { grep -E '^tps' | sed -E 's/tps = ([0-9.]+).*/\1/'; }
# CPU time (clock ticks) spent by the server's processes so far, those that exited included (their
# parent, the postmaster, counts them once reaped): read from /proc, so on this host only.
postmaster=$(head -1 "$(psql -d "$db" -qAtc 'SHOW data_directory')/postmaster.pid" 2>/dev/null || true)
server_ticks() {
    [ -n "$postmaster" ] || { echo 0; return; }
    local total
    total=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$postmaster/stat")
    for pid in $(pgrep -P "$postmaster"); do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}
us_per_job() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" -v n="$n" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }'; }
jobs_per_s() { awk -v t="$1" 'BEGIN { printf "%.0f", t * 100 }'; }

store_variant() {
    local variant=$1
    psql -d "$db" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1
    "$bin" migrate --store "postgres://$PGUSER@$PGHOST:$PGPORT/$db?schema=$schema" \
        --log-format json >/dev/null 2>&1 \
        || { echo "$bin migrate failed against $PGHOST:$PGPORT/$db" >&2; exit 1; }
    local claim=claim_one finish=finish_jobs
    case $variant in
        store) ;;
        narrow)
            psql -d "$db" -q -v ON_ERROR_STOP=1 -v schema=$schema -f "$here/narrow.sql" >/dev/null
            claim=claim_narrow finish=finish_narrow ;;
        no-autovacuum)
            psql -d "$db" -qc "ALTER TABLE $schema.jobs_active SET (autovacuum_enabled = false);
                               ALTER TABLE $schema.jobs_done SET (autovacuum_enabled = false)" ;;
        old-lease-index)
            psql -d "$db" -qc "DROP INDEX $schema.jobs_running_lease;
                               CREATE INDEX jobs_running_lease ON $schema.jobs_active
                                   (lease_expires_at) WHERE state = 'running'" ;;
        sql:*) psql -d "$db" -q -v ON_ERROR_STOP=1 -v schema=$schema -f "${variant#sql:}" >/dev/null ;;
        *) echo "unknown variant $variant" >&2; exit 2 ;;
    esac
    psql -d "$db" -qc "INSERT INTO $schema.jobs (queue, kind, args, state, max_attempts, run_at,
                                                 created_at)
                       SELECT 'default', 'noop', jsonb_build_object('n', g), 'available', 25,
                              now(), now()
                         FROM generate_series(1, $((n + 2000))) g" >/dev/null
    psql -d "$db" -qc "VACUUM ANALYZE $schema.jobs_active" >/dev/null
    [ "$variant" != narrow ] || psql -d "$db" -qc "VACUUM ANALYZE $schema.ready" >/dev/null
    local t before after
    before=$(server_ticks)
    t=$(pgbench -n --max-tries=10 -c $clients -j 2 -t $scripts -D schema=$schema -D claim=$claim \
        -D finish=$finish -f "${DRAIN_SCRIPT:-$here/drain.sql}" "$db" | tps)
    after=$(server_ticks)
    local done
    if [ "$variant" = narrow ]; then
        # The wide row keeps the state it was inserted with; the narrow tables say where a job is.
        done=$(psql -d "$db" -qAtc "SELECT 'ready=' || (SELECT count(*) FROM $schema.ready)
                                        || ',leases=' || (SELECT count(*) FROM $schema.leases)
                                        || ',outcomes=' || (SELECT count(*) FROM $schema.outcomes)")
    else
        done=$(psql -d "$db" -qAtc "SELECT string_agg(state || '=' || n, ',' ORDER BY state) FROM (SELECT state, count(*) AS n FROM $schema.jobs GROUP BY state) s")
    fi
    psql -d "$db" -qc "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1
    echo "RESULT postgres-floor variant=$variant n=$n jobs_per_s=$(jobs_per_s "$t")" \
        "server_cpu_us_per_job=$(us_per_job $((after - before))) states=$done"
}

reference() {
    local ref_db=bench_raw
    psql -d postgres -qAtc "SELECT 1 FROM pg_database WHERE datname = '$ref_db'" | grep -q 1 \
        || psql -d postgres -qc "CREATE DATABASE $ref_db"
    psql -d "$ref_db" -q -f "$reference_dir/schema.sql" >/dev/null 2>&1
    psql -d "$ref_db" -qc "INSERT INTO jobs (payload)
                           SELECT jsonb_build_object('n', g) FROM generate_series(1, $((n + 2000))) g" >/dev/null
    psql -d "$ref_db" -qc 'VACUUM ANALYZE jobs' >/dev/null
    local t before after
    before=$(server_ticks)
    t=$(pgbench -n -c $clients -j 2 -t $scripts -f "$reference_dir/claim100.sql" "$ref_db" | tps)
    after=$(server_ticks)
    echo "RESULT postgres-floor variant=reference n=$n jobs_per_s=$(jobs_per_s "$t")" \
        "server_cpu_us_per_job=$(us_per_job $((after - before)))"
}

for round in $(seq 1 "$rounds"); do
    # Swap the order every round, so a drift of the host favours no variant.
    order=("${variants[@]}")
    if [ $((round % 2)) -eq 0 ]; then
        order=()
        for ((i = ${#variants[@]} - 1; i >= 0; i--)); do order+=("${variants[i]}"); done
    fi
    for variant in "${order[@]}"; do
        if [ "$variant" = reference ]; then reference; else store_variant "$variant"; fi
    done
done
