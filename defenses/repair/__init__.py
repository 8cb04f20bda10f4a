"""Model defenses that inspect a trained model: Neural Cleanse's trigger synthesis and pruning (paper §6.2)."""
