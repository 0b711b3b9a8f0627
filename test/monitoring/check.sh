#!/usr/bin/env bash
# Checks monitoring/ against a running server: the alert rules (promtool
# check and unit tests), the Grafana dashboard, bridgecore.metrics() with
# real traffic from an Odoo stand-in (promtool check metrics), the
# postgres_exporter queries file through prometheus-postgres-exporter as a
# role granted bridgecore_monitor, and the scrape configuration of
# monitoring/README.md in a real Prometheus with the alert rules loaded.
#
# Needs the libpq environment (PGHOST, PGPORT, PGUSER, PGDATABASE) of a
# superuser on a cluster with shared_preload_libraries = 'bridgecore' and
# bridgecore.database = PGDATABASE; PGHOST must be the socket directory. The
# extension is created if absent (and then dropped at the end). Needs
# promtool, prometheus, prometheus-postgres-exporter, python3, curl.
#
# Prints TAP; exits non-zero when a check fails. Everything it starts or
# creates is removed at the end, also after a failure or an interruption.
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
RULES=monitoring/prometheus/alerts.yml
DASHBOARD=monitoring/grafana/bridgecore.json
QUERIES=monitoring/postgres_exporter/queries.yaml

INSTANCE=monitoring_check       # BridgeCore instance created here, polling a stand-in
IDLE=monitoring_check_idle      # and a disabled one, never polled
ROLE=bridgecore_exporter_test   # login role granted bridgecore_monitor
SECRET=monitoring-check-key     # the stand-in's password

PSQL=(psql -X -A -t -q -v ON_ERROR_STOP=1)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/bridgecore-monitoring.XXXXXX")

# ---- TAP ---------------------------------------------------------------------

