"""Algorithm 1 (mini-batch ML-MMDR): the training step, BA/ASR evaluation and the run directory."""
