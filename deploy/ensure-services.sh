#!/usr/bin/env bash
# Make sure PostgreSQL and Redis answer locally. When one is missing: as root, install
# it with apt and start it; otherwise print the exact command and fail.
# Services that already run are used as they are. Remote URLs are left to their owners.
set -euo pipefail

is_local() { case "${1:-}" in ""|*///*|*localhost*|*127.0.0.1*|*"[::1]"*) return 0;; *) return 1;; esac; }
as_root() { [ "$(id -u)" = 0 ]; }
APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_up() { command -v pg_isready >/dev/null && { pg_isready -q || pg_isready -q -h 127.0.0.1; }; }
redis_up() { command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

start_pg() {
  local ver
  ver=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n1)
  [ -n "$ver" ] && pg_ctlcluster --skip-systemctl-redirect "$ver" main start 2>/dev/null || service postgresql start >/dev/null 2>&1 || true
  for _ in $(seq 1 30); do pg_up && return 0; sleep 1; done
  return 1
}

if is_local "${MAIN_DATABASE_URL:-}" || is_local "${RECOMMENDATIONS_DATABASE_URL:-}"; then
  if ! pg_up; then
    if as_root; then
      command -v pg_ctlcluster >/dev/null || { echo "installing postgresql with apt..."; apt_install postgresql; }
      start_pg || { echo "PostgreSQL did not start; see /var/log/postgresql/" >&2; exit 1; }
    else
      echo "PostgreSQL is not running. Install and start it with:" >&2
      echo "  sudo apt-get install -y postgresql && sudo service postgresql start" >&2
      exit 1
    fi
  fi
  # The default URLs use the local socket as the current OS user: make sure that role exists.
  if ! psql -d postgres -Atqc "select 1" >/dev/null 2>&1; then
    if as_root; then
      su postgres -c "createuser --superuser $(id -un)"
    else
      echo "PostgreSQL has no role for $(id -un). Create it with:" >&2
      echo "  sudo -u postgres createuser --createdb $(id -un)" >&2
      exit 1
    fi
  fi
fi

if is_local "${RECOMMENDATIONS_REDIS_URL:-}"; then
  if ! redis_up; then
    if as_root; then
      command -v redis-server >/dev/null || { echo "installing redis-server with apt..."; apt_install redis-server; }
      mkdir -p /var/lib/redis /var/log/redis
      redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/recs.log
      for _ in $(seq 1 20); do redis_up && break; sleep 0.5; done
      redis_up || { echo "Redis did not start; see /var/log/redis/recs.log" >&2; exit 1; }
    else
      echo "Redis is not running. Install and start it with:" >&2
      echo "  sudo apt-get install -y redis-server && sudo service redis-server start" >&2
      exit 1
    fi
  fi
fi
echo "services: postgresql and redis are reachable"
