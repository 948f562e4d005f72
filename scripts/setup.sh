#!/usr/bin/env bash
# Set up a fresh machine for development and tests: a virtualenv in .venv with edge and its dev tools.
# Idempotent; needs Python 3.10+ with venv, and the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "setup: $PYTHON is $("$PYTHON" --version 2>&1); edge needs Python 3.10 or newer" >&2
    exit 1
fi
# System packages for the boundary tests (ffmpeg, gst-rtsp-server, mosquitto): needs root, or sudo.
if [ "$(id -u)" = 0 ]; then
    bash scripts/install_system_deps.sh
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo bash scripts/install_system_deps.sh
else
    echo "setup: not root and no password-less sudo: run 'sudo bash scripts/install_system_deps.sh' yourself;" \
         "the RTSP and MQTT tests skip until then" >&2
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# dev: tests and tools; central: the central server's web console, office and mail (never on a box)
.venv/bin/python -m pip install --quiet -e ".[dev,central]"
.venv/bin/python -c "import cv2, numpy; from ai_edge_litert.interpreter import Interpreter" \
    || { echo "setup: the runtime packages do not import; see the pip output above" >&2; exit 1; }
echo "setup: ready (.venv, $(.venv/bin/python --version))"
