#!/usr/bin/env bash
# Install edge on a camera box (Raspberry Pi OS Bookworm, Ubuntu/JetPack 6), as root, from this checkout:
#   sudo bash scripts/install_box.sh
# Puts a virtualenv in /opt/edge/venv, the config in /etc/edge/edge.yml (kept if present), data in /var/lib/edge,
# and the systemd unit edge.service (enabled, started once the config checks out).
#   bash scripts/install_box.sh --print-config    prints the config it would write (no root needed)
#   sudo bash scripts/install_box.sh --central-key central.pub --mqtt-secret box-17.secret
#        also installs the central's public key (/etc/edge/central.pub: gallery commands must be signed with it) and
#        the box's broker password (/etc/edge/mqtt.password, mode 0600, owner edge); see README "Security"
#   sudo bash scripts/install_box.sh --system-opencv
#        hardware decoding: the venv sees the distribution's OpenCV, built with GStreamer (Debian/Ubuntu/Pi OS:
#        apt install python3-opencv; a Jetson: JetPack's OpenCV) and its numpy, instead of pip's OpenCV (no GStreamer)
#   bash scripts/install_box.sh --venv DIR [--system-opencv]
#        only builds the virtualenv at DIR, the same way (no root, nothing else installed; tests use it)
# Releases, upgrade and rollback: each install builds /opt/edge/releases/<version>/{venv,models} (the version from
# `git describe`); /opt/edge/venv and /opt/edge/models are symlinks to the active release, /opt/edge/previous to the
# one before, which is kept. A venv installed before releases becomes the release "legacy".
#   sudo bash scripts/install_box.sh --version v0.2.0    install (or re-activate) that tag or commit of this checkout
#   sudo bash scripts/install_box.sh --rollback          back to the previous release, and restart edge
#   bash scripts/install_box.sh --releases               list the releases, the active and the previous one
#   EDGE_HOME=DIR bash scripts/install_box.sh --release-only [--version REF]
#        only builds and activates a release under DIR (no root, nothing else installed; tests use it)
# On the broker host (mosquitto, with edge installed), once per box: its own login, and the ACL keeping it to its
# own topics (writes /etc/mosquitto/edge.{acl,passwd} and conf.d/edge.conf; the password goes to /root/edge-DEVICE.secret):
#   sudo bash scripts/install_box.sh --broker-login SITE DEVICE
set -euo pipefail
cd "$(dirname "$0")/.."

broker_login() {  # on the broker host: the ACL, the central's login (once), the box's login; then reload mosquitto
    local site=$1 device=$2 etc=${MOSQUITTO_ETC:-/etc/mosquitto} secrets=${EDGE_SECRETS:-/root}
    local edge=${EDGE:-$(command -v edge || echo /opt/edge/venv/bin/edge)}
    "$edge" broker acl --prefix "${EDGE_PREFIX:-edge/v1}" -o "$etc/edge.acl"
    # rewritten each time: an older edge.conf may lack use_username_as_clientid (no session takeover)
    "$edge" broker conf --password-file "$etc/edge.passwd" --acl-file "$etc/edge.acl" > "$etc/conf.d/edge.conf"
    local user
    for user in edge-central edge-operator; do  # the central server's login and the operator's commands'
        grep -qs "^$user:" "$etc/edge.passwd" \
            || "$edge" broker add-central --user "$user" --password-file "$etc/edge.passwd" \
                --secret-out "$secrets/$user.secret"
    done
    "$edge" broker add-box --password-file "$etc/edge.passwd" --site "$site" --device "$device" \
        --secret-out "$secrets/edge-$device.secret"
    # hashes only, but mosquitto (user mosquitto) must read them
    if chgrp mosquitto "$etc/edge.passwd" 2>/dev/null; then chmod 0640 "$etc/edge.passwd"; fi
    if [ -d /run/systemd/system ] && systemctl reload-or-restart mosquitto; then
        echo "install_box: mosquitto reloaded"
    else
        echo "install_box: restart mosquitto to use the new login"
    fi
    echo "install_box: copy $secrets/edge-$device.secret to the box (install_box.sh --mqtt-secret FILE), then delete it"
}

