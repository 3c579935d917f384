#!/usr/bin/env bash
# Starts or stops a private nginx + Nchan for the benchmarks (never the system service).
#
#   bench/nchan.sh start PORT   renders bench/nchan.conf into /tmp/ridecast-nchan-PORT/, starts
#                               nginx there and prints the master's and the workers' pids on one
#                               line (pass every one with --server-pid)
#   bench/nchan.sh stop PORT    stops that nginx and removes its directory
#   bench/nchan.sh pids PORT    prints the pids again
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

usage() {
  echo "usage: $0 start|stop|pids PORT" >&2
  exit 2
}

[ $# -eq 2 ] || usage
action=$1
port=$2
case "$port" in '' | *[!0-9]*) usage ;; esac
prefix=/tmp/ridecast-nchan-$port
module=/usr/lib/nginx/modules/ngx_nchan_module.so

master_pid() {
  [ -s "$prefix/nginx.pid" ] && cat "$prefix/nginx.pid"
}

# The master first, then its workers.
all_pids() {
  local master
  master=$(master_pid) || return 1
  kill -0 "$master" 2>/dev/null || return 1
  local workers
  workers=$(pgrep -P "$master" | sort -n | tr '\n' ' ')
  echo "$master ${workers% }"
}

case "$action" in
  start)
    command -v nginx >/dev/null || { echo "nginx is not installed (apt-get install nginx libnginx-mod-nchan)" >&2; exit 1; }
    [ -e "$module" ] || { echo "$module is missing (apt-get install libnginx-mod-nchan)" >&2; exit 1; }
    if all_pids >/dev/null 2>&1; then
      echo "an nginx already runs in $prefix (stop it first)" >&2
      exit 1
    fi
    rm -rf "$prefix"
    mkdir -p "$prefix/logs" "$prefix/tmp"
    sed -e "s|@PORT@|$port|g" -e "s|@PREFIX@|$prefix|g" "$here/nchan.conf" >"$prefix/nginx.conf"
    # -e: the error log before the configuration is read (the default one is the system's).
    nginx -c "$prefix/nginx.conf" -p "$prefix/" -e "$prefix/logs/error.log"
    workers=$(nproc)
    for _ in $(seq 100); do
      if pids=$(all_pids 2>/dev/null) && [ "$(wc -w <<<"$pids")" -gt "$workers" ]; then
        echo "nginx+nchan on 127.0.0.1:$port (prefix $prefix): master and workers $pids" >&2
        echo "$pids"
        exit 0
      fi
      sleep 0.1
    done
    echo "nginx did not start; its log:" >&2
    cat "$prefix/logs/error.log" >&2 || true
    exit 1
    ;;
  pids)
    all_pids
    ;;
  stop)
    if master=$(master_pid); then
      kill -TERM "$master" 2>/dev/null || true
      for _ in $(seq 100); do
        kill -0 "$master" 2>/dev/null || break
        sleep 0.1
      done
      if kill -0 "$master" 2>/dev/null; then
        kill -KILL "$master" 2>/dev/null || true
      fi
    fi
    rm -rf "$prefix"
    ;;
  *) usage ;;
esac
