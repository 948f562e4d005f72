#!/usr/bin/env bash
# Install the system packages the boundary tests need (Debian 12 / Raspberry Pi OS / Ubuntu), as root:
#   ffmpeg + GStreamer with gst-rtsp-server and PyGObject  -> scripts/rtsp_server.py, a real RTSP camera
#   mosquitto                                               -> a real MQTT broker (tests start their own)
#   systemd                                                 -> systemd-analyze checks systemd/edge.service offline
#   python3-opencv (the distribution's OpenCV, with GStreamer) -> a camera `pipeline:` opened for real
#                                                              (tests/test_system_opencv.py, install_box.sh --system-opencv)
#   chromium + chromium-driver                              -> the central console's browser tests (selenium drives
#                                                              Debian's own browser; nothing downloads one)
#   python3-aiosmtpd                                        -> a real SMTP server (STARTTLS/TLS + AUTH) that the
#                                                              report e-mail test starts (tests/smtp_server.py)
#   postgresql                                              -> the central's PostgreSQL back-end: tests start a
#                                                              throwaway cluster of their own (tests/pg.py)
# Idempotent: packages already installed are skipped, and when all are present it exits at once (<1 s).
# The mosquitto service is stopped and disabled: tests start their own broker on a loopback port.
set -euo pipefail

PACKAGES=(
    ffmpeg
    python3-gi
    gir1.2-gst-rtsp-server-1.0
    gstreamer1.0-rtsp
    gstreamer1.0-tools
    gstreamer1.0-plugins-base
    gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad
    gstreamer1.0-plugins-ugly
    gstreamer1.0-libav
    mosquitto
    systemd
    python3-opencv
    chromium
    chromium-driver
    python3-aiosmtpd
    postgresql
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = "installed" ] || missing+=("$pkg")
done

quiet_mosquitto() {
    # The broker package starts and enables its service; tests want port 1883 free and no stray daemon.
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now mosquitto.service >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
        service mosquitto stop >/dev/null 2>&1 || true
    fi
    if command -v update-rc.d >/dev/null 2>&1; then
        update-rc.d mosquitto disable >/dev/null 2>&1 || true
    fi
}

if [ ${#missing[@]} -eq 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        quiet_mosquitto
    fi
    echo "install_system_deps: all ${#PACKAGES[@]} packages present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_system_deps: missing ${missing[*]}; run as root (sudo $0)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Keep the broker's service from starting during install where policy-rc.d is honoured (Debian's invoke-rc.d).
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    own_policy=1
fi
cleanup() { if [ "$own_policy" -eq 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

echo "install_system_deps: installing ${missing[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
quiet_mosquitto
echo "install_system_deps: done"
