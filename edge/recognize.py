"""One still image in, every face out with its quality and (when it passes the gates) its embedding.

Wires detector -> aligner -> quality gates -> embedder; used by enrollment, identification and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Protocol, Sequence

import numpy as np

from edge.align import align
from edge.embed import Embedder
from edge.faces import Detection
from edge.quality import Quality, QualityConfig, assess


@dataclass(frozen=True)
class FaceObservation:
    """A detected face, its measured quality, and its embedding (None when a gate rejected it)."""

    detection: Detection
    quality: Quality
    embedding: Optional[np.ndarray]


class DetectorLike(Protocol):
    """What the recognizer needs from a detector (edge.detect.FaceDetector provides it)."""

    def detect(self, image_bgr: np.ndarray) -> Sequence[Detection]: ...


class Recognizer:
    """Turns detections into observations: align once, gate, and embed only what passed."""

    def __init__(self, detector: DetectorLike, embedder: Embedder, quality: QualityConfig) -> None:
        self.detector = detector
        self.embedder = embedder
        self.quality = quality

    def observe(self, image_bgr: np.ndarray, detection: Detection, gate: bool = True) -> FaceObservation:
        aligned = align(image_bgr, detection, size=self.embedder.manifest.input_size[0])
        quality = assess(detection, aligned.image, self.quality)
        embedding = self.embedder.embed(aligned.image) if quality.accepted or not gate else None
        return FaceObservation(detection=detection, quality=quality, embedding=embedding)

    def analyze(self, image_bgr: np.ndarray, gate: bool = True) -> List[FaceObservation]:
        """Every face in the image, largest first."""
        detections = sorted(self.detector.detect(image_bgr), key=lambda d: -d.box.area)
        return [self.observe(image_bgr, d, gate) for d in detections]