n=0
failures=0
diag() { sed 's/^/#   /'; }
pass() { n=$((n + 1)); echo "ok $n - $1"; }
fail() {  # fail <name> [diagnostic text]
    n=$((n + 1)); failures=$((failures + 1))
    echo "not ok $n - $1"
    [ $# -gt 1 ] && printf '%s\n' "$2" | diag
    return 0
}
check() {  # check <name> <command...>: passes when the command succeeds
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$out"; fi
}

# wait_until <seconds> <command...>: polls the command until it succeeds;
# fails after the deadline.
wait_until() {
    local deadline=$(($(date +%s%N) / 1000000 + $1 * 1000))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $(($(date +%s%N) / 1000000)) -ge "$deadline" ] && return 1
        sleep 0.1
    done
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

sql() { "${PSQL[@]}" -c "$1"; }

# ---- cleanup -------------------------------------------------------------------

created_extension=0
created_role=0
backoff_changed=0
backoff_before=
pids=()

cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    if [ "$created_extension" = 1 ]; then
        sql "DROP EXTENSION IF EXISTS bridgecore CASCADE" >/dev/null 2>&1
    elif sql "SELECT 1 FROM pg_extension WHERE extname = 'bridgecore'" 2>/dev/null | grep -q 1; then
        sql "SELECT bridgecore.remove_instance(name) FROM bridgecore.instance
              WHERE name IN ('$INSTANCE', '$IDLE')" >/dev/null 2>&1
    fi
    [ "$created_role" = 1 ] && sql "DROP ROLE IF EXISTS $ROLE" >/dev/null 2>&1
    if [ "$backoff_changed" = 1 ]; then
        if [ -n "$backoff_before" ]; then
            sql "ALTER SYSTEM SET bridgecore.max_backoff = '$backoff_before'" >/dev/null 2>&1
        else
            sql "ALTER SYSTEM RESET bridgecore.max_backoff" >/dev/null 2>&1
        fi
        sql "SELECT pg_reload_conf()" >/dev/null 2>&1
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() {  # start <log> <command...>: runs it in the background, remembered for cleanup
    local log=$1
    shift
    "$@" >"$log" 2>&1 &
    pids+=($!)
}

# ---- exposition format helpers -------------------------------------------------

# sample <file> <test> <metric> [label=value...] [-- <test> <metric> ...]:
# succeeds when, for each spec, a sample of the metric with these labels
# passes the test (gt0, ge0, ge1, eq0, eq1); prints the samples otherwise.
sample() {
    python3 - "$@" <<'EOF'
import re, sys
path, args = sys.argv[1], sys.argv[2:]
tests = {"gt0": lambda v: v > 0, "ge0": lambda v: v >= 0, "ge1": lambda v: v >= 1,
         "eq0": lambda v: v == 0, "eq1": lambda v: v == 1}
lines = open(path).read().splitlines()
specs = [[]]
for a in args:
    if a == "--":
        specs.append([])
    else:
        specs[-1].append(a)
failed = False
for test, name, *want in specs:
    want = dict(w.split("=", 1) for w in want)
    found = []
    for line in lines:
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
        if not m or m.group(1) != name:
            continue
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(labels.get(k) == v for k, v in want.items()):
            found.append((line, float(m.group(3))))
    if not any(tests[test](v) for _, v in found):
        failed = True
        print("no sample of %s %s passes %s; matching samples:" % (name, want, test))
        print("\n".join(l for l, _ in found) or "(none)")
sys.exit(1 if failed else 0)
EOF
}

# ---- (a) alert rules -----------------------------------------------------------

check "alerts: promtool check rules $RULES" promtool check rules "$RULES"

# Unit tests of the rules: instance "bad" trips every alert, "good" none,
# "quiet" (disabled, old events) not the lag alert.
cat >"$TMP/rules_test.yml" <<EOF
rule_files: ['$ROOT/$RULES']
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'bridgecore_polls_total{instance="bad"}'
        values: '0+100x60'
      - series: 'webhook_errors_total{instance="bad",kind="http"}'
        values: '0+8x60'
      - series: 'webhook_errors_total{instance="bad",kind="transport"}'
        values: '0+2x60'
      - series: 'webhook_processing_seconds_bucket{instance="bad",model="sale.order",le="0.5"}'
        values: '0+1x60'
      - series: 'webhook_processing_seconds_bucket{instance="bad",model="sale.order",le="1"}'
        values: '0+2x60'
      - series: 'webhook_processing_seconds_bucket{instance="bad",model="sale.order",le="2.5"}'
        values: '0+40x60'
      - series: 'webhook_processing_seconds_bucket{instance="bad",model="sale.order",le="+Inf"}'
        values: '0+40x60'
      - series: 'webhook_queue_size{instance="bad"}'
        values: '1500x60'
      - series: 'bridgecore_instance_state{instance="bad",state="auth_failed"}'
        values: '1x60'
      - series: 'bridgecore_instance_state{instance="bad",state="disabled"}'
        values: '0x60'
      - series: 'bridgecore_lag_seconds{instance="bad"}'
        values: '1000+60x60'
      - series: 'bridgecore_dead_letters_total{instance="bad"}'
        values: '0x30 1+0x30'
      - series: 'bridgecore_dead_letters_pending{instance="bad"}'
        values: '0x30 1+0x30'

      - series: 'bridgecore_polls_total{instance="good"}'
        values: '0+100x60'
      - series: 'webhook_errors_total{instance="good",kind="http"}'
        values: '0+1x60'
      - series: 'webhook_processing_seconds_bucket{instance="good",model="sale.order",le="0.5"}'
        values: '0+40x60'
      - series: 'webhook_processing_seconds_bucket{instance="good",model="sale.order",le="1"}'
        values: '0+40x60'
      - series: 'webhook_processing_seconds_bucket{instance="good",model="sale.order",le="+Inf"}'
        values: '0+40x60'
      - series: 'webhook_queue_size{instance="good"}'
        values: '3x60'
      - series: 'bridgecore_instance_state{instance="good",state="ok"}'
        values: '1x60'
      - series: 'bridgecore_instance_state{instance="good",state="auth_failed"}'
        values: '0x60'
      - series: 'bridgecore_lag_seconds{instance="good"}'
        values: '5x60'
      - series: 'bridgecore_dead_letters_total{instance="good"}'
        values: '4x60'
      - series: 'bridgecore_dead_letters_pending{instance="good"}'
        values: '4x30 0x30'

      - series: 'bridgecore_instance_state{instance="quiet",state="disabled"}'
        values: '1x60'
      - series: 'bridgecore_lag_seconds{instance="quiet"}'
        values: '100000+60x60'
    promql_expr_test:
      - expr: ALERTS{alertstate="firing"}
        eval_time: 1m
        exp_samples: []
      - expr: ALERTS{alertstate="firing"}
        eval_time: 40m
        exp_samples:
          - labels: 'ALERTS{alertname="BridgeCoreErrorRate",alertstate="firing",instance="bad",severity="warning"}'
            value: 1
          - labels: 'ALERTS{alertname="BridgeCoreSlowProcessing",alertstate="firing",instance="bad",severity="warning"}'
            value: 1
          - labels: 'ALERTS{alertname="BridgeCoreBacklog",alertstate="firing",instance="bad",severity="warning"}'
            value: 1
          - labels: 'ALERTS{alertname="BridgeCoreAuthFailed",alertstate="firing",instance="bad",severity="critical"}'
            value: 1
          - labels: 'ALERTS{alertname="BridgeCoreLag",alertstate="firing",instance="bad",severity="warning"}'
            value: 1
          - labels: 'ALERTS{alertname="BridgeCoreDeadLettersGrowing",alertstate="firing",instance="bad",severity="warning"}'
            value: 1
  - interval: 1m
    input_series:
      - series: 'up{job="bridgecore"}'
        values: '1x30'
    promql_expr_test:
      - expr: ALERTS{alertstate="firing"}
        eval_time: 20m
        exp_samples:
          - labels: 'ALERTS{alertname="BridgeCoreMetricsMissing",alertstate="firing",severity="warning"}'
            value: 1
EOF
check "alerts: unit tests (promtool test rules): each alert fires when it should, and only then" \
    promtool test rules "$TMP/rules_test.yml"

check "alerts: every alert has a severity label and summary, description and runbook annotations" \
    python3 - "$RULES" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
blocks = re.split(r"\n\s*- alert: ", text)[1:]
problems = []
for b in blocks:
    name = b.split("\n", 1)[0].strip()
    for key in ("severity:", "summary:", "description:", "runbook:"):
        if key not in b:
            problems.append("%s: no %s" % (name, key[:-1]))
    m = re.search(r'runbook: "docs/operations\.md#([a-z0-9-]+)"', b)
    if not m or m.group(1) != "alert-" + name.lower():
        problems.append("%s: runbook should be docs/operations.md#alert-%s" % (name, name.lower()))
    sev = re.search(r"severity: (\S+)", b)
    if sev and sev.group(1) not in ("warning", "critical"):
        problems.append("%s: severity %s" % (name, sev.group(1)))
if len(blocks) < 6:
    problems.append("only %d alerts" % len(blocks))
print("\n".join(problems))
sys.exit(1 if problems else 0)
EOF

# ---- (b) dashboard -------------------------------------------------------------

check "dashboard: valid JSON with the expected variables and panels" \
    python3 - "$DASHBOARD" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
problems = []
if not 36 <= d.get("schemaVersion", 0) <= 39:
    problems.append("schemaVersion %r" % d.get("schemaVersion"))
variables = {v["name"]: v for v in d["templating"]["list"]}
ds = variables.get("DS_PROMETHEUS")
if not ds or ds["type"] != "datasource" or ds["query"] != "prometheus":
    problems.append("no datasource variable DS_PROMETHEUS")
inst = variables.get("instance")
if not inst or "label_values(bridgecore_cursor, instance)" not in json.dumps(inst.get("query")):
    problems.append("no variable instance from label_values(bridgecore_cursor, instance)")
panels = d["panels"]
ids = [p["id"] for p in panels]
if len(ids) != len(set(ids)):
    problems.append("panel ids repeat: %s" % ids)
cells = {}
for p in panels:
    g = p["gridPos"]
    if g["x"] + g["w"] > 24:
        problems.append("panel %r is wider than the grid" % p["title"])
    for x in range(g["x"], g["x"] + g["w"]):
        for y in range(g["y"], g["y"] + g["h"]):
            if (x, y) in cells:
                problems.append("panels %r and %r overlap" % (cells[(x, y)], p["title"]))
            cells[(x, y)] = p["title"]
    for t in p.get("targets", []):
        if p["datasource"]["uid"] != "${DS_PROMETHEUS}" or t["datasource"]["uid"] != "${DS_PROMETHEUS}":
            problems.append("panel %r does not use ${DS_PROMETHEUS}" % p["title"])
        if 'instance=~"$instance"' not in t["expr"]:
            problems.append("panel %r, query %s ignores $instance" % (p["title"], t["refId"]))
exprs = {p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in panels}
def has(what, *needles):
    if not any(all(n in e for n in needles) for e in exprs.values()):
        problems.append("no panel for %s (a query with %s)" % (what, ", ".join(needles)))
has("events/s", "rate(webhook_received_total")
has("sync pulls/s", "rate(sync_pull_requests_total")
has("errors by kind", "rate(webhook_errors_total", "kind")
for q in ("0.5", "0.95", "0.99"):
    has("processing p%s by model" % q, "histogram_quantile(%s," % q, "webhook_processing_seconds_bucket", "model")
has("lag", "bridgecore_lag_seconds")
has("queue size", "webhook_queue_size")
has("dead letters pending", "bridgecore_dead_letters_pending")
has("devices active", "bridgecore_devices_active")
has("bytes received/s", "rate(bridgecore_bytes_received_total")
has("notifications/s", "rate(bridgecore_notifications_total")
if not any(p["type"] == "table" and "bridgecore_instance_state" in exprs[p["title"]] for p in panels):
    problems.append("no instance state table")
print("\n".join(problems))
sys.exit(1 if problems else 0)
EOF

# ---- (c) bridgecore.metrics() with traffic ------------------------------------

if ! sql "SELECT 1" >/dev/null 2>"$TMP/err"; then
    fail "connect to the server (PGHOST, PGPORT, PGUSER, PGDATABASE)" "$(cat "$TMP/err")"
    echo "1..$n"
    exit 1
fi
if [ "$(sql "SELECT current_setting('bridgecore.database', true) = current_database()")" != t ]; then
    fail "bridgecore is preloaded and bridgecore.database is $(sql 'SELECT current_database()')" \
        "bridgecore.database: $(sql "SELECT current_setting('bridgecore.database', true)")"
    echo "1..$n"
    exit 1
fi
if [ -z "$(sql "SELECT 1 FROM pg_extension WHERE extname = 'bridgecore'")" ]; then
    if sql "CREATE EXTENSION bridgecore" 2>"$TMP/err"; then
        created_extension=1
        pass "CREATE EXTENSION bridgecore"
    else
        fail "CREATE EXTENSION bridgecore" "$(cat "$TMP/err")"
    fi
else
    sql "SELECT bridgecore.remove_instance(name) FROM bridgecore.instance
          WHERE name IN ('$INSTANCE', '$IDLE')" >/dev/null
fi

# Failed polls are retried after bridgecore.max_backoff at most.
backoff_before=$(sql "SELECT setting FROM pg_file_settings WHERE name = 'bridgecore.max_backoff'
                        AND sourcefile LIKE '%postgresql.auto.conf' AND applied")
backoff_changed=1
sql "ALTER SYSTEM SET bridgecore.max_backoff = '1s'" && sql "SELECT pg_reload_conf()" >/dev/null

STANDIN_PORT=$(free_port)
STANDIN=http://127.0.0.1:$STANDIN_PORT
start "$TMP/standin.log" python3 test/odoo_standin.py --port "$STANDIN_PORT" --password "$SECRET"
control() { curl -fsS -H 'Content-Type: application/json' -d "$1" "$STANDIN/control"; }
if ! wait_until 15 control '{"op": "stats"}'; then
    fail "the Odoo stand-in answers" "$(cat "$TMP/standin.log")"
    echo "1..$n"
    exit 1
fi

stored() { sql "SELECT count(*) FROM bridgecore.event e JOIN bridgecore.instance i ON i.id = e.instance_id
                 WHERE i.name = '$INSTANCE'"; }
stored_is() { [ "$(stored)" = "$1" ]; }
instance_status() {
    sql "SELECT state, cursor, last_error FROM bridgecore.instances WHERE name = '$INSTANCE'"
}

control '{"op": "add_events", "count": 5, "model": "sale.order"}' >/dev/null
control '{"op": "add_events", "count": 3, "model": "res.partner"}' >/dev/null
sql "SELECT name FROM bridgecore.add_instance('$INSTANCE', '$STANDIN', 'odoo', 'bridgecore', '$SECRET',
                                              poll_interval => '100 milliseconds')" >/dev/null
sql "SELECT name FROM bridgecore.add_instance('$IDLE', '$STANDIN', 'odoo', 'bridgecore', '$SECRET',
                                              enabled => false)" >/dev/null
if wait_until 30 stored_is 8; then
    pass "metrics: the worker stores the stand-in's 8 events"
else
    fail "metrics: the worker stores the stand-in's 8 events" \
        "stored: $(stored); instance: $(instance_status)"
fi

# Two HTTP 500 answers to search_read (the session is established by now),
# two more events and a record without a model (a dead letter).
control '{"op": "fault", "kind": "http500", "count": 2}' >/dev/null
control '{"op": "add_events", "count": 2, "model": "sale.order"}' >/dev/null
control '{"op": "add_raw", "row": {"record_id": 7, "event": "create", "timestamp": "2025-01-01 00:00:00"}}' >/dev/null
http_errors() {
    [ "$(sql "SELECT count FROM bridgecore.stats_errors WHERE instance = '$INSTANCE' AND kind = 'http'")" -ge 1 ] 2>/dev/null
}
dead_letters() {
    sql "SELECT count(*) FROM bridgecore.dead_letters WHERE instance = '$INSTANCE' AND status = 'pending'"
}
caught_up() { http_errors && stored_is 10 && [ "$(dead_letters)" -ge 1 ]; }
if wait_until 30 caught_up; then
    pass "metrics: after two HTTP 500 answers the worker recovers: 10 events, 1 dead letter"
else
    fail "metrics: after two HTTP 500 answers the worker recovers: 10 events, 1 dead letter" \
        "stored: $(stored); dead letters: $(dead_letters); instance: $(instance_status)
$(sql "SELECT * FROM bridgecore.stats_errors WHERE instance = '$INSTANCE'" 2>&1)"
fi

check "metrics: a device pulls the events (sync_pull)" sql "
    DO \$\$ BEGIN
        IF (bridgecore.sync_pull(1, 'monitoring-check', 'sales_app', instance => '$INSTANCE')
            ->> 'new_events_count')::int < 1 THEN
            RAISE EXCEPTION 'sync_pull delivered no event';
        END IF;
    END \$\$"

METRICS=$TMP/metrics.prom
if sql "SELECT bridgecore.metrics()" >"$METRICS" 2>"$TMP/err"; then
    pass "metrics: SELECT bridgecore.metrics()"
else
    fail "metrics: SELECT bridgecore.metrics()" "$(cat "$TMP/err")"
fi
check "metrics: promtool check metrics accepts the exposition" sh -c "promtool check metrics <'$METRICS'"
check "metrics: webhook_received_total{instance=\"$INSTANCE\"} > 0" \
    sample "$METRICS" gt0 webhook_received_total instance=$INSTANCE
check "metrics: sync_pull_requests_total > 0" \
    sample "$METRICS" gt0 sync_pull_requests_total instance=$INSTANCE
check "metrics: webhook_errors_total{kind=\"http\"} > 0" \
    sample "$METRICS" gt0 webhook_errors_total instance=$INSTANCE kind=http
check "metrics: webhook_processing_seconds_bucket with a model label > 0" \
    sample "$METRICS" gt0 webhook_processing_seconds_bucket instance=$INSTANCE model=sale.order le=+Inf
check "metrics: bridgecore_polls_total, bridgecore_cursor, bridgecore_bytes_received_total > 0" \
    sample "$METRICS" gt0 bridgecore_polls_total instance=$INSTANCE \
                   -- gt0 bridgecore_cursor instance=$INSTANCE \
                   -- gt0 bridgecore_bytes_received_total instance=$INSTANCE
check "metrics: bridgecore_dead_letters_pending, webhook_queue_size, bridgecore_devices_active >= 1" \
    sample "$METRICS" ge1 bridgecore_dead_letters_pending instance=$INSTANCE \
                   -- ge1 webhook_queue_size instance=$INSTANCE \
                   -- ge1 bridgecore_devices_active instance=$INSTANCE
check "metrics: the disabled instance is listed, state disabled" \
    sample "$METRICS" eq1 bridgecore_instance_state instance=$IDLE state=disabled
check "metrics: bridgecore_instance_state is 1 for exactly one state" python3 - "$METRICS" "$INSTANCE" <<'EOF'
import re, sys
values = [float(m.group(1)) for m in re.finditer(
    r'^bridgecore_instance_state\{instance="%s",state="[a-z_]+"\} (\S+)$' % re.escape(sys.argv[2]),
    open(sys.argv[1]).read(), re.M)]
print(values)
sys.exit(0 if len(values) == 4 and sorted(values) == [0, 0, 0, 1] else 1)
EOF

# Every metric the rules and the dashboard use is one bridgecore.metrics() has.
check "metrics: the alert rules and the dashboard use only metrics that exist" \
    python3 - "$METRICS" "$RULES" "$DASHBOARD" <<'EOF'
import json, re, sys
metrics, rules, dashboard = sys.argv[1:]
names = set()
for m in re.finditer(r"^# TYPE (\S+) (\S+)$", open(metrics).read(), re.M):
    names.add(m.group(1))
    if m.group(2) == "histogram":
        names.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
exprs = re.findall(r"^\s+expr: (?:\|\n)?((?:.*\n)*?)(?=\s+(?:for|labels):)", open(rules).read(), re.M)
d = json.load(open(dashboard))
exprs += [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
exprs += [json.dumps(v.get("query")) for v in d["templating"]["list"]]
used = {n for e in exprs for n in re.findall(r"\b((?:webhook|sync_pull|bridgecore)_[a-z_]+)\b", e)}
unknown = sorted(used - names)
print("used: %s\nunknown: %s" % (sorted(used), unknown))
sys.exit(1 if unknown or len(used) < 10 else 0)
EOF

# ---- (d) postgres_exporter with the queries file -------------------------------

sql "DROP ROLE IF EXISTS $ROLE" >/dev/null 2>&1
if sql "CREATE ROLE $ROLE LOGIN IN ROLE bridgecore_monitor" 2>"$TMP/err"; then
    created_role=1
    pass "exporter: CREATE ROLE $ROLE LOGIN IN ROLE bridgecore_monitor"
else
    fail "exporter: CREATE ROLE $ROLE LOGIN IN ROLE bridgecore_monitor" "$(cat "$TMP/err")"
fi
as_monitor() { "${PSQL[@]}" -U "$ROLE" -c "$1"; }
refused() {  # refused <sql>: fails unless the monitoring role gets "permission denied"
    local out
    if out=$(as_monitor "$1" 2>&1); then
        echo "allowed, returned: $out"
        return 1
    fi
    echo "$out"
    [[ $out == *"permission denied"* ]]
}
check "privileges: $ROLE may call bridgecore.metrics()" as_monitor "SELECT length(bridgecore.metrics())"
for view in stats stats_errors stats_models; do
    check "privileges: $ROLE may read bridgecore.$view" as_monitor "SELECT count(*) FROM bridgecore.$view"
done
check "privileges: $ROLE may not read instance secrets" refused "SELECT secret FROM bridgecore.instance"
check "privileges: $ROLE may not call bridgecore.ingest()" refused "SELECT bridgecore.ingest('$INSTANCE', '[]')"
check "privileges: $ROLE may not reset the statistics" refused "SELECT bridgecore.stats_reset()"
check "privileges: $ROLE may not read events" refused "SELECT count(*) FROM bridgecore.event"

EXPORTER_PORT=$(free_port)
EXPORTER=http://127.0.0.1:$EXPORTER_PORT/metrics
DATA_SOURCE_NAME="host=$PGHOST port=$PGPORT user=$ROLE dbname=$PGDATABASE sslmode=disable" \
    start "$TMP/exporter.log" prometheus-postgres-exporter \
        --no-collector.database --no-collector.bgwriter \
        --disable-default-metrics --disable-settings-metrics \
        --extend.query-path="$QUERIES" \
        --web.listen-address="127.0.0.1:$EXPORTER_PORT"
EXPORTED=$TMP/exporter.prom
scraped() { curl -fsS "$EXPORTER" >"$EXPORTED" && grep -q '^pg_up 1$' "$EXPORTED"; }
if wait_until 20 scraped; then
    pass "exporter: prometheus-postgres-exporter serves /metrics, pg_up 1"
else
    fail "exporter: prometheus-postgres-exporter serves /metrics, pg_up 1" \
        "$(grep '^pg_' "$EXPORTED" 2>/dev/null; cat "$TMP/exporter.log")"
fi
check "exporter: the queries file loads (pg_exporter_user_queries_load_error 0)" \
    sample "$EXPORTED" eq0 pg_exporter_user_queries_load_error
if sample "$EXPORTED" eq0 pg_exporter_last_scrape_error >/dev/null; then
    pass "exporter: every query of the queries file runs (pg_exporter_last_scrape_error 0)"
else
    fail "exporter: every query of the queries file runs (pg_exporter_last_scrape_error 0)" \
        "$(grep -i 'error' "$TMP/exporter.log" | sed 's/^.*err=//' | sort -u)"
fi
check "exporter: webhook_received_total{instance=\"$INSTANCE\"} > 0" \
    sample "$EXPORTED" gt0 webhook_received_total instance=$INSTANCE
check "exporter: sync_pull_requests_total > 0" \
    sample "$EXPORTED" gt0 sync_pull_requests_total instance=$INSTANCE
check "exporter: webhook_errors_total{kind=\"http\"} > 0" \
    sample "$EXPORTED" gt0 webhook_errors_total instance=$INSTANCE kind=http
check "exporter: webhook_processing_seconds_bucket{model=\"sale.order\"} > 0" \
    sample "$EXPORTED" gt0 webhook_processing_seconds_bucket instance=$INSTANCE model=sale.order le=+Inf
check "exporter: bridgecore_cursor and bridgecore_polls_total > 0, bridgecore_lag_seconds >= 0" \
    sample "$EXPORTED" gt0 bridgecore_cursor instance=$INSTANCE \
                    -- gt0 bridgecore_polls_total instance=$INSTANCE \
                    -- ge0 bridgecore_lag_seconds instance=$INSTANCE
check "exporter: bridgecore_dead_letters_pending, webhook_queue_size, bridgecore_devices_active >= 1" \
    sample "$EXPORTED" ge1 bridgecore_dead_letters_pending instance=$INSTANCE \
                    -- ge1 webhook_queue_size instance=$INSTANCE \
                    -- ge1 bridgecore_devices_active instance=$INSTANCE
check "exporter: bridgecore_instance_status has the current state at 1" \
    sample "$EXPORTED" eq1 bridgecore_instance_status instance=$INSTANCE
check "exporter: the disabled instance without statistics or events is listed, state disabled" \
    sample "$EXPORTED" eq1 bridgecore_instance_status instance=$IDLE state=disabled \
                    -- eq0 bridgecore_cursor instance=$IDLE
check "exporter: promtool check metrics accepts the BridgeCore families" sh -c "
    grep -vE '^(# (HELP|TYPE) )?(go|process|promhttp|pg|postgres_exporter)_' '$EXPORTED' | promtool check metrics"
# The same families, types and labels as bridgecore.metrics() (the state
# under its exporter name).
check "exporter: every family of bridgecore.metrics() is exported, same type and labels" \
    python3 - "$METRICS" "$EXPORTED" <<'EOF'
import re, sys
def read(path, rename={}):
    types, labels = {}, {}
    for line in open(path):
        m = re.match(r"^# TYPE (\S+) (\S+)$", line)
        if m:
            types[rename.get(m.group(1), m.group(1))] = m.group(2)
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} ', line)
        if m:
            name = re.sub(r"_(bucket|sum|count)$", "", m.group(1)) if m.group(1) not in types else m.group(1)
            name = rename.get(name, name)
            labels.setdefault(name, set()).update(
                k for k in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(2)) if k not in ("server", "le"))
    return types, labels
