#!/usr/bin/env bash
# Runs one benchmark row: starts what the row needs (a private redis-server, origins, nginx with
# Nchan), runs ridecast-loadgen against it, saves the generator's JSON line(s) and table under
# bench/results/<row>-<timestamp>.{json,txt}, and stops everything it started on exit.
#
#   bench/run.sh ROW [extra ridecast-loadgen flags...]
#
# Rows (defaults are the full sizes; every size can be overridden through the environment,
# e.g. `RIDERS_PER_DRIVER=50 bench/run.sh fanout` for a quick check):
#
#   idle-sse         RIDERS=19000 HOLD=30               rider SSE streams held open, one origin
#   idle-drivers     DRIVERS=15000 HOLD=75              idle driver WebSockets (pings answered), one origin
#   fanout           DRIVERS=20 RIDERS_PER_DRIVER=500 DURATION=30 MOTION=hop
#                                                       a cell change per driver per second, embedded origin
#                                                       (MOTION=creep: one fix in five changes cell)
#   nchan            the same sizes as fanout           the same workload against nginx + Nchan
#   fanout-vs-nchan  as fanout, ROUNDS=2                per round: fanout (embedded origin), then nchan, fresh
#                                                       servers; a summary of p99 and CPU per event with ratios
#   reference        DRIVERS=5000 RIDERS_PER_DRIVER=1 INTERVAL_MS=1000 DURATION=30 ROUNDS=2
#                                                       the reference design's shape (a rider per driver): per
#                                                       round, for --motion hop then creep, Nchan, Ridecast
#                                                       embedded, Ridecast + one redis-server (both measured),
#                                                       fresh servers each run; a summary of p99 and CPU µs per
#                                                       fix, with Ridecast's over Nchan's in the same round.
#                                                       BEFORE_BIN=<an older ridecast-origin> adds it as
#                                                       "before" (embedded and + Redis) to every round;
#                                                       MOTIONS="hop creep" picks the motions
#   polling-vs-push  DRIVERS=1000 RIDERS=10000 DURATION=60 SEED=1
#                                                       street-driving drivers; riders stream, then poll every 2 s
#   polling-vs-push-reference  as polling-vs-push, STANDING_SHARE=0.91
#                                                       the same on a fleet (--motion fleet): drivers mostly
#                                                       stand, sending a fix every 30 s, so ~85 % of polls get
#                                                       304; CPU and wire bytes per useful update, push's savings
#   one-to-500       RIDERS=500 ORIGINS=3 DURATION=30   one driver, riders over 3 origins sharing Redis
#   cross-instance   DRIVERS=200 RIDERS_PER_DRIVER=25 ORIGINS=3 DURATION=30
#                                                       many drivers (many channels, over every shard with
#                                                       REDIS=cluster), riders round-robin over the origins
#   scale-100k       RIDERS=50000 DRIVERS=50000 ORIGINS=6 PROCS=6 DURATION=60 CONNECT_RATE=500
#                    INTERVAL_MS=1000                   Redis + origins on one port (--reuse-port)
#   reference-100k   as scale-100k, but INTERVAL_MS=2000
#                                                       the reference design's pace (drivers wait at lights as
#                                                       street motion does); ends with a LOSS line: events lost,
#                                                       connections refused or dropped
#   edge-fanout      RIDERS=500 DURATION=30             one driver on an embedded origin, riders through the edge
#                                                       worker in workerd: all on one Durable Object
#   edge-trips       DRIVERS=2000 RIDERS_PER_DRIVER=1 DURATION=30
#                                                       the production shape at the edge: a rider per driver,
#                                                       so DRIVERS Durable Objects each with its own origin link;
#                                                       ends with RSS per trip and CPU per event, per process
#   edge-restart     RIDERS=500 DOWN=5                  Redis, the driver on one origin, riders through the edge on
#                                                       another, which is killed for DOWN s mid-run: the events
#                                                       after its restart show how soon riders have the latest
#   edge-idle        RIDERS=1000 HOLD=30                rider streams held open on one Durable Object: workerd
#                                                       memory per stream. SHARED_DRIVER=0: each stream on its
#                                                       own driver's object (memory per object + rider + link);
#                                                       DEAD_ORIGIN=1 as well: the same without the link
#   edge-bare-objects OBJECTS=2000                      Durable Objects touched once each (an operator's tree
#                                                       view: no rider, no link): workerd memory per object
#   edge-floor       FLOOR_MODE=stream RIDERS=1000 PUSHES=50 HOLD=15
#                                                       the same two hops in plain JavaScript, no Rust or wasm
#                                                       (bench/edge-floor/): workerd memory per stream and CPU
#                                                       per event; FLOOR_MODE=pipe: an IdentityTransformStream
#
# The edge rows need the built worker and the npm tools: run scripts/edge-setup first. They run
# workerd through Miniflare's API (scripts/edge-serve.mjs); EDGE_RUNNER=wrangler puts wrangler dev's
# proxy in front, as `wrangler dev` users see it. EDGE_BUILD=<a copy of edge-worker/build> runs
# another build of the worker (an older one, to alternate builds in one session).
#
# Rows with Redis run on one redis-server, or with REDIS=cluster on a local Redis Cluster (three
# primaries, three replicas; the origins then use sharded Pub/Sub).
#
# Other settings: RIDECAST_TOKEN_SECRET (default: a fixed bench secret), RESULTS_DIR (default
# bench/results), NO_BUILD=1 (skip `cargo build --release`), KEEP_WORK=1 (keep the logs),
# CARGO_TARGET_DIR (where the release binaries are built and run from; default target/),
# ORIGIN_FLAGS (flags every origin gets; default `--threads 1`: one thread per origin process).
# The summaries of the rows that alternate servers need jq (bench_label in each JSON line).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROWS="idle-sse idle-drivers fanout nchan fanout-vs-nchan reference polling-vs-push polling-vs-push-reference"
ROWS+=" one-to-500 cross-instance scale-100k reference-100k edge-fanout edge-trips edge-restart edge-idle edge-bare-objects edge-floor"
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
  exit 2
}
[ $# -ge 1 ] || usage
ROW=$1
shift
EXTRA=("$@")
case " $ROWS " in *" $ROW "*) ;; *) usage ;; esac

