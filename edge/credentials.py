"""Secrets in the config: where the MQTT password comes from, and a config fingerprint that does not leak them.

The broker password is taken from exactly one place: `mqtt.password` (in the YAML), `mqtt.password_file` (a file
not readable by everyone: the installer writes /etc/edge/mqtt.password, mode 0600), or the environment variable
EDGE_MQTT_PASSWORD (systemd's `Environment=`/`LoadCredential=`). Two places are a config error: which one wins
would be a guess.

`config_fingerprint` is what the box publishes, retained, as `config_hash` in its status: a sha256 of the loaded
config with every secret removed (the password, and the password inside camera URLs). A hash of the file itself
would let anyone who reads the status test guesses of the password offline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any, Mapping, Optional, TypeVar

from edge.capture import redact
from edge.errors import ConfigError

ENV_PASSWORD = "EDGE_MQTT_PASSWORD"
MAX_PASSWORD_FILE_BYTES = 4096

C = TypeVar("C")


def read_password_file(path: Path, key: str = "mqtt.password_file") -> str:
    """The password in `path` (one trailing newline dropped), or ConfigError naming `key`; never says what the file
    holds."""
    where = f"{key} {path}"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{where}: not a regular file")
        if info.st_mode & stat.S_IROTH:
            raise ConfigError(f"{where}: readable by everyone; make it private (chmod 600 {path})")
        if info.st_size > MAX_PASSWORD_FILE_BYTES:
            raise ConfigError(f"{where}: {info.st_size} bytes is too large for a password file")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot be read ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    password = text[:-1] if text.endswith("\n") else text
    password = password[:-1] if password.endswith("\r") else password
    if not password or "\n" in password:
        raise ConfigError(f"{where}: must hold the password on one line")
    return password


def mqtt_password(mqtt: Any, environ: Mapping[str, str]) -> Optional[str]:
    """The MQTT password from its one source (see the module doc), or None when none is given."""
    from_env = environ.get(ENV_PASSWORD) or None
    sources = [
        name
        for name, given in (
            ("mqtt.password", mqtt.password is not None),
            ("mqtt.password_file", mqtt.password_file is not None),
            (ENV_PASSWORD, from_env is not None),
        )
        if given
    ]
    if len(sources) > 1:
        raise ConfigError(f"the MQTT password is given twice ({' and '.join(sources)}): keep one")
    if from_env is not None and mqtt.username is None:
        raise ConfigError(f"{ENV_PASSWORD} is set but mqtt.username is not")
    if mqtt.password_file is not None:
        return read_password_file(Path(mqtt.password_file))
    return from_env if from_env is not None else mqtt.password  # type: ignore[no-any-return]


def with_mqtt_password(config: C, environ: Optional[Mapping[str, str]] = None) -> C:
    """`config` with mqtt.password filled in from its source (and password_file, now read, cleared)."""
    mqtt = config.mqtt  # type: ignore[attr-defined]
    password = mqtt_password(mqtt, os.environ if environ is None else environ)
    if password == mqtt.password:
        return config
    resolved = dataclasses.replace(mqtt, password=password, password_file=None)
    return dataclasses.replace(config, mqtt=resolved)  # type: ignore[type-var]


def _without_secrets(value: Any, key: str = "") -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _without_secrets(getattr(value, f.name), f.name) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_without_secrets(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _without_secrets(v, str(k)) for k, v in value.items()}
    if key == "password":
        return None
    if key == "url" and isinstance(value, str):
        return redact(value)
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def config_fingerprint(config: Any) -> str:
    """sha256 of the config's values with the secrets left out: changes when the config does, reveals nothing."""
    text = json.dumps(_without_secrets(config), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