t1, l1 = read(sys.argv[1])
t2, l2 = read(sys.argv[2], {"bridgecore_instance_status": "bridgecore_instance_state"})
problems = ["%s: %s in metrics(), %s from the exporter" % (n, t, t2.get(n)) for n, t in t1.items() if t2.get(n) != t]
problems += ["%s: labels %s in metrics(), %s from the exporter" % (n, sorted(l), sorted(l2.get(n, ())))
             for n, l in l1.items() if l2.get(n) != l]
print("\n".join(problems))
sys.exit(1 if problems else 0)
EOF

# No event arrived since bridgecore.metrics() was read: the processing
# histogram must be the same, bucket by bucket.
check "exporter: webhook_processing_seconds has the buckets, sum and count of bridgecore.metrics()" \
    python3 - "$METRICS" "$EXPORTED" "$INSTANCE" <<'EOF'
import re, sys
def read(path):
    out = {}
    for m in re.finditer(r'^webhook_processing_seconds_(bucket|sum|count)\{(.*)\} (\S+)$',
                         open(path).read(), re.M):
        labels = dict(re.findall(r'([a-z_]+)="([^"]*)"', m.group(2)))
        if labels["instance"] == sys.argv[3]:
            key = (m.group(1), labels["model"], float(labels.get("le", "nan")) if "le" in labels else None)
            out[key] = float(m.group(3))
    return out