SECRET=${RIDECAST_TOKEN_SECRET:-ridecast-bench-secret}
export RIDECAST_TOKEN_SECRET=$SECRET
RESULTS_DIR=${RESULTS_DIR:-$ROOT/bench/results}
# cargo puts the binaries under CARGO_TARGET_DIR when it is set (relative to this checkout, as
# cargo reads it from here), else under target/.
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
ORIGIN=$TARGET_DIR/release/ridecast-origin
# Flags every origin gets. One thread per origin process: the least CPU per event (see
# origin/CLI.md, --threads); rows that need more cores run more origins.
read -r -a ORIGIN_FLAGS <<<"${ORIGIN_FLAGS---threads 1}"
# BEFORE_BIN: an older ridecast-origin (a release build of an earlier commit) that the reference
# row runs too, as `embedded-before` and `redis-before`, alternating with the others in the same
# run; it gets BEFORE_FLAGS (default none: older builds may not know --threads).
read -r -a BEFORE_FLAGS <<<"${BEFORE_FLAGS-}"
LOADGEN=$TARGET_DIR/release/ridecast-loadgen
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULT_JSON=$RESULTS_DIR/$ROW-$STAMP.json
RESULT_TXT=$RESULTS_DIR/$ROW-$STAMP.txt
WORK=$(mktemp -d /tmp/ridecast-bench.XXXXXX)

STARTED=()       # every process this script started (stopped on exit)
ORIGIN_PIDS=()   # the origins among them
REDIS_PIDS=()
NCHAN_PORT=""
EDGE_PGID=""     # wrangler dev and its workerd run in their own process group

log() { printf '[bench] %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

# Stops one process: SIGTERM (origins drain), then SIGKILL after 10 s.
stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "pid $pid ignored SIGTERM for 10 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$NCHAN_PORT" ]; then
    "$ROOT/bench/nchan.sh" stop "$NCHAN_PORT" || true
  fi
  if [ -n "$EDGE_PGID" ]; then
    kill -KILL -- "-$EDGE_PGID" 2>/dev/null || true
  fi
  local pid
  for pid in "${STARTED[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${STARTED[@]}"; do
    stop_pid "$pid"
    wait "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ] || [ -n "${KEEP_WORK:-}" ]; then
    log "logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port nobody listens on, below the kernel's ephemeral range (the generator binds its own
# source ports on 127.0.0.2 and up, so they never collide with these).
free_port() {
  local port
  for _ in $(seq 200); do
    port=$((20000 + RANDOM % 12000))
    if [ -z "$(ss -Hltn "sport = :$port")" ]; then
      echo "$port"
      return 0
    fi
  done
  die "no free port found"
}

build() {
  if [ -n "${NO_BUILD:-}" ]; then
    if [ ! -x "$ORIGIN" ] || [ ! -x "$LOADGEN" ]; then
      die "NO_BUILD is set but the release binaries are missing"
    fi
    return
  fi
  log "cargo build --release -p ridecast-origin -p ridecast-loadgen"
  cargo build --release --quiet -p ridecast-origin -p ridecast-loadgen
}

# start_redis: one redis-server, or with REDIS=cluster a Redis Cluster of three primaries and
# three replicas (redis-cli --cluster create). Sets REDIS_URL and REDIS_PIDS.
start_redis() {
  command -v redis-server >/dev/null || die "redis-server is not installed (apt-get install redis-server)"
  REDIS_PIDS=()
  case "${REDIS:-single}" in
    single)
      start_redis_node "$WORK/redis"
      REDIS_URL="redis://127.0.0.1:$NODE_PORT"
      ;;
    cluster)
      local ports=() node
      for node in 1 2 3 4 5 6; do
        start_redis_node "$WORK/redis-$node" --cluster-enabled yes --cluster-node-timeout 5000
        ports+=("$NODE_PORT")
      done
      redis-cli --cluster create "${ports[@]/#/127.0.0.1:}" --cluster-replicas 1 --cluster-yes >"$WORK/cluster-create.log" \
        || { cat "$WORK/cluster-create.log" >&2; die "redis-cli --cluster create failed"; }
      for _ in $(seq 300); do
        if redis-cli -p "${ports[0]}" cluster info | grep -q cluster_state:ok; then break; fi
        sleep 0.1
      done
      REDIS_URL="redis-cluster://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
      ;;
    *) die "REDIS must be single or cluster, not ${REDIS}" ;;
  esac
  log "redis at $REDIS_URL (pids ${REDIS_PIDS[*]})"
}

# start_redis_node DIR [redis-server flags...]: sets NODE_PORT once it answers PING. A port
# whose cluster bus port (10,000 above) is taken is skipped.
start_redis_node() {
  local dir=$1 port
  shift
  mkdir -p "$dir"
  for _ in $(seq 20); do
    port=$(free_port)
    [ -z "$(ss -Hltn "sport = :$((port + 10000))")" ] && break
  done
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
    --logfile "$dir/redis.log" --maxclients 10000 "$@" &
  REDIS_PIDS+=("$!")
  STARTED+=("$!")
  for _ in $(seq 100); do
    if [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ]; then
      NODE_PORT=$port
      return
    fi
    sleep 0.1
  done
  cat "$dir/redis.log" >&2 || true
  die "redis-server did not answer"
}

