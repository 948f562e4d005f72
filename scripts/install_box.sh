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

python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "install_box: Python 3.10+ is needed" >&2; exit 1; }
id edge >/dev/null 2>&1 || useradd --system --home /var/lib/edge --shell /usr/sbin/nologin --groups video edge
install -d -o edge -g edge -m 0750 /var/lib/edge
install -d -m 0755 /etc/edge /opt/edge
[ -x /opt/edge/venv/bin/python ] || python3 -m venv /opt/edge/venv
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
systemctl daemon-reload
systemctl enable edge.service
if /opt/edge/venv/bin/edge check-config /etc/edge/edge.yml; then
    systemctl restart edge.service
else
    echo "install_box: fix /etc/edge/edge.yml (see the error above), then: systemctl restart edge" >&2
fi
