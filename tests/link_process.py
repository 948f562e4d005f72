"""A Link in its own process, for the last-will test: prints READY once connected, then idles until killed.

python tests/link_process.py PORT DB_PATH DEVICE_ID SITE
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge.config import DeviceConfig  # noqa: E402
from edge.mqtt.contract import MqttConfig  # noqa: E402
from edge.mqtt.link import Link, LinkInfo  # noqa: E402


def main() -> None:
    port, db, device, site = sys.argv[1:5]
    config = MqttConfig(host="127.0.0.1", port=int(port), keepalive_s=5, reconnect_min_s=0.2, reconnect_max_s=1.0)
    link = Link(config, DeviceConfig(id=device, site=site), Path(db), LinkInfo("test", "model-a", "hash-a", 0))
    link.start()
    deadline = time.monotonic() + 10
    while not link.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    print("READY" if link.connected else "NOT CONNECTED", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