# start_origin NAME PORT [origin flags...]: one origin; waits until it listens.
start_origin() {
  local name=$1 port=$2
  shift 2
  local binary=$ORIGIN flags=("${ORIGIN_FLAGS[@]}")
  if [ -n "${USE_BEFORE:-}" ]; then
    binary=$BEFORE_BIN flags=("${BEFORE_FLAGS[@]}")
  fi
  "$binary" --listen "127.0.0.1:$port" --max-connections 19500 --drain-secs 2 "${flags[@]}" "$@" \
    >"$WORK/$name.out" 2>"$WORK/$name.log" &
  local pid=$!
  STARTED+=("$pid")
  ORIGIN_PIDS+=("$pid")
  for _ in $(seq 100); do
    if grep -q '^RIDECAST_LISTENING' "$WORK/$name.out" 2>/dev/null; then
      log "$name on 127.0.0.1:$port (pid $pid)"
      return
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$WORK/$name.log" >&2 || true
  die "$name did not start"
}

# wait_ready PORT: /readyz answers 200 (Redis reachable when configured).
wait_ready() {
  for _ in $(seq 100); do
    if curl -sf -o /dev/null "http://127.0.0.1:$1/readyz"; then
      return
    fi
    sleep 0.1
  done
  die "127.0.0.1:$1 never became ready"
}

# stop_origins: stops the origins started so far (between the phases of a row).
stop_origins() {
  local pid
  for pid in "${ORIGIN_PIDS[@]}"; do
    stop_pid "$pid"
    wait "$pid" 2>/dev/null || true
  done
  ORIGIN_PIDS=()
}

# stop_redis: stops the redis-server(s) started so far (between the runs of a row).
stop_redis() {
  local pid
  for pid in "${REDIS_PIDS[@]}"; do
    stop_pid "$pid"
    wait "$pid" 2>/dev/null || true
  done
  REDIS_PIDS=()
}

# start_nchan: a fresh nginx + Nchan on a free port; sets NCHAN_PORT and NCHAN_PIDS.
start_nchan() {
  NCHAN_PORT=$(free_port)
  NCHAN_PIDS=$("$ROOT/bench/nchan.sh" start "$NCHAN_PORT")
}

# stop_nchan: stops the nginx + Nchan started by start_nchan.
stop_nchan() {
  if [ -n "$NCHAN_PORT" ]; then
    "$ROOT/bench/nchan.sh" stop "$NCHAN_PORT" || true
    NCHAN_PORT=""
  fi
}

# pid_flags PID...: sets PID_FLAGS to `--server-pid PID` for each.
pid_flags() {
  PID_FLAGS=()
  local pid
  for pid in "$@"; do
    PID_FLAGS+=(--server-pid "$pid")
  done
}

header() {
  {
    echo "# row: $ROW"
    echo "# date: $STAMP"
    echo "# commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "# machine: $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, fd hard limit $(ulimit -Hn)"
  } >>"$RESULT_TXT"
}

# loadgen LABEL ARGS...: runs the generator; its JSON line is appended to the .json file and its
# table (stderr without the `[...]` progress lines) to the .txt file.
loadgen() {
  local label=$1
  shift
  local out=$WORK/$label.json err=$WORK/$label.err
  log "ridecast-loadgen $* ${EXTRA[*]}"
  echo "# $label: ridecast-loadgen $* ${EXTRA[*]}" >>"$RESULT_TXT"
  local status=0
  # stdout (the JSON line) to $out; stderr (progress and table) to the terminal and $err.
  { "$LOADGEN" "$@" "${EXTRA[@]}" 2>&1 1>&3 3>&- | tee "$err" >&2; } 3>"$out" || status=$?
  [ -s "$out" ] || die "ridecast-loadgen printed no report (exit $status); its output is in $err"
  # The label goes into the saved line (as bench_label) when jq is there: the summaries of
  # the rows that alternate servers find each run by it.
  if command -v jq >/dev/null; then
    jq -c --arg run "$label" '{bench_label: $run} + .' "$out" >>"$RESULT_JSON"
  else
    cat "$out" >>"$RESULT_JSON"
  fi
  grep -v '^\[' "$err" >>"$RESULT_TXT" || true
  echo >>"$RESULT_TXT"
}

