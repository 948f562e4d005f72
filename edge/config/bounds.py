"""The range of every number in the config, checked when the YAML is loaded (edge/config/tree.py).

The sections' own checks say what makes sense together (max_s >= initial_s...); this table makes sure no number
is out of what the code below it can take: NaN and infinities are refused for every field, and every field is
bounded (paho refuses a keepalive over 65535 in its network thread; a huge timeout overflows a wait). A number
field missing from this table is still limited to DEFAULT_BOUNDS, and tests/test_config.py fails until it is added.
"""

from __future__ import annotations

from typing import Dict, Tuple

Bounds = Tuple[float, float]

DAY_S = 86400.0
DEFAULT_BOUNDS: Bounds = (-1e6, 1e6)

BOUNDS: Dict[str, Bounds] = {
    # edge.attendance
    "AttendanceConfig.min_frames": (1, 1000),
    "AttendanceConfig.min_score": (-1.0, 1.0),
    "AttendanceConfig.min_margin": (0.0, 2.0),
    "AttendanceConfig.min_quality": (0.0, 1.0),
    "AttendanceConfig.cooldown_s": (0.0, DAY_S),
    "AttendanceConfig.dedup_window_s": (0.0, DAY_S),
    "AttendanceConfig.outing_window_s": (0.0, DAY_S),
    "AttendanceConfig.unknown_min_frames": (1, 1000),
    "AttendanceConfig.unknown_camera_cooldown_s": (0.0, DAY_S),
    # edge.schedule
    "ScheduleConfig.grace_min": (0.0, 1440.0),
    "ScheduleConfig.early_leave_tolerance_min": (0.0, 1440.0),
    "ScheduleConfig.early_window_min": (0.0, 1440.0),
    # edge.capture
    "BackoffConfig.initial_s": (0.001, 3600.0),
    "BackoffConfig.max_s": (0.001, DAY_S),
    "BackoffConfig.factor": (1.0, 100.0),
    "BackoffConfig.jitter": (0.0, 1.0),
    "CameraConfig.max_fps": (0.0, 1000.0),
    "CameraConfig.open_timeout_s": (0.1, 3600.0),
    "CameraConfig.buffer_frames": (1, 100),
    "CameraConfig.max_lag_s": (0.0, 3.0),
    "CameraConfig.read_timeout_s": (0.1, 3600.0),
    "CameraConfig.line": (0.0, 1.0),
    "CameraConfig.door": (0.0, 1.0),
    # edge.config
    "EmbedderConfig.num_threads": (1, 16),
    # edge.mqtt.contract
    "MqttConfig.port": (1, 65535),
    "MqttConfig.keepalive_s": (5, 65535),
    "MqttConfig.reconnect_min_s": (0.01, 3600.0),
    "MqttConfig.reconnect_max_s": (0.01, DAY_S),
    "MqttConfig.max_message_bytes": (1024, 256 * 1024 * 1024),
    "MqttConfig.stats_interval_s": (1.0, DAY_S),
    "MqttConfig.redeliver_after_s": (1.0, DAY_S),
    "MqttConfig.backlog_rate": (0.01, 1e6),
    "MqttConfig.live_window_s": (1.0, 7 * DAY_S),
    # edge.crops
    "CropsConfig.retention_days": (0.0, 366.0),
    "CropsConfig.max_upload_bytes": (1024, 1024 * 1024),
    # edge.detect
    "DetectorConfig.min_score": (0.0, 1.0),
    "DetectorConfig.min_score_short": (0.0, 1.0),
    "DetectorConfig.nms_iou": (0.0, 1.0),
    "DetectorConfig.max_faces": (1, 1000),
    "DetectorConfig.small_side": (0, 100_000),
    "DetectorConfig.small_pad": (0.0, 2.0),
    "DetectorConfig.tile_above": (0, 100_000),
    "DetectorConfig.tile_size": (32, 100_000),
    "DetectorConfig.tile_overlap": (0.0, 0.5),
    "DetectorConfig.tile_min_score": (0.0, 1.0),
    "DetectorConfig.num_threads": (1, 64),
    "DetectorConfig.refine_below": (0.0, 1.0),
    "DetectorConfig.refine_context": (1.5, 8.0),
    "DetectorConfig.refine_min_score": (0.0, 1.0),
    "DetectorConfig.focus_min_score": (0.0, 1.0),
    "DetectorConfig.region_size": (0, 100_000),
    "DetectorConfig.max_regions": (0, 64),
    "DetectorConfig.region_memory_s": (0, 3600),
    "DetectorConfig.region_cycle": (1, 1000),
    "DetectorConfig.motion_width": (16, 4096),
    "DetectorConfig.motion_threshold": (0.0, 255.0),
    "DetectorConfig.motion_cells": (1, 100_000),
    "DetectorConfig.idle_interval_s": (0.0, 3600.0),
    # edge.liveness.decide
    "LivenessConfig.threshold": (0.0, 1.0),
    "LivenessConfig.frames": (1, 100),
    "LivenessConfig.min_frames": (1, 100),
    "LivenessConfig.max_yaw_deg": (0.0, 90.0),
    "LivenessConfig.min_face_px": (0.0, 10_000.0),
    "LivenessConfig.min_sharpness": (0.0, 100_000.0),
    "LivenessConfig.min_contrast": (0.0, 128.0),
    "LivenessConfig.max_clipped": (0.0, 1.0),
    "LivenessConfig.num_threads": (1, 64),
    # edge.ops
    "OpsConfig.min_free_mb": (0.0, 1e9),
    "OpsConfig.max_unacked_age_s": (1.0, 366 * DAY_S),
    "OpsConfig.metrics_port": (0, 65535),
    # edge.quality
    "QualityConfig.min_face_px": (0.0, 100_000.0),
    "QualityConfig.min_sharpness": (0.0, 1e6),
    "QualityConfig.max_yaw_deg": (0.0, 90.0),
    "QualityConfig.min_score": (0.0, 1.0),
    # edge.match
    "MatcherConfig.threshold": (-1.0, 1.0),
    "MatcherConfig.margin": (0.0, 2.0),
    "MatcherConfig.top_k": (1, 1000),
    "MatcherConfig.fused_threshold": (-1.0, 1.0),
    "MatcherConfig.fused_margin": (0.0, 2.0),
    # edge.track
    "TrackerConfig.iou_match": (0.0, 1.0),
    "TrackerConfig.max_jump": (0.0, 100.0),
    "TrackerConfig.max_age_s": (0.0, 3600.0),
    "TrackerConfig.embed_interval_s": (0.0, 3600.0),
    "TrackerConfig.recheck_known_s": (0.0, DAY_S),
    "TrackerConfig.better_face": (1.0, 100.0),
    "TrackerConfig.max_embeds": (1, 10_000),
    "TrackerConfig.min_votes": (1, 10_000),
    "TrackerConfig.confirmations": (1, 10_000),
    "TrackerConfig.vote_share": (0.0, 1.0),
    "TrackerConfig.same_face_min_sim": (-1.0, 1.0),
    "TrackerConfig.unknown_min_score": (0.0, 1.0),
}
