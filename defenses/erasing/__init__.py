"""Erasing defenses: fine-tuning, NAD and ARGD train a backdoor out of a model with the defender's clean
data (beyond the paper); their distillation losses and the defender-side tuning of their settings."""
