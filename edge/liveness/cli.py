"""`edge eval liveness FOLDER`: a thin wrapper over edge.liveness.evaluate."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import click


@click.command("liveness")
@click.argument("folder", type=click.Path(path_type=Path, file_okay=False))
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), help="Override the config's.")
@click.option("--every", default=1, show_default=True, type=click.IntRange(min=1), help="Score every Nth video frame.")
@click.option("--all-faces", is_flag=True, help="Score every largest face, not only frontal ones of usable size.")
@click.option("--files", "show_files", is_flag=True, help="Also list each file's result (with --json: a files list).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def liveness(
    app: Any, folder: Path, threshold: Optional[float], every: int, all_faces: bool, show_files: bool, as_json: bool
) -> None:
    """APCER per attack source and BPCER, per frame and per track (video), with Wilson 95% intervals, on FOLDER:
    real/** and spoof/<attack source>/** images or videos, or a labels.csv (path,label,source)."""
    from edge.detect import FaceDetector
    from edge.liveness.decide import LivenessConfig
    from edge.liveness.evaluate import discover, format_summary, per_file, score_item, summarise
    from edge.liveness.model import LivenessModel

    config = getattr(app.config, "liveness", None) or LivenessConfig()
    if threshold is not None:
        config = replace(config, threshold=threshold)
    items = discover(folder)
    models_dir = app.config.embedder.models_path
    detector = app.stack.enter_context(FaceDetector(app.config.detector))
    model = app.stack.enter_context(LivenessModel(models_dir, config.num_threads))
    results = []
    with click.progressbar(items, label="scoring", file=sys.stderr) as bar:
        for item in bar:
            results.append(score_item(item, detector.detect, model.score, config, every, all_faces))
    summary = summarise(results, config)
    summary["model_id"] = model.model_id
    if show_files:
        summary["files_scored"] = per_file(results)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(format_summary(summary))
    if show_files:
        for row in summary["files_scored"]:
            click.echo(
                f"{row['label']:5} {row['source'] or '-':12} p_real {row['p_real_median']} "
                f"({row['frames_scored']} scored, {row['no_face']} no face, {row['not_frontal']} skipped) "
                f"{row['verdict'] or ''} {row['path']}"
            )