box_config() {  # the example config with the box's paths
    sed -e 's|database: var/edge.db|database: /var/lib/edge/edge.db|' \
        -e 's|  models_dir: null |  models_dir: /opt/edge/models |' config/edge.example.yml
}
build_venv() {  # DIR SYSTEM_OPENCV: a virtualenv with edge and its runtime, from this checkout
    local venv=$1 system_opencv=$2
    if [ "$system_opencv" = 1 ]; then
        "$PYTHON" -c 'import cv2, re, sys; sys.exit(not re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()))' \
            2>/dev/null || { echo "install_box: $PYTHON has no OpenCV with GStreamer: apt install python3-opencv" \
                                  "(on a Jetson: JetPack's OpenCV)" >&2; return 1; }
        # a venv made without the system's packages cannot see the system OpenCV: make it again (the old one is kept)
        if [ -f "$venv/pyvenv.cfg" ] && ! grep -qs '^include-system-site-packages = true' "$venv/pyvenv.cfg"; then
            rm -rf "$venv.previous" && mv "$venv" "$venv.previous"
        fi
        [ -x "$venv/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$venv"
    else
        [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    if [ "$system_opencv" = 1 ]; then
        # everything but pip's OpenCV; numpy pinned to the system's, which its OpenCV was built against
        local numpy
        numpy=$("$PYTHON" -c 'import numpy; print(numpy.__version__)')
        "$venv/bin/python" -m pip uninstall --quiet --yes opencv-python-headless 2>/dev/null || true
        "$PYTHON" scripts/runtime_requirements.py --without opencv-python-headless > "$venv/edge-requirements.txt"
        echo "numpy==$numpy" > "$venv/edge-constraints.txt"
        "$venv/bin/python" -m pip install --quiet -r "$venv/edge-requirements.txt" -c "$venv/edge-constraints.txt"
        "$venv/bin/python" -m pip install --quiet --no-deps .  # last: pip would want its OpenCV for edge
        "$venv/bin/python" -c 'import cv2, re, sys; sys.exit(not re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()))' \
            || { echo "install_box: the venv does not see the system OpenCV with GStreamer" >&2; return 1; }
    else
        "$venv/bin/python" -m pip install --quiet .
    fi
}

EDGE_HOME=${EDGE_HOME:-/opt/edge}

git_here() { git -c safe.directory="$PWD" "$@"; }  # root installing from a user's checkout

release_label() {  # REF (empty: this checkout as it is) -> the release's directory name
    local label
    label=$(git_here describe --tags --always "${1:-HEAD}" 2>/dev/null || echo unknown)
    if [ -z "$1" ] && [ -n "$(git_here status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        label="$label-dirty-$(date +%Y%m%d%H%M%S)"  # uncommitted changes: never taken for the commit's release
    fi
    [ "$system_opencv" = 0 ] || label="$label-system-opencv"
    echo "$label" | tr -c 'A-Za-z0-9._\n-' '_'
}

pep440_of() {  # a git describe label -> the version setuptools-scm cannot compute without .git (git archive)
    local label=${1#v}
    if [[ $label =~ ^([0-9]+(\.[0-9]+)*)$ ]]; then echo "${BASH_REMATCH[1]}"
    elif [[ $label =~ ^([0-9]+(\.[0-9]+)*)-([0-9]+)-g([0-9a-f]+) ]]; then
        echo "${BASH_REMATCH[1]}.post${BASH_REMATCH[3]}+g${BASH_REMATCH[4]}"
    else echo "0.1.0+g${label%%-*}"; fi
}

relink() { ln -sfn "$1" "$2.new" && mv -Tf "$2.new" "$2"; }  # TARGET LINK, replaced in one rename

install_release() {  # LABEL REF: $EDGE_HOME/releases/LABEL/{venv,models} from this checkout (REF empty) or REF
    local label=$1 ref=$2 dir="$EDGE_HOME/releases/$1" src=.
    if [ -x "$dir/venv/bin/edge" ]; then
        echo "install_box: release $label is already built"
        return 0
    fi
    if [ -n "$ref" ]; then  # that commit's own files, whatever the checkout has now
        src=$(mktemp -d)
        git_here archive "$ref" | tar -x -C "$src"
        SETUPTOOLS_SCM_PRETEND_VERSION=$(pep440_of "$label")
        export SETUPTOOLS_SCM_PRETEND_VERSION
    fi
    install -d -m 0755 "$dir"
    if ! (cd "$src" && build_venv "$dir/venv" "$system_opencv"); then
        rm -rf "$dir"
        return 1
    fi
    # the model is data, not code: it lives beside the venv and the config points at $EDGE_HOME/models
    install -d -m 0755 "$dir/models"
    install -m 0644 "$src"/models/manifest.yml "$src"/models/LICENSE-* "$src"/models/README.md "$src"/models/*.tflite \
        "$dir/models/"
    [ "$src" = . ] || rm -rf "$src"
}

active_release() {  # the release $EDGE_HOME/venv points at, or nothing
    { readlink "$EDGE_HOME/venv" 2>/dev/null || true; } | sed -n 's|^releases/\([^/]*\)/venv$|\1|p'
}

previous_release() {
    { readlink "$EDGE_HOME/previous" 2>/dev/null || true; } | sed -n 's|^releases/||p'
}

activate() {  # LABEL: venv and models point at it; the release active until now becomes the previous one
    local label=$1 current
    if [ -d "$EDGE_HOME/venv" ] && [ ! -L "$EDGE_HOME/venv" ]; then  # installed before releases: kept as "legacy"
        install -d -m 0755 "$EDGE_HOME/releases/legacy"
        mv "$EDGE_HOME/venv" "$EDGE_HOME/releases/legacy/venv"
        if [ -d "$EDGE_HOME/models" ] && [ ! -L "$EDGE_HOME/models" ]; then
            mv "$EDGE_HOME/models" "$EDGE_HOME/releases/legacy/models"
        fi
        relink releases/legacy/venv "$EDGE_HOME/venv"  # its scripts name /opt/edge/venv/bin/python: still true
    fi
    current=$(active_release)
    if [ -n "$current" ] && [ "$current" != "$label" ]; then relink "releases/$current" "$EDGE_HOME/previous"; fi
    relink "releases/$label/venv" "$EDGE_HOME/venv"
    relink "releases/$label/models" "$EDGE_HOME/models"
    echo "install_box: release $label is active${current:+ (previous: $current)}"
}

rollback() {
    local previous
    previous=$(previous_release)
    [ -n "$previous" ] && [ -d "$EDGE_HOME/releases/$previous" ] \
        || { echo "install_box: no previous release to roll back to in $EDGE_HOME" >&2; return 1; }
    activate "$previous"
}

list_releases() {
    local active previous
    active=$(active_release)
    previous=$(previous_release)
    for dir in "$EDGE_HOME"/releases/*/; do
        [ -d "$dir" ] || continue
        local name mark=""
        name=$(basename "$dir")
        [ "$name" = "$active" ] && mark=" (active)"
        [ "$name" = "$previous" ] && mark=" (previous)"
        echo "$name$mark"
    done
}

restart_edge() {
    if [ -d /run/systemd/system ] && systemctl is-enabled --quiet edge.service 2>/dev/null; then
        systemctl restart edge.service && echo "install_box: edge restarted"
    fi
}

central_key="" mqtt_secret="" system_opencv=0 venv_only="" version_ref="" rollback_now=0 release_only=0
while [ $# -gt 0 ]; do
    case "$1" in
        --print-config) box_config; exit 0 ;;
        --broker-login) [ $# -ge 3 ] || { echo "install_box: --broker-login SITE DEVICE" >&2; exit 2; }
                        [ "$(id -u)" = 0 ] || { echo "install_box: run as root (sudo)" >&2; exit 1; }
                        broker_login "$2" "$3"; exit 0 ;;
        --central-key) central_key=${2:?--central-key FILE}; shift 2 ;;
        --mqtt-secret) mqtt_secret=${2:?--mqtt-secret FILE}; shift 2 ;;
        --system-opencv) system_opencv=1; shift ;;
        --venv) venv_only=${2:?--venv DIR}; shift 2 ;;
        --version) version_ref=${2:?--version TAG-OR-COMMIT}; shift 2 ;;
        --rollback) rollback_now=1; shift ;;
        --releases) list_releases; exit 0 ;;
        --release-only) release_only=1; shift ;;
        *) echo "install_box: unknown option $1" >&2; exit 2 ;;
    esac
