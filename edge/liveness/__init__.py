"""Liveness (presentation-attack detection): context crops of the full frame scored by Minivision's MiniFASNet
models; a per-track verdict. crop and decide are pure; model loads the models; evaluate measures APCER/BPCER."""
