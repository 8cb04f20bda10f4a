"""Measuring a trained model: representations, distances (paper §4) and detections (paper §6.1)."""
