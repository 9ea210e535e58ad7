#!/usr/bin/env bash
# Installs two published Mesos v1 client libraries from PyPI into a venv at $1: pymesos 0.3.15
# and mesoshttp 0.4.2. pymesos's dependency http-parser 0.9.0 cannot build its C extension on
# Python 3.11, so its pure-Python modules are installed by hand (the package falls back to them
# by itself).
set -euo pipefail
venv=$1
# Tests run in parallel: one installs, the others wait for it.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock -w 300 9
[ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import pymesos, http_parser.http, mesoshttp' 2>/dev/null && exit 0
python3 -m venv "$venv"
"$venv/bin/pip" install -q mesoshttp==0.4.2
"$venv/bin/pip" install -q --no-deps pymesos==0.3.15 six addict
tmp=$(mktemp -d)
"$venv/bin/pip" download -q --no-deps --no-binary :all: -d "$tmp" http-parser==0.9.0
tar xzf "$tmp"/http-parser-0.9.0.tar.gz -C "$tmp"
site=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
mkdir -p "$site/http_parser"
cp "$tmp"/http-parser-0.9.0/http_parser/{__init__,http,pyparser,util,_socketio,reader}.py "$site/http_parser/"
rm -rf "$tmp"
"$venv/bin/python" -c 'import pymesos, http_parser.http, mesoshttp'