a, b = read(sys.argv[1]), read(sys.argv[2])
for k in sorted(set(a) | set(b), key=str):
    if a.get(k) is None or b.get(k) is None or abs(a[k] - b[k]) > 1e-9 * max(1, abs(a[k])):
        print("%s: metrics() %s, exporter %s" % (k, a.get(k), b.get(k)))
        sys.exit(1)
sys.exit(0 if a else 1)
EOF

# ---- (e) Prometheus with the README's scrape configuration and the rules --------

PROM_PORT=$(free_port)
PROM=http://127.0.0.1:$PROM_PORT
# The README's example (the yaml block with the rename), pointed at this exporter.
python3 - monitoring/README.md "127.0.0.1:$EXPORTER_PORT" "$ROOT/$RULES" >"$TMP/prometheus.yml" <<'EOF'
import re, sys
readme, target, rules = sys.argv[1:]
blocks = [b for b in re.findall(r"```yaml\n(.*?)```", open(readme).read(), re.S)
          if "replacement: bridgecore_instance_state" in b]
if not blocks:
    sys.exit("no yaml block with the scrape configuration in " + readme)
conf = re.sub(r"targets: \[[^]]*\]", "targets: ['%s']" % target, blocks[0])
conf = re.sub(r"(rule_files:\n\s+- ).*", r"\g<1>" + rules, conf)
print("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n" + conf)
EOF
check "prometheus: promtool check config accepts the README's scrape configuration" \
    promtool check config "$TMP/prometheus.yml"
