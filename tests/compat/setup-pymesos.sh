#!/usr/bin/env bash
# Installs pymesos 0.3.15 from PyPI into a venv at $1. Its dependency http-parser 0.9.0 cannot
# build its C extension on Python 3.11, so its pure-Python modules are installed by hand (the
# package falls back to them by itself).
set -euo pipefail
venv=$1
[ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import pymesos, http_parser.http' 2>/dev/null && exit 0
python3 -m venv "$venv"
"$venv/bin/pip" install -q --no-deps pymesos==0.3.15 six addict
tmp=$(mktemp -d)
"$venv/bin/pip" download -q --no-deps --no-binary :all: -d "$tmp" http-parser==0.9.0
tar xzf "$tmp"/http-parser-0.9.0.tar.gz -C "$tmp"
site=$("$venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
mkdir -p "$site/http_parser"
cp "$tmp"/http-parser-0.9.0/http_parser/{__init__,http,pyparser,util,_socketio,reader}.py "$site/http_parser/"
rm -rf "$tmp"
"$venv/bin/python" -c 'import pymesos, http_parser.http'