# start_edge PORT ORIGIN_URL: the built worker in workerd, in its own process group. By default
# through Miniflare's API (scripts/edge-serve.mjs: bindings from wrangler.toml, no dev proxy);
# EDGE_RUNNER=wrangler uses `wrangler dev --local` instead, proxy included. Sets WORKERD_PID, the
# process that holds the Durable Objects and the rider streams.
start_edge() {
  local port=$1 origin_url=$2 config=$WORK/wrangler.toml
  [ -f "$ROOT/edge-worker/build/index.js" ] && [ -x "$ROOT/node_modules/.bin/wrangler" ] ||
    die "the edge worker is not built: run scripts/edge-setup"
  if [ "${EDGE_RUNNER:-miniflare}" = wrangler ]; then
    awk -v main="$ROOT/edge-worker/build/index.js" '
      /^\[/ { skip = ($0 == "[build]") }
      skip { next }
      /^main *=/ { print "main = \"" main "\""; next }
      { print }' "$ROOT/wrangler.toml" >"$config"
    CLOUDFLARE_CF_FETCH_ENABLED=false WRANGLER_SEND_METRICS=false NO_COLOR=1 setsid \
      "$ROOT/node_modules/.bin/wrangler" dev --config "$config" --local --ip 127.0.0.1 --port "$port" \
      --inspector-port "$(free_port)" --persist-to "$WORK/edge-state" --show-interactive-dev-session=false \
      --log-level warn --var "ORIGIN_URL:$origin_url" --var "RIDECAST_TOKEN_SECRET:$SECRET" \
      </dev/null >"$WORK/edge.log" 2>&1 &
  else
    RIDECAST_EDGE_BUILD=${EDGE_BUILD:-} CLOUDFLARE_CF_FETCH_ENABLED=false WRANGLER_SEND_METRICS=false setsid \
      node "$ROOT/scripts/edge-serve.mjs" "$port" "$origin_url" "$SECRET" </dev/null >"$WORK/edge.log" 2>&1 &
  fi
  EDGE_PGID=$!
  for _ in $(seq 300); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
      WORKERD_PID=$(pgrep -g "$EDGE_PGID" -x workerd | head -1)
      [ -n "$WORKERD_PID" ] || die "the edge answers but no workerd process was found"
      log "edge (${EDGE_RUNNER:-miniflare}) on 127.0.0.1:$port (workerd pid $WORKERD_PID)"
      echo "# edge runner: ${EDGE_RUNNER:-miniflare}" >>"$RESULT_TXT"
      return
    fi
    sleep 0.2
  done
  cat "$WORK/edge.log" >&2 || true
  die "the edge did not start"
}

# ---- rows -------------------------------------------------------------------------------------

row_idle_sse() {
  local port
  port=$(free_port)
  start_origin origin "$port"
  pid_flags "${ORIGIN_PIDS[@]}"
  loadgen idle-sse idle --url "http://127.0.0.1:$port" --secret "$SECRET" \
    --riders "${RIDERS:-19000}" --hold-secs "${HOLD:-30}" "${PID_FLAGS[@]}"
}

row_idle_drivers() {
  local port
  port=$(free_port)
  start_origin origin "$port"
  # The hold outlasts the origin's 60 s idle timeout: drivers that did not answer pings would
  # show up as disconnects.
  pid_flags "${ORIGIN_PIDS[@]}"
  loadgen idle-drivers idle --url "http://127.0.0.1:$port" --secret "$SECRET" \
    --drivers "${DRIVERS:-15000}" --hold-secs "${HOLD:-75}" "${PID_FLAGS[@]}"
}

row_fanout() {
  local port
  port=$(free_port)
  start_origin origin "$port"
  pid_flags "${ORIGIN_PIDS[@]}"
  loadgen fanout fanout --url "http://127.0.0.1:$port" --secret "$SECRET" \
    --drivers "${DRIVERS:-20}" --riders-per-driver "${RIDERS_PER_DRIVER:-500}" \
    --duration-secs "${DURATION:-30}" --interval-ms 1000 --motion "${MOTION:-hop}" "${PID_FLAGS[@]}"
}

row_nchan() {
  local pids
  NCHAN_PORT=$(free_port)
  pids=$("$ROOT/bench/nchan.sh" start "$NCHAN_PORT")
  # shellcheck disable=SC2086 # one pid per word
  pid_flags $pids
  loadgen nchan fanout --target nchan --url "http://127.0.0.1:$NCHAN_PORT" \
    --drivers "${DRIVERS:-20}" --riders-per-driver "${RIDERS_PER_DRIVER:-500}" \
    --duration-secs "${DURATION:-30}" --interval-ms 1000 --motion "${MOTION:-hop}" "${PID_FLAGS[@]}"
}

# ---- servers side by side: Ridecast and Nchan, alternating, fresh servers for every run ------

# fanout_run LABEL SERVER MOTION DRIVERS RIDERS_PER_DRIVER: one fan-out run on fresh servers.
# SERVER: nchan, embedded (one origin, in-process bus) or redis (one origin with --redis-url and
# one redis-server, both measured).
fanout_run() {
  local label=$1 server=$2 motion=$3 drivers=$4 riders=$5 port
  local common=(--drivers "$drivers" --riders-per-driver "$riders" --duration-secs "${DURATION:-30}"
    --interval-ms "${INTERVAL_MS:-1000}" --motion "$motion" --id-prefix "${label//-/}")
  case "$server" in
    nchan)
      start_nchan
      # shellcheck disable=SC2086 # one pid per word
      pid_flags $NCHAN_PIDS
      loadgen "$label" fanout --target nchan --url "http://127.0.0.1:$NCHAN_PORT" "${common[@]}" "${PID_FLAGS[@]}"
      stop_nchan
      ;;
    embedded | embedded-before)
      port=$(free_port)
      USE_BEFORE=${server#embedded} start_origin "origin-$label" "$port"
      pid_flags "${ORIGIN_PIDS[@]}"
      loadgen "$label" fanout --url "http://127.0.0.1:$port" --secret "$SECRET" "${common[@]}" "${PID_FLAGS[@]}"
      stop_origins
      ;;
    redis | redis-before)
      start_redis
      port=$(free_port)
      USE_BEFORE=${server#redis} start_origin "origin-$label" "$port" --redis-url "$REDIS_URL"
      wait_ready "$port"
      pid_flags "${ORIGIN_PIDS[@]}" "${REDIS_PIDS[@]}"
      loadgen "$label" fanout --url "http://127.0.0.1:$port" --secret "$SECRET" "${common[@]}" "${PID_FLAGS[@]}"
      stop_origins
      stop_redis
      ;;
  esac
}

# The reference design's shape: every rider follows its own driver. Each round runs, for hop
# then creep, Nchan, Ridecast embedded and Ridecast + Redis, one after the other, so that a
# drift of the machine over time hits all three alike.
row_reference() {
  local rounds=${ROUNDS:-2} drivers=${DRIVERS:-5000} riders=${RIDERS_PER_DRIVER:-1} round motion server
  local servers=(nchan embedded redis)
  if [ -n "${BEFORE_BIN:-}" ]; then
    [ -x "$BEFORE_BIN" ] || die "BEFORE_BIN=$BEFORE_BIN is not an executable"
    servers=(nchan embedded-before embedded redis-before redis)
  fi
  for round in $(seq "$rounds"); do
    for motion in ${MOTIONS:-hop creep}; do
      for server in "${servers[@]}"; do
        fanout_run "r$round-$motion-$server" "$server" "$motion" "$drivers" "$riders"
      done
    done
  done
  compare_with_nchan "the reference design's shape: $drivers drivers, $riders rider(s) each, a fix every ${INTERVAL_MS:-1000} ms"
}

