#!/usr/bin/env bash
# Install edge on a camera box (Raspberry Pi OS Bookworm, Ubuntu/JetPack 6), as root, from this checkout:
#   sudo bash scripts/install_box.sh
# Puts a virtualenv in /opt/edge/venv, the config in /etc/edge/edge.yml (kept if present), data in /var/lib/edge,
# and the systemd unit edge.service (enabled, started once the config checks out).
#   bash scripts/install_box.sh --print-config    prints the config it would write (no root needed)
set -euo pipefail
cd "$(dirname "$0")/.."

box_config() {  # the example config with the box's paths
    sed -e 's|database: var/edge.db|database: /var/lib/edge/edge.db|' \
        -e 's|  models_dir: null |  models_dir: /opt/edge/models |' config/edge.example.yml
}
if [ "${1:-}" = "--print-config" ]; then box_config; exit 0; fi

[ "$(id -u)" = 0 ] || { echo "install_box: run as root (sudo)" >&2; exit 1; }

# The system's Python (the service user must be able to run it: not one under /root, e.g. pyenv); PYTHON overrides.
PYTHON=${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "install_box: $PYTHON is older than 3.10; edge needs Python 3.10+" >&2; exit 1; }
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
    || { echo "install_box: $PYTHON cannot make a virtualenv: apt install python3-venv" >&2; exit 1; }
id edge >/dev/null 2>&1 || useradd --system --home /var/lib/edge --shell /usr/sbin/nologin --groups video edge
install -d -o edge -g edge -m 0750 /var/lib/edge
install -d -m 0755 /etc/edge /opt/edge
[ -x /opt/edge/venv/bin/python ] || "$PYTHON" -m venv /opt/edge/venv
if ! runuser -u edge -- /opt/edge/venv/bin/python -c '' 2>/dev/null; then
    echo "install_box: the edge user cannot run /opt/edge/venv/bin/python ($(readlink -f /opt/edge/venv/bin/python));" \
        "remove /opt/edge/venv and set PYTHON to a system-wide Python 3.10+" >&2
    exit 1
fi
/opt/edge/venv/bin/python -m pip install --quiet --upgrade pip
/opt/edge/venv/bin/python -m pip install --quiet .
# the model is data, not code: it lives beside the venv and the config points at it
install -d -m 0755 /opt/edge/models
install -m 0644 models/manifest.yml models/LICENSE-SFACE.txt models/README.md models/*.tflite /opt/edge/models/
if [ ! -f /etc/edge/edge.yml ]; then
    box_config > /etc/edge/edge.yml.new
    install -m 0640 -g edge /etc/edge/edge.yml.new /etc/edge/edge.yml
    rm -f /etc/edge/edge.yml.new
    echo "install_box: wrote /etc/edge/edge.yml from the example: set device, cameras and schedule, then"
    echo "             systemctl restart edge"
fi
install -m 0644 systemd/edge.service /etc/systemd/system/edge.service
if ! /opt/edge/venv/bin/edge check-config /etc/edge/edge.yml; then
    echo "install_box: fix /etc/edge/edge.yml (see the error above), then: systemctl restart edge" >&2
    config_ok=0
else
    config_ok=1
fi
if [ ! -d /run/systemd/system ]; then  # a container or a chroot: installed, but nothing to enable here
    echo "install_box: systemd is not running; installed only (run: sudo -u edge /opt/edge/venv/bin/edge --config /etc/edge/edge.yml run)"
    exit 0
fi
systemctl daemon-reload
systemctl enable edge.service
if [ "$config_ok" = 1 ]; then
    systemctl restart edge.service
fi
