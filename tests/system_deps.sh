#!/usr/bin/env bash
# The system programs the test suite starts (`make test` runs this first): redis-server,
# PostgreSQL's initdb/postgres, Chromium (Playwright drives Debian's chromium through
# executable_path; no browser download) and python3-venv. Missing ones are installed with
# apt-get as root (or through passwordless sudo); otherwise this prints the exact command
# to run and fails.
#   LITEGATE_PG_ROOT             where PostgreSQL's versioned bin dirs live (/usr/lib/postgresql)
#   LITEGATE_SYSTEM_DEPS_DRY_RUN=1  print the install command instead of running it
set -euo pipefail

pg_root="${LITEGATE_PG_ROOT:-/usr/lib/postgresql}"
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
compgen -G "$pg_root/*/bin/initdb" >/dev/null || command -v initdb >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
# `make` creates .venv next; Debian ships venv support separately.
if [ ! -x .venv/bin/python ] && ! python3 -c 'import ensurepip' 2>/dev/null; then
  missing+=(python3-venv)
fi
# promtool and the prometheus server (both in Debian's prometheus package) only once a
# test runs them: the alert-rule checks and the live-scrape test.
if grep -rqs promtool --include='*.py' "$(dirname "$0")"; then
  { command -v promtool && command -v prometheus; } >/dev/null || missing+=(prometheus)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

install=(apt-get install -y --no-install-recommends "${missing[@]}")
echo "make test needs: ${missing[*]}" >&2
if ! command -v apt-get >/dev/null; then
  echo "no apt-get here: install ${missing[*]} with your system's package manager, then rerun make test" >&2
  exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
  run=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  run=(sudo)
else
  echo "run this once, then rerun make test:" >&2
  echo "  sudo apt-get update && sudo ${install[*]}" >&2
  exit 1
fi
if [ "${LITEGATE_SYSTEM_DEPS_DRY_RUN:-}" = 1 ]; then
  echo "would run: ${run[*]:+${run[*]} }apt-get update && ${run[*]:+${run[*]} }${install[*]}"
  exit 0
fi
echo "installing ${missing[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
"${run[@]}" apt-get update -qq
"${run[@]}" "${install[@]}" -qq >/dev/null
echo "installed ${missing[*]}" >&2