start "$TMP/prometheus.log" prometheus --config.file="$TMP/prometheus.yml" \
    --storage.tsdb.path="$TMP/tsdb" --web.listen-address="127.0.0.1:$PROM_PORT"
promql() {  # promql <query>: the JSON result of an instant query
    curl -fsS --data-urlencode "query=$1" "$PROM/api/v1/query"
}
has_result() {  # has_result <query>: the query returns at least one series
    promql "$1" | python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["data"]["result"] else 1)'
}
if wait_until 30 has_result "bridgecore_instance_state{instance=\"$INSTANCE\", job!=\"\"} == 1"; then
    pass "prometheus: bridgecore_instance_state{instance=\"$INSTANCE\"} is scraped (renamed, instance label kept)"
else
    fail "prometheus: bridgecore_instance_state{instance=\"$INSTANCE\"} is scraped (renamed, instance label kept)" \
        "$(promql '{__name__=~"bridgecore_instance_.*"}' 2>&1; tail -5 "$TMP/prometheus.log")"
fi
check "prometheus: webhook_received_total{instance=\"$INSTANCE\"} > 0" \
    has_result "webhook_received_total{instance=\"$INSTANCE\"} > 0"
check "prometheus: the dashboard's instance variable lists $INSTANCE" sh -c "
    curl -fsS -G --data-urlencode 'match[]=bridgecore_cursor' '$PROM/api/v1/label/instance/values' |
    grep -q '\"$INSTANCE\"'"
