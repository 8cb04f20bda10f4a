"""The CPU-scale reproduction of the paper's claims: the run grid, its runner and the report."""