# The fan-out row against Nchan, alternating, to compare cost per delivered event.
row_fanout_vs_nchan() {
  local rounds=${ROUNDS:-2} drivers=${DRIVERS:-20} riders=${RIDERS_PER_DRIVER:-500} round server
  for round in $(seq "$rounds"); do
    for server in embedded nchan; do
      fanout_run "r$round-hop-$server" "$server" hop "$drivers" "$riders"
    done
  done
  compare_with_nchan "fan-out: $drivers drivers, $riders riders each, a cell change per fix"
}

# The jq definitions every summary uses: a number to n places (or n/a), a padded cell.
JQ_HELPERS='
  def num(x; n): if x == null then "n/a" else (x * pow(10; n) | round / pow(10; n) | tostring) end;
  def pad(w): tostring | . + (" " * ([w - length, 1] | max));
'

# summarise all|last PROGRAM [jq flags...]: runs the jq PROGRAM (after JQ_HELPERS) over this
# run's JSON lines as one array (all) or over the last line (last), and appends what it prints
# to the table. Without jq there is no summary; the JSON lines are complete anyway.
summarise() {
  local lines=$1 program=$2
  shift 2
  command -v jq >/dev/null || {
    log "jq is missing: no summary (the JSON lines are complete)"
    return 0
  }
  case "$lines" in
    all) jq -rs "$@" "$JQ_HELPERS $program" "$RESULT_JSON" ;;
    last) tail -n 1 "$RESULT_JSON" | jq -r "$@" "$JQ_HELPERS $program" ;;
  esac | tee -a "$RESULT_TXT" >&2
}

