"""The classification part of Algorithm 1's loss, L1 + L2 (paper Algorithm 1 lines 9–10).

Algorithm 1, for a mini-batch (X, Y) of the concatenated set C = D ∪ U:

    (X1, Y1) = the benign samples of the batch      L1 ← 1/|X1| · L(f(X1), Y1)
    (X2, Y2) = the malicious samples of the batch   L2 ← 1/|X2| · L(f(X2), Y2)
    Lt ← L1 + L2 + λ·L3

Eq. 2 and Eq. 6 normalise the benign sum by |D| and the malicious sum by |U| in the same way,
so the poisoned samples weigh as much as all benign ones together. The authors' prototype
instead takes one cross-entropy averaged over the whole batch ("pooled"), which at r = 0.1
weighs the poisoned samples by about 1/11 of the total.

WaNet's noise-mode samples keep their true labels, so they are benign: they belong to X1.
A batch without poisoned samples has L2 = 0 (and one without benign samples L1 = 0).
"""
import torch
import torch.nn.functional as F

CE_REDUCTIONS = ("split", "pooled")


def backdoor_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, poisoned: torch.Tensor,
                           reduction: str = "split", counts: tuple = None):
    """(loss, L1, L2): ``loss`` = L1 + L2 for "split" (Algorithm 1, the default) or the mean
    cross-entropy over the whole batch for "pooled" (the prototype). L1 and L2 are returned for
    logging in both cases. ``poisoned`` is a bool mask (B,), on the CPU or the logits' device;
    the group sizes are counted on the CPU so no device sync is needed.

    ``counts`` = (benign, poisoned) samples of the global batch when ``logits`` are one DDP rank's
    shard of it: the sums are divided by the global counts, so the three values are this rank's
    shares, and their sums over the ranks are exactly the single-process values.
    """
    if reduction not in CE_REDUCTIONS:
        raise ValueError(f"unknown cross-entropy reduction '{reduction}'; choose one of {CE_REDUCTIONS}")
    poisoned_cpu = torch.as_tensor(poisoned, dtype=torch.bool).cpu()
    if counts is None:
        n_poisoned = int(poisoned_cpu.sum())
        counts = (len(poisoned_cpu) - n_poisoned, n_poisoned)
    n_benign, n_poisoned = counts
    # float32 under autocast; float64 logits stay float64 (tests/test_distributed.py compares in float64)
    per_sample = F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), labels, reduction="none")
    is_poisoned = poisoned_cpu.to(per_sample.device, non_blocking=True)
    benign_ce = per_sample.masked_fill(is_poisoned, 0.0).sum() / max(n_benign, 1)
    poisoned_ce = per_sample.masked_fill(~is_poisoned, 0.0).sum() / max(n_poisoned, 1)
    loss = benign_ce + poisoned_ce if reduction == "split" else per_sample.sum() / max(n_benign + n_poisoned, 1)
    return loss, benign_ce, poisoned_ce
