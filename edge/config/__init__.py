"""The box's configuration: one YAML file, validated once into a frozen tree; each stage gets its own section."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Optional, Tuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.attendance import AttendanceConfig
from edge.capture import CameraConfig
from edge.config.tree import load_yaml_tree
from edge.crops import CropsConfig
from edge.detect import DetectorConfig
from edge.errors import ConfigError
from edge.liveness.decide import LivenessConfig
from edge.manifest import DEFAULT_MODELS_DIR
from edge.match import MatcherConfig
from edge.mqtt.contract import MqttConfig
from edge.ops.settings import OpsConfig
from edge.quality import QualityConfig
from edge.track import TrackerConfig

DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class DeviceConfig:
    """Who this box is: ids used in event ids and MQTT topics."""

    id: str = "edge-1"
    site: str = "default"
    timezone: Optional[str] = None
    """IANA time zone of the site (e.g. Asia/Seoul) for schedules and event times; None = the system's."""

    def __post_init__(self) -> None:
        for name in ("id", "site"):
            if not DEVICE_ID_PATTERN.match(getattr(self, name)):
                raise ValueError(f"{name} must be 1-64 letters, digits, '_' or '-', got {getattr(self, name)!r}")
        self.tz  # noqa: B018 - validates the zone name

    @property
    def tz(self) -> tzinfo:
        if self.timezone is None:
            return datetime.now().astimezone().tzinfo or timezone.utc
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone must be an IANA zone name such as Asia/Seoul, got {self.timezone!r}") from None


@dataclass(frozen=True)
class StorageConfig:
    """Where the box keeps its data."""

    database: Path = Path("var/edge.db")


@dataclass(frozen=True)
class EmbedderConfig:
    """The embedding model and its CPU threads."""

    models_dir: Optional[Path] = None
    """Folder with manifest.yml and the model; None means the models/ folder shipped with edge."""
    num_threads: int = 2

    @property
    def models_path(self) -> Path:
        return self.models_dir if self.models_dir is not None else DEFAULT_MODELS_DIR

    def __post_init__(self) -> None:
        if not 1 <= self.num_threads <= 16:
            raise ValueError(f"num_threads must be within 1..16, got {self.num_threads}")


@dataclass(frozen=True)
class Config:
    device: DeviceConfig = field(default_factory=DeviceConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    embedder: EmbedderConfig = field(default_factory=EmbedderConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    attendance: AttendanceConfig = field(default_factory=AttendanceConfig)
    cameras: Tuple[CameraConfig, ...] = ()
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    crops: CropsConfig = field(default_factory=CropsConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    ops: OpsConfig = field(default_factory=OpsConfig)

    def __post_init__(self) -> None:
        ids = [c.id for c in self.cameras]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"cameras: camera ids must be unique, {', '.join(duplicates)} repeated")
        if self.detector.model_dir is None and self.embedder.models_dir is not None:
            # one models folder on a box (/opt/edge/models): its manifest lists the detector and the embedder
            object.__setattr__(self, "detector", replace(self.detector, model_dir=str(self.embedder.models_dir)))


MAX_CONFIG_BYTES = 1024 * 1024


def load_config(path: Optional[Path]) -> Config:
    """Load and validate `path`; None gives the built-in defaults. The MQTT password stays where it is given
    (`edge run` and `check-config` read it with edge.credentials.with_mqtt_password; other commands need not)."""
    if path is None:
        return Config()
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: over {MAX_CONFIG_BYTES // 1024} KiB: not a config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (line {line}: {exc.reason})") from None
    return load_yaml_tree(Config, text, str(path))