# compare_with_nchan TITLE: per motion and round, each server's p99 and CPU, and Ridecast's
# over Nchan's in the same round (needs jq and the bench_label of each line: rROUND-MOTION-SERVER).
compare_with_nchan() {
  summarise all '
    def times(a; b): if a == null or b == null or b == 0 then "n/a" else num(a / b; 2) + "x" end;
    def name: {nchan: "nchan", embedded: "ridecast", redis: "ridecast+redis",
      "embedded-before": "before", "redis-before": "before+redis"}[.] // .;
    map(select(.bench_label != null) | (.bench_label | split("-")) as $l
        | {round: $l[0], motion: $l[1], server: ($l[2:] | join("-")),
           p99: (.latency_us.p99 // null), cpu_fix: .server.cpu_us_per_fix,
           cpu_event: .server.cpu_us_per_delivered_event,
           fixes: .drivers.sends, cell_changes: .drivers.cell_changes,
           lost: (.delivery.lost // null), ratio: (.delivery.ratio // null)}) as $runs
    | $title,
      ("motion" | pad(8)) + ("round" | pad(7)) + ("server" | pad(16)) + ("p99 ms" | pad(9))
        + ("cpu µs/fix" | pad(12)) + ("cpu µs/event" | pad(14)) + ("fixes" | pad(9)) + ("cell chg" | pad(10))
        + ("lost" | pad(8)) + ("p99 vs nchan" | pad(14)) + ("cpu/fix vs nchan" | pad(18)) + "cpu/event vs nchan",
      ($runs[] as $r
        | ($runs | map(select(.round == $r.round and .motion == $r.motion and .server == "nchan")) | first) as $n
        | ($r.motion | pad(8)) + ($r.round | ltrimstr("r") | pad(7)) + ($r.server | name | pad(16))
          + (num($r.p99 / 1000; 2) | pad(9)) + (num($r.cpu_fix; 1) | pad(12)) + (num($r.cpu_event; 1) | pad(14))
          + ($r.fixes | pad(9)) + ($r.cell_changes | pad(10)) + ($r.lost // "n/a" | pad(8))
          + (if $r.server == "nchan" then ("-" | pad(14)) + ("-" | pad(18)) + "-"
             else (times($r.p99; $n.p99) | pad(14)) + (times($r.cpu_fix; $n.cpu_fix) | pad(18))
               + times($r.cpu_event; $n.cpu_event) end)),
      "p99: driver→rider latency of delivered events; cpu: server CPU (Redis included for ridecast+redis)",
      "over the window and drain, per driver fix sent / per event delivered. Nchan pushes every fix;",
      "the origin only cell changes (all of them with hop, about one in five with creep)."
  ' --arg title "$1"
}

row_polling_vs_push() {
  push_then_poll street "polling vs push: the same street-driving drivers, the same number of riders"
}

# The reference design's workload: a fleet that mostly stands (a standing phone sends a fix every
# 30 s), so that most 2 s polls find nothing new.
row_polling_vs_push_reference() {
  push_then_poll fleet "polling vs push at the reference design's workload: a fleet standing ${STANDING_SHARE:-0.91} of the time" \
    --standing-share "${STANDING_SHARE:-0.91}"
}

# push_then_poll MOTION TITLE [generator flags...]: riders stream (realistic), then, on a fresh
# origin, the same riders poll every 2 s; then the comparison.
push_then_poll() {
  local motion=$1 title=$2 drivers=${DRIVERS:-1000} riders=${RIDERS:-10000} duration=${DURATION:-60} seed=${SEED:-1} port
  shift 2
  # A fresh origin for each half, so that neither inherits the other's state.
  port=$(free_port)
  start_origin origin-push "$port"
  pid_flags "${ORIGIN_PIDS[@]}"
  loadgen push realistic --url "http://127.0.0.1:$port" --secret "$SECRET" \
    --drivers "$drivers" --riders "$riders" --duration-secs "$duration" --interval-ms 1000 --seed "$seed" \
    --motion "$motion" "$@" "${PID_FLAGS[@]}"
  stop_origins
  port=$(free_port)
  start_origin origin-poll "$port"
  pid_flags "${ORIGIN_PIDS[@]}"
  loadgen poll poll --url "http://127.0.0.1:$port" --secret "$SECRET" \
    --drivers "$drivers" --riders "$riders" --duration-secs "$duration" --driver-interval-ms 1000 \
    --interval-ms 2000 --motion "$motion" --seed "$seed" "$@" "${PID_FLAGS[@]}"
  compare_polling_and_push "$title"
}

# compare_polling_and_push TITLE: the two halves side by side (needs jq; the JSON lines hold
# everything anyway).
compare_polling_and_push() {
  summarise all '
    def ms(x): if x == null then "n/a" else num(x / 1000; 1) end;
    def row(name; a; b): (name | pad(30)) + (a | pad(18)) + b;
    def per(a; b): if a == null or b == null or b == 0 then null else a / b end;
    def pct(a; b): if a == null or b == null or b <= 0 then "n/a" else num(a / b * 100; 1) + " %" end;
    def saving(push; poll): if push == null or poll == null or poll == 0 then "n/a"
      else num((1 - push / poll) * 100; 1) + " %" end;
    .[0] as $push | .[1] as $poll |
    per($push.server.cpu_us; $push.events.received) as $push_cpu |
    per($poll.server.cpu_us; $poll.poll.fresh_200) as $poll_cpu |
    $push.events.wire_bytes_per_useful_update as $push_bytes |
    $poll.poll.wire_bytes_per_useful_update as $poll_bytes |
    $title,
    row(""; "push (SSE)"; "poll (every 2 s)"),
    row("fixes sent (changed cell)"; "\($push.drivers.sends) (\($push.drivers.cell_changes))";
        "\($poll.drivers.sends) (\($poll.drivers.cell_changes))"),
    row("requests/s"; "-"; num($poll.poll.requests_per_sec; 1)),
    row("polls finding nothing (304)"; "-"; (if $poll.poll.ratio_304 == null then "n/a" else num($poll.poll.ratio_304 * 100; 1) + " %" end)),
    row("  after first answers"; "-"; pct($poll.poll.not_modified_304; $poll.poll.responses - $poll.riders.connected)),
    row("useful updates/s"; num($push.delivery.per_sec; 1); num($poll.poll.fresh_200 / $poll.window_secs; 1)),
    row("server CPU, % of one core"; num($push.server.cpu_percent_of_one_core; 1); num($poll.server.cpu_percent_of_one_core; 1)),
    row("server CPU µs / useful update"; num($push_cpu; 1); num($poll_cpu; 1)),
    row("server CPU µs / fix"; num($push.server.cpu_us_per_fix; 1); num($poll.server.cpu_us_per_fix; 1)),
    row("wire bytes / useful update"; num($push_bytes; 0); num($poll_bytes; 0)),
    row("staleness p50, ms"; ms($push.latency_us.p50); ms($poll.poll.staleness_us.p50)),
    row("staleness p99, ms"; ms($push.latency_us.p99); ms($poll.poll.staleness_us.p99)),
    row("  cell changes only, p99 ms"; ms($push.latency_us.p99); ms($poll.poll.staleness_cell_change_us.p99)),
    row("push lost events"; "\($push.delivery.lost // "n/a")"; "-"),
    "push saves \(saving($push_cpu; $poll_cpu)) of the server CPU and \(saving($push_bytes; $poll_bytes)) of the wire bytes per useful update.",
    "useful update: push = a delivered event; poll = an answer showing a newer location.",
    "staleness: push = delivery latency of the cell changes it pushes (other fixes are never pushed);",
    "poll = from each driver fix to the first answer showing it or a newer one."
  ' --arg title "$1"
}

# fanout_over_origins LABEL DRIVERS RIDERS_PER_DRIVER: Redis and ORIGINS (3) origins sharing it,
# riders round-robin over them, so most deliveries cross Redis.
fanout_over_origins() {
  local label=$1 drivers=$2 riders=$3 origins=${ORIGINS:-3} urls=() port i
  start_redis
  for i in $(seq "$origins"); do
    port=$(free_port)
    start_origin "origin$i" "$port" --redis-url "$REDIS_URL"
    wait_ready "$port"
    urls+=(--url "http://127.0.0.1:$port")
  done
  pid_flags "${ORIGIN_PIDS[@]}" "${REDIS_PIDS[@]}"
  loadgen "$label" fanout "${urls[@]}" --secret "$SECRET" --drivers "$drivers" --riders-per-driver "$riders" \
    --duration-secs "${DURATION:-30}" --interval-ms 1000 "${PID_FLAGS[@]}"
}

row_cross_instance() {
  fanout_over_origins cross-instance "${DRIVERS:-200}" "${RIDERS_PER_DRIVER:-25}"
}

# The driver goes to the first origin.
row_one_to_500() {
  fanout_over_origins one-to-500 1 "${RIDERS:-500}"
}

row_scale_100k() {
  scale_run scale-100k "${INTERVAL_MS:-1000}"
}

# As scale-100k, at the reference design's pace: a fix every 2 s, drivers waiting at lights.
row_reference_100k() {
  scale_run reference-100k "${INTERVAL_MS:-2000}"
  say_what_was_lost
}

# scale_run LABEL INTERVAL_MS: Redis and ORIGINS origins on one port, RIDERS rider streams and
# DRIVERS street-driving drivers from PROCS generator processes.
scale_run() {
  local label=$1 interval=$2 origins=${ORIGINS:-6} procs=${PROCS:-6} port i
  start_redis
  port=$(free_port)
  for i in $(seq "$origins"); do
    start_origin "origin$i" "$port" --reuse-port --redis-url "$REDIS_URL"
  done
  wait_ready "$port"
  # Each worker process binds its own source address (127.0.0.2, .3, ...) and stays under
  # 19,500 sockets; the kernel spreads connections over the origins sharing the port.
  watch_origin_fds &
  STARTED+=($!)
  pid_flags "${ORIGIN_PIDS[@]}" "${REDIS_PIDS[@]}"
  loadgen "$label" realistic --url "http://127.0.0.1:$port" --secret "$SECRET" \
    --riders "${RIDERS:-50000}" --drivers "${DRIVERS:-50000}" --procs "$procs" \
    --connect-rate "${CONNECT_RATE:-500}" --connect-concurrency 64 --connect-timeout-ms 30000 \
    --duration-secs "${DURATION:-60}" --interval-ms "$interval" --seed "${SEED:-1}" \
    "${PID_FLAGS[@]}"
  if [ -s "$WORK/origin-fds" ]; then
    echo "# open files per origin at the busiest sample (pid:fds): $(cat "$WORK/origin-fds")" | tee -a "$RESULT_TXT" >&2
  fi
}

# say_what_was_lost: one line saying whether the last run lost anything (events, connections).
say_what_was_lost() {
  summarise last '
    (.delivery.lost // 0) as $lost
    | (.riders.failed + (.drivers.failures | add // 0)) as $refused
    | (.riders.closed_during_run + .drivers.disconnects) as $dropped
    | if $lost == 0 and $refused == 0 and $dropped == 0 then "# LOSS: none (\(.delivery.received) of \(.delivery.expected) events delivered, every connection held)"
      else "# LOSS: \($lost) of \(.delivery.expected) events lost, \($refused) connections refused, \($dropped) dropped during the run" end
  '
}

row_edge_fanout() {
  local port edge_port
  port=$(free_port)
  start_origin origin "$port"
  edge_port=$(free_port)
  start_edge "$edge_port" "http://127.0.0.1:$port"
  # One driver: every rider is on that driver's one Durable Object.
  pid_flags "${ORIGIN_PIDS[@]}" "$WORKERD_PID"
  loadgen edge-fanout fanout --url "http://127.0.0.1:$port" --rider-url "http://127.0.0.1:$edge_port" \
    --secret "$SECRET" --drivers 1 --riders-per-driver "${RIDERS:-500}" --duration-secs "${DURATION:-30}" \
    --interval-ms 1000 --connect-concurrency 32 "${PID_FLAGS[@]}"
}

# The production shape at the edge: many trips, each a driver followed by one rider, so DRIVERS
# Durable Objects, each with its own link to the origin. Ends with what one trip costs each
# process: memory (RSS growth from before connecting to the end, per trip) and CPU per
# delivered event.
row_edge_trips() {
  local port edge_port
  port=$(free_port)
  start_origin origin "$port"
  edge_port=$(free_port)
  start_edge "$edge_port" "http://127.0.0.1:$port"
  pid_flags "${ORIGIN_PIDS[@]}" "$WORKERD_PID"
  loadgen edge-trips fanout --url "http://127.0.0.1:$port" --rider-url "http://127.0.0.1:$edge_port" \
    --secret "$SECRET" --drivers "${DRIVERS:-2000}" --riders-per-driver "${RIDERS_PER_DRIVER:-1}" \
    --duration-secs "${DURATION:-30}" --interval-ms 1000 --connect-concurrency 32 "${PID_FLAGS[@]}"
  per_process_costs "origin ${ORIGIN_PIDS[0]} workerd $WORKERD_PID"
}

# per_process_costs "NAME PID ...": each named process's RSS growth per driver (a trip, with
# RIDERS_PER_DRIVER riders) and CPU per delivered event, from the last JSON line's samples.
per_process_costs() {
  summarise last '
    ($names | split(" ")) as $n
    | ([range(0; $n | length; 2) as $i | {key: $n[$i + 1], value: $n[$i]}] | from_entries) as $name
    | . as $run
    | $run.server.samples as $s
    | $s.at_end.processes[] as $last
    | ($s.before.processes[] | select(.pid == $last.pid)) as $first
    | ($s.at_go.processes[] | select(.pid == $last.pid)) as $go
    | "\($name[$last.pid | tostring] // $last.pid): RSS \((($last.rss_kb - $first.rss_kb) * 1024 / $run.params.drivers) | round) B per driver"
      + " (\($run.params.drivers) drivers, \($run.params.riders_per_driver) rider(s) each),"
      + " CPU \((($last.cpu_us - $go.cpu_us) / ([$run.delivery.received, 1] | max) * 10 | round) / 10) µs per delivered event"
  ' --arg names "$1"
}

row_edge_restart() {
  local driver_port edge_origin_port edge_port down=${DOWN:-5}
  start_redis
  driver_port=$(free_port)
  start_origin origin-driver "$driver_port" --redis-url "$REDIS_URL"
  edge_origin_port=$(free_port)
  start_origin origin-edge "$edge_origin_port" --redis-url "$REDIS_URL"
  wait_ready "$edge_origin_port"
  local victim=${ORIGIN_PIDS[1]}
  edge_port=$(free_port)
  start_edge "$edge_port" "http://127.0.0.1:$edge_origin_port"
  # 10 s into the run (connecting takes a few seconds first) the edge's origin dies; DOWN s later
  # it is back on the same port. The restart time is logged to compare with the late events.
  (
    sleep 15
    kill -KILL "$victim"
    echo "# edge's origin killed at $(date +%s.%N)" >>"$RESULT_TXT"
    sleep "$down"
    "$ORIGIN" --listen "127.0.0.1:$edge_origin_port" --redis-url "$REDIS_URL" \
      --max-connections 19500 >"$WORK/origin-edge-2.out" 2>"$WORK/origin-edge-2.log" &
    echo "# edge's origin restarted at $(date +%s.%N) (pid $!)" >>"$RESULT_TXT"
    echo $! >"$WORK/restarted.pid"
    wait
  ) &
  STARTED+=($!)
  loadgen edge-restart fanout --url "http://127.0.0.1:$driver_port" --rider-url "http://127.0.0.1:$edge_port" \
    --secret "$SECRET" --drivers 1 --riders-per-driver "${RIDERS:-500}" --duration-secs "${DURATION:-30}" \
    --interval-ms 1000 --connect-concurrency 32
  if [ -s "$WORK/restarted.pid" ]; then
    stop_pid "$(cat "$WORK/restarted.pid")"
  fi
}

row_edge_idle() {
  local port edge_port origin_url shared=(--shared-driver)
  port=$(free_port)
  start_origin origin "$port"
  edge_port=$(free_port)
  origin_url="http://127.0.0.1:$port"
  # Port 9 (discard) answers nothing: the objects keep retrying their link and never hold one.
  [ "${DEAD_ORIGIN:-0}" = 1 ] && origin_url="http://127.0.0.1:9"
  [ "${SHARED_DRIVER:-1}" = 0 ] && shared=()
  start_edge "$edge_port" "$origin_url"
  # Memory is measured on workerd alone (wrangler's node proxy in front of it is a dev tool).
  pid_flags "$WORKERD_PID"
  loadgen edge-idle idle --url "http://127.0.0.1:$port" --rider-url "http://127.0.0.1:$edge_port" \
    --secret "$SECRET" --riders "${RIDERS:-1000}" "${shared[@]}" --hold-secs "${HOLD:-30}" \
    --connect-concurrency 32 "${PID_FLAGS[@]}"
}

# rss_kb PID: a process's resident memory in KiB.
rss_kb() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }

# cpu_us PID: a process's user + system CPU time so far, in µs.
cpu_us() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); print ($12 + $13) * 1000000 / hz }' "/proc/$1/stat"; }

row_edge_bare_objects() {
  local edge_port objects=${OBJECTS:-2000} ops list before after
  edge_port=$(free_port)
  start_edge "$edge_port" "http://127.0.0.1:9"
  ops=$(RIDECAST_TOKEN_SECRET=$SECRET "$ORIGIN" token --role ops --sub bench)
  list=$WORK/bare-objects.curl
  for i in $(seq "$objects"); do
    printf 'url = "http://127.0.0.1:%s/edge/v1/tree/drivers/bare-%s"\noutput = "/dev/null"\n' "$edge_port" "$i"
  done >"$list"
  # One object first: the isolate and the wasm module are loaded before the count starts.
  curl -sf -o /dev/null -H "authorization: Bearer $ops" "http://127.0.0.1:$edge_port/edge/v1/tree/drivers/warm-up"
  before=$(rss_kb "$WORKERD_PID")
  curl -sf -H "authorization: Bearer $ops" -K "$list" || die "a tree view was refused"
  sleep 2
  after=$(rss_kb "$WORKERD_PID")
  echo "# edge-bare-objects: $objects objects touched once, workerd RSS $before -> $after KiB = $(((after - before) * 1024 / objects)) B per object" |
    tee -a "$RESULT_TXT" >&2
}

row_edge_floor() {
  local port mode=${FLOOR_MODE:-stream} riders=${RIDERS:-1000} pushes=${PUSHES:-50} workerd cpu0 cpu1
  port=$(free_port)
  CLOUDFLARE_CF_FETCH_ENABLED=false WRANGLER_SEND_METRICS=false setsid \
    node "$ROOT/bench/edge-floor/serve.mjs" "$port" "$mode" </dev/null >"$WORK/edge.log" 2>&1 &
  EDGE_PGID=$!
  for _ in $(seq 300); do grep -q RIDECAST_EDGE_READY "$WORK/edge.log" && break; sleep 0.2; done
  workerd=$(pgrep -g "$EDGE_PGID" -x workerd | head -1)
  [ -n "$workerd" ] || die "the floor worker did not start: $(cat "$WORK/edge.log")"
  WORKERD_PID=$workerd
  # The pushes run while the streams are held: CPU per event is workerd's over them alone.
  (
    sleep "${PUSH_AFTER:-8}"
    cpu0=$(cpu_us "$workerd")
    for _ in $(seq "$pushes"); do curl -sf -o /dev/null "http://127.0.0.1:$port/push"; sleep 0.1; done
    sleep 1
    cpu1=$(cpu_us "$workerd")
    echo "# edge-floor ($mode): $pushes pushes to $riders streams, workerd CPU $(((cpu1 - cpu0) / (pushes * riders))) µs per stream event" |
      tee -a "$RESULT_TXT" >&2
  ) &
  STARTED+=($!)
  pid_flags "$workerd"
  loadgen "edge-floor-$mode" idle --rider-url "http://127.0.0.1:$port" --secret "$SECRET" --riders "$riders" \
    --shared-driver --hold-secs "${HOLD:-15}" --connect-concurrency 32 "${PID_FLAGS[@]}"
  wait "${STARTED[-1]}" 2>/dev/null || true
}

# Every 10 s, counts each origin's open files (about its connections: how evenly --reuse-port
# spread them) and keeps the busiest sample. Listing /proc/<pid>/fd is cheap, unlike `ss -p`.
watch_origin_fds() {
  local best=0 total line pid n
  trap 'kill "$!" 2>/dev/null; exit 0' TERM
  while true; do
    sleep 10 &
    wait "$!"
    total=0
    line=""
    for pid in "${ORIGIN_PIDS[@]}"; do
      n=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
      total=$((total + n))
      line+="$pid:$n "
    done
    if [ "$total" -gt "$best" ]; then
      best=$total
      echo "${line}(total $total)" >"$WORK/origin-fds"
    fi
  done
}

# ---- main -------------------------------------------------------------------------------------

mkdir -p "$RESULTS_DIR"
build
header
"row_${ROW//-/_}"
log "saved $RESULT_JSON and $RESULT_TXT"
