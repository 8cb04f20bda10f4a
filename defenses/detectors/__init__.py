"""Detectors: each flags poisoned inputs or a target class (paper §6.1 and those published since).

Each file defines one detector and its ``Detector`` record; ``defenses/__init__.py`` registers it.
"""
