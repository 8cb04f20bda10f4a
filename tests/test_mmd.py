import itertools
import math

import pytest
import torch

import models
from regularizers import KERNELS, MultiLevelMMD, mmd2
from regularizers.kernels import get_kernel


def direct_kernel(kernel, a, b, beta):
    if kernel.kind == "linear":
        return float(a @ b)
    sq = float(((a - b) ** 2).sum())
    return sum(math.exp(-sq / (sigma * beta)) for sigma in kernel.sigmas)


def direct_mmd2(x, y, name, estimator):
    """The double-sum formula, one pair at a time, in float64."""
    kernel = get_kernel(name)
    x, y = x.double(), y.double()
    pooled = torch.cat([x, y])
    count = len(pooled)
    beta = sum(float(((pooled[i] - pooled[j]) ** 2).sum()) for i in range(count) for j in range(count)) / (
        count * count - count)
    k = lambda a, b: direct_kernel(kernel, a, b, beta)
    n, m = len(x), len(y)
    if estimator == "biased":
        return (sum(k(a, b) for a in x for b in x) / n**2 + sum(k(a, b) for a in y for b in y) / m**2
                - 2 * sum(k(a, b) for a in x for b in y) / (n * m))
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    if n == m:
        xy = sum(k(x[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    else:
        xy = sum(k(a, b) for a in x for b in y) / (n * m)
    return xx + yy - 2 * xy


TABLE_3 = {  # the paper's TABLE 3, typed in from the paper
    "gk1": [1 / 2], "gk2": [1], "gk3": [2],
    "gmk1": [1 / 2, 1, 2], "gmk2": [1 / 4, 1 / 2, 1, 2, 4], "gmk3": [1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8],
    "gmk4": [1 / 3, 1, 3], "gmk5": [1 / 9, 1 / 3, 1, 3, 9], "gmk6": [1 / 27, 1 / 9, 1 / 3, 1, 3, 9, 27],
}


def test_kernels_are_exactly_table_3():
    assert set(KERNELS) == set(TABLE_3) | {"lk"}
    assert KERNELS["lk"].kind == "linear"
    for name, sigmas in TABLE_3.items():
        assert KERNELS[name].kind == "gaussian"
        assert KERNELS[name].sigmas == pytest.approx(sigmas, rel=1e-12), name


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("sizes", [(6, 6), (5, 8)])
def test_mmd2_matches_the_direct_double_sum(name, estimator, sizes):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(sizes[0], 2, 3, generator=gen)  # features of any shape are flattened
    y = torch.randn(sizes[1], 2, 3, generator=gen) + 0.7
    expected = direct_mmd2(x.flatten(1), y.flatten(1), name, estimator)
    assert mmd2(x, y, name, estimator).item() == pytest.approx(expected, rel=1e-4, abs=1e-5)


@pytest.mark.numerics
@pytest.mark.parametrize("name", ["gmk2", "gk1", "lk"])
def test_mmd2_of_a_set_with_itself_is_zero(name):
    # float64: the linear kernel's Gram entries reach ~1e5 here, so float32 rounding alone is ~1e-3
    # (and depends on the CPU's kernels); in float64 the worst case is ~1e-9
    x = (torch.randn(10, 32, generator=torch.Generator().manual_seed(1)) * 50 + 100).double()
    assert mmd2(x, x.clone(), name, "unbiased").item() == pytest.approx(0.0, abs=1e-8)
    assert mmd2(x, x.clone(), name, "biased").item() == pytest.approx(0.0, abs=1e-8)


def test_gradient_flows_to_both_groups():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(7, 16, generator=gen, requires_grad=True)
    y = (torch.randn(9, 16, generator=gen) + 1).requires_grad_()
    mmd2(x, y).backward()
    assert x.grad.abs().sum() > 0 and y.grad.abs().sum() > 0


def test_separated_groups_give_larger_mmd_than_shuffled_ones():
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(30, 8, generator=gen), torch.randn(30, 8, generator=gen) + 3
    pooled = torch.cat([x, y])[torch.randperm(60, generator=gen)]
    assert mmd2(x, y) > 5 * mmd2(pooled[:30], pooled[30:])


def test_multilevel_loss_is_the_mean_of_per_level_mmd():
    model = models.build("vgg11", width=0.125)
    reg = MultiLevelMMD(model, ("s1", "s2", "s3"))
    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    benign, poisoned = torch.zeros(12, dtype=torch.bool), torch.zeros(12, dtype=torch.bool)
    benign[:5], poisoned[5:10] = True, True
    feats = {}
    for level, module in models.tap_modules(model).items():
        module.register_forward_hook(lambda m, i, o, level=level: feats.__setitem__(level, o.detach()))
    model(x)
    total, per_level = reg.loss(benign, poisoned)
    for level in ("s1", "s2", "s3"):
        assert per_level[level].item() == pytest.approx(mmd2(feats[level][:5], feats[level][5:10]).item(), rel=1e-5)
    assert total.item() == pytest.approx(sum(v.item() for v in per_level.values()) / 3, rel=1e-6)
    assert reg.features == {}  # released after the loss
    reg_sum = MultiLevelMMD(model, ("s1", "s2", "s3"), reduce="sum")
    model(x)
    reg.features.clear()
    assert reg_sum.loss(benign, poisoned)[0].item() == pytest.approx(3 * total.item(), rel=1e-5)


def test_a_group_smaller_than_two_gives_zero_and_releases_features():
    model = models.build("vgg11", width=0.125)
    reg = MultiLevelMMD(model, ("s3",))
    model(torch.rand(8, 3, 32, 32))
    benign = torch.tensor([True] * 4 + [False] * 4)
    poisoned = torch.tensor([False] * 7 + [True])
    total, per_level = reg.loss(benign, poisoned)
    assert total.item() == 0.0 and per_level["s3"].item() == 0.0
    assert reg.features == {}
    with pytest.raises(RuntimeError, match="run a forward pass first"):
        reg.loss(benign, poisoned)


def test_paused_records_nothing():
    model = models.build("vgg11", width=0.125)
    reg = MultiLevelMMD(model)
    with reg.paused(), torch.no_grad():
        model(torch.rand(2, 3, 32, 32))
    assert reg.features == {}
