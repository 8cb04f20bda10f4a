"""Measuring a trained run: representations, distances (paper §4) and detections (paper §6.1)."""
