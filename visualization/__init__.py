"""Figures: feature scatter plots (paper Fig. 4), λ sweeps (Fig. 3) and detection F1 (Figs. 5–7)."""
import matplotlib

matplotlib.use("Agg")  # never needs a display; visualize.py --show switches back explicitly