# Every query of the dashboard is valid PromQL (variables filled in).
check "prometheus: every dashboard query runs" python3 - "$DASHBOARD" "$PROM" <<'EOF'
import json, sys, urllib.parse, urllib.request
d = json.load(open(sys.argv[1]))
problems = []
for p in d["panels"]:
    for t in p.get("targets", []):
        q = t["expr"].replace("$__rate_interval", "1m").replace("$instance", ".*")
        try:
            with urllib.request.urlopen(sys.argv[2] + "/api/v1/query",
                                        urllib.parse.urlencode({"query": q}).encode()) as r:
                status = json.load(r)["status"]
        except Exception as e:
            status = str(e)
        if status != "success":
            problems.append("%s / %s: %s" % (p["title"], t["refId"], status))
print("\n".join(problems))
sys.exit(1 if problems else 0)
EOF
rules_evaluated() {
    curl -fsS "$PROM/api/v1/rules" | python3 -c '
import json, sys
rules = [r for g in json.load(sys.stdin)["data"]["groups"] for r in g["rules"]]
bad = [(r["name"], r["health"], r.get("lastError", "")) for r in rules if r["health"] != "ok"]
print(bad)
sys.exit(0 if rules and not bad else 1)'
}
if wait_until 20 rules_evaluated; then
    pass "prometheus: the alert rules load and evaluate without errors"
else
    fail "prometheus: the alert rules load and evaluate without errors" \
        "$(rules_evaluated 2>&1; tail -5 "$TMP/prometheus.log")"
fi

echo "1..$n"
[ "$failures" -eq 0 ]
