#!/usr/bin/env bash
# Debian packages the tests and benchmarks use: ruby + ruby-http (the Rails client
# contract test), wrk (benchmarks) and chromium (the dashboard's browser test, driven
# by playwright; never `playwright install`). Installs with apt as root; otherwise prints
# the command and carries on (the tests that need them then say they were skipped).
set -uo pipefail
want=()
for tool in "$@"; do
  case "$tool" in
    ruby) ruby -e 'require "http"' >/dev/null 2>&1 || want+=(ruby ruby-http) ;;
    wrk) command -v wrk >/dev/null || want+=(wrk) ;;
    chromium) [ -x /usr/bin/chromium ] || want+=(chromium) ;;
    *) echo "unknown tool $tool" >&2; exit 2 ;;
  esac
done
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "installing ${want[*]} with apt..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq "${want[@]}" >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq "${want[@]}" >/dev/null; }
else
  echo "missing ${want[*]}: sudo apt-get install -y ${want[*]}" >&2
fi