done

# The system's Python (the service user must be able to run it: not one under /root, e.g. pyenv); PYTHON overrides.
PYTHON=${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || { echo "install_box: $PYTHON is older than 3.10; edge needs Python 3.10+" >&2; exit 1; }
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
    || { echo "install_box: $PYTHON cannot make a virtualenv: apt install python3-venv" >&2; exit 1; }
if [ -n "$venv_only" ]; then
    build_venv "$venv_only" "$system_opencv"
    exit $?
fi
[ "$release_only" = 1 ] || [ "$(id -u)" = 0 ] || { echo "install_box: run as root (sudo)" >&2; exit 1; }
if [ "$rollback_now" = 1 ]; then
    rollback || exit 1
    [ "$release_only" = 1 ] || restart_edge
    exit 0
fi
if [ "$release_only" = 0 ]; then
    id edge >/dev/null 2>&1 || useradd --system --home /var/lib/edge --shell /usr/sbin/nologin --groups video edge
    install -d -o edge -g edge -m 0750 /var/lib/edge
    install -d -m 0755 /etc/edge
fi
install -d -m 0755 "$EDGE_HOME"
if [ -n "$version_ref" ]; then
    git_here rev-parse --verify --quiet "$version_ref^{commit}" >/dev/null \
        || { echo "install_box: $version_ref is no tag or commit of this checkout" >&2; exit 1; }
fi
label=$(release_label "$version_ref")
install_release "$label" "$version_ref" || exit 1
activate "$label"
[ "$release_only" = 0 ] || exit 0
if ! runuser -u edge -- /opt/edge/venv/bin/python -c '' 2>/dev/null; then
    echo "install_box: the edge user cannot run /opt/edge/venv/bin/python ($(readlink -f /opt/edge/venv/bin/python));" \
        "remove /opt/edge/venv and set PYTHON to a system-wide Python 3.10+" >&2
    exit 1
fi
if [ ! -f /etc/edge/edge.yml ]; then
    box_config > /etc/edge/edge.yml.new
    install -m 0640 -g edge /etc/edge/edge.yml.new /etc/edge/edge.yml
    rm -f /etc/edge/edge.yml.new
    echo "install_box: wrote /etc/edge/edge.yml from the example: set device, cameras and schedule, then"
    echo "             systemctl restart edge"
fi
# trust: the central's public key (commands are refused without one) and the box's own broker password
if [ -n "$central_key" ]; then install -m 0644 "$central_key" /etc/edge/central.pub; fi
if [ -n "$mqtt_secret" ]; then install -m 0600 -o edge -g edge "$mqtt_secret" /etc/edge/mqtt.password; fi
[ -f /etc/edge/central.pub ] || echo "install_box: no /etc/edge/central.pub: this box refuses every gallery command" \
    "until the central's public key is installed (--central-key FILE) and set as mqtt.central_key_file"
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
