#!/usr/bin/env bash
# A cluster on one machine, to try scale-out: PostgreSQL (Optuna's storage and MLflow's
# backend store) and an MLflow tracking server, both bound to 127.0.0.1.
#   scripts/cluster.sh start | stop | env
# CLUSTER_DIR (default .cluster), PG_PORT (5433), MLFLOW_PORT (5001) choose where; the
# database password is in CLUSTER_DIR/password (mode 0600), and in the printed storage URL.
set -euo pipefail
dir=$(mkdir -p "${CLUSTER_DIR:-.cluster}" && cd "${CLUSTER_DIR:-.cluster}" && pwd)
pg_port=${PG_PORT:-5433}
mlflow_port=${MLFLOW_PORT:-5001}
python=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
pg_bin=$(dirname "$(readlink -f "$(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl | tail -n 1)")")
# PostgreSQL asks for a password on TCP (scram-sha-256), generated once into a file only
# its owner reads; peer authentication on its private socket.
secret="$dir/password"
if [ ! -f "$secret" ]; then
  (umask 077 && "$python" -c "import secrets; print(secrets.token_hex(16))" >"$secret")
fi
export PGPASSWORD=$(cat "$secret")
db_url="postgresql://postgres:$PGPASSWORD@127.0.0.1:$pg_port"

as_postgres() {  # PostgreSQL refuses to run as root
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
# As root, the server runs as user postgres, which may not reach $dir (a private temp
# folder, say): its files then live in a folder of its own, named after $dir.
pg_home=$dir
if [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -w "$dir"; then
  pg_home=/tmp/sweeper-pg-$(echo "$dir" | md5sum | cut -c1-12)
fi

case "${1:-}" in
start)
  if [ ! -f "$pg_home/pg/PG_VERSION" ]; then
    mkdir -p "$pg_home/pg" "$pg_home/socket"
    if [ "$(id -u)" = 0 ]; then chown postgres "$pg_home" "$pg_home/pg" "$pg_home/socket"; fi
    pwfile="$pg_home/pwfile"
    (umask 077 && echo "$PGPASSWORD" >"$pwfile")
    if [ "$(id -u)" = 0 ]; then chown postgres "$pwfile"; fi
    as_postgres "$pg_bin/initdb" -D "$pg_home/pg" -U postgres --pwfile="$pwfile" \
      --auth-local=peer --auth-host=scram-sha-256 >"$dir/initdb.log"
    rm -f "$pwfile"
  fi
  as_postgres "$pg_bin/pg_ctl" -D "$pg_home/pg" -l "$pg_home/pg.log" -w start -o \
    "-p $pg_port -c listen_addresses=127.0.0.1 -k $pg_home/socket -c max_connections=200" \
    >/dev/null
  for db in optuna mlflow; do
    as_postgres "$pg_bin/psql" -h 127.0.0.1 -p "$pg_port" -U postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1 ||
      as_postgres "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres "$db"
  done
  setsid "$python" -m mlflow server --backend-store-uri "$db_url/mlflow" \
    --artifacts-destination "$dir/artifacts" --host 127.0.0.1 --port "$mlflow_port" \
    --workers 2 >"$dir/mlflow.log" 2>&1 &
  echo $! >"$dir/mlflow.pid"
  for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$mlflow_port/health" >/dev/null && break
    sleep 0.5
  done
  curl -sf "http://127.0.0.1:$mlflow_port/health" >/dev/null ||
    { echo "mlflow server did not start; see $dir/mlflow.log" >&2; exit 1; }
  "$0" env
  ;;
stop)
  if [ -f "$dir/mlflow.pid" ]; then
    kill -- "-$(cat "$dir/mlflow.pid")" 2>/dev/null || true
    rm -f "$dir/mlflow.pid"
  fi
  if [ -f "$pg_home/pg/postmaster.pid" ]; then
    as_postgres "$pg_bin/pg_ctl" -D "$pg_home/pg" -m fast stop >/dev/null
  fi
  echo "cluster stopped"
  ;;
env)
  echo "export SWEEPER_STORAGE=$db_url/optuna"
  echo "export MLFLOW_TRACKING_URI=http://127.0.0.1:$mlflow_port"
  ;;
*)
  echo "usage: $0 start|stop|env" >&2
  exit 2
  ;;
esac
