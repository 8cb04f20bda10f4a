"""C6: the kernel ablation: every TABLE 3 kernel reduces detection, and GK/GMK beat LK (paper §6.3,
Fig. 11); and the report's kernels section."""
from defenses import PAPER_DETECTORS, display_name
from experiments.claim import Claim, RuleChange, Section, register
from experiments.records import Runs, distance_of, f1_of, fmt, mean_f1_of, mean_of, metric_of, present
from experiments.rules import attack_kept, verdict_by_share
from experiments.tables import markdown_table
from models import LEVELS
from regularizers import get_kernel

DROP = 0.1   # a kernel lowers detection when its mean F1 is this far below the RBT run's


def _first_epoch(record) -> str:
    """A failed run's first-epoch MMD² per level against its CE, from metrics.json's history."""
    history = (record["metrics"] or {}).get("history") or [{}]
    first = history[0]
    if not all(f"mmd_{lv}" in first for lv in LEVELS):
        return ""
    return f"; epoch-1 MMD² {' / '.join(fmt(first[f'mmd_{lv}'], 2) for lv in LEVELS)} against CE {fmt(first['ce'], 2)}"


def judge(runs: Runs) -> tuple:
    pairs = runs.kernel_rows()
    base = mean_of([mean_f1_of(rbt) for rbt in {id(rbt): rbt for rbt, _ in pairs if rbt}.values()])
    by_kernel = {}
    for rbt, r in pairs:
        by_kernel.setdefault(r["config"].kernel, []).append((rbt, r))
    f1 = {k: mean_of([mean_f1_of(r) for _, r in rows]) for k, rows in by_kernel.items()}
    # a kernel fails if its run did not keep the attack on some seed
    failed = {}
    for kernel, rows in by_kernel.items():
        for rbt, r in rows:
            if rbt and not attack_kept(rbt, r):
                failed.setdefault(kernel, []).append(r)
    # each kernel against the RBT runs of its own seeds (kernels may have reached different seeds)
    drop = {k: mean_of([_f1_drop(rbt, r) for rbt, r in rows]) for k, rows in by_kernel.items()}
    reduced = [k for k, d in drop.items() if k not in failed and present(d) and d >= DROP]
    # GK/GMK against LK on the seeds LK ran
    lk_seeds = {r["config"].seed for _, r in by_kernel.get("lk", [])}
    gaussian = mean_of([mean_f1_of(r) for k, rows in by_kernel.items() if k != "lk" and k not in failed
                        for _, r in rows if r["config"].seed in lk_seeds or not lk_seeds])
    linear = f1.get("lk")
    # (2): a GK/GMK kernel is the better choice if LK's run failed where they kept the attack, or,
    # with every run working, if their detection F1 is lower
    better = "lk" in failed if "lk" in failed else (present(gaussian, linear) and gaussian < linear)
    conditions = [bool(f1) and len(reduced) == len(f1), present(gaussian) and better]
    measurable = present(base, gaussian) and "lk" in f1
    evidence = (f"mean headline F1: RBT {fmt(base)}; ML-MMDR "
                + (", ".join(f"{get_kernel(k).display} {fmt(v)}" for k, v in f1.items()) or "–")
                + f"; lowered by ≥ 0.1 (against the RBT run of each seed) with the attack kept: {len(reduced)}/{len(f1)} "
                  f"kernels; GK/GMK mean {fmt(gaussian)} vs LK {fmt(linear)}, on LK's seeds")
    if failed:
        evidence += ("; the attack not kept (its F1 counts for nothing): " + ", ".join(
            f"{get_kernel(k).display} seed {r['config'].seed} (BA {fmt(metric_of(r, 'ba'))}, ASR {fmt(metric_of(r, 'asr'))}"
            f"{_first_epoch(r)})" for k, records in failed.items() for r in records))
    return verdict_by_share(sum(conditions) / 2 if measurable else None), evidence


def _f1_drop(rbt, record):
    """RBT's minus ``record``'s mean headline F1 (None where either is missing)."""
    before, after = (mean_f1_of(rbt), mean_f1_of(record)) if rbt else (None, None)
    return before - after if present(before, after) else None


def cases(runs: Runs) -> list:
    """RBT's minus each kernel run's mean F1, for the runs that kept the attack (C6's amendment)."""
    return [_f1_drop(rbt, r) for rbt, r in runs.kernel_rows() if rbt and attack_kept(rbt, r)]


def section_kernels(runs: Runs) -> list:
    """One seed's kernel study (the report passes the base seed's runs; C6 reads every seed)."""
    pairs = runs.kernel_rows()
    if not pairs:
        return []
    rbt, rows = pairs[0][0], [r for _, r in pairs]
    lines = ["## Kernels (paper §6.3, TABLE 3, Fig. 11)", "",
             f"ML-MMDR at λ = {runs.lamb:g} on {rows[0]['config'].attack_name} with each kernel, seed "
             f"{rows[0]['config'].seed}; the first row is the RBT run. F1: headline, mean over the pools.", ""]
    table = []
    for r in ([rbt] if rbt else []) + rows:
        name = "RBT" if r is rbt else get_kernel(r["config"].kernel).display
        table.append([name, fmt(metric_of(r, "ba")), fmt(metric_of(r, "asr"))]
                     + [fmt(distance_of(r, "mmd2", lv)) for lv in LEVELS]
                     + [fmt(f1_of(r, d, lv)) for d in PAPER_DETECTORS for lv in LEVELS])
    return lines + markdown_table(["kernel", "BA", "ASR"] + [f"MMD² {lv}" for lv in LEVELS]
                          + [f"{display_name(d)} {lv}" for d in PAPER_DETECTORS for lv in LEVELS], table)


CLAIM = register(Claim(
    id="C6",
    statement="Kernel ablation: every kernel reduces detection; GK/GMK beat LK (§6.3, Fig. 11)",
    paper="§6.3, Fig. 11: 'no matter which kernel is used, ML-MMDR significantly reduces the detection effects'; "
          "'GK or GMK is a better choice than LK' (no number in the text)",
    studies=("kernel", "lambda"),
    rule="two observations: (1) with every TABLE 3 kernel ML-MMDR's mean F1 (AC, SS, SR, levels, pools) is ≥ 0.1 "
         "below the RBT run's, (2) the GK and GMK kernels' mean F1 is below LK's; reproduced if both, partly if "
         "one. Amended after the LK run failed to train: a kernel's run counts only if it kept the attack (C2's "
         "criterion), so (1) fails for a kernel whose run did not, and (2) holds if LK's run failed where a GK/GMK "
         "run kept the attack",
    judge=judge, cases=cases,
    statistic="RBT's minus the kernel's mean headline F1, per kernel", margin="≥ 0.1", threshold=DROP,
    history=(RuleChange("2026-11-24, commit 365ee42", "a kernel's run counts only if it kept the attack (C2's "
                        "criterion), after the LK run collapsed to BA 0.10", True,
                        "(1) with every TABLE 3 kernel ML-MMDR's mean F1 is ≥ 0.1 below the RBT run's, (2) the GK and "
                        "GMK kernels' mean F1 is below LK's; reproduced if both, partly if one",
                        "not measurable"),),
    seed_sides={"reproduced": ("≥", DROP)},
    checks="Every TABLE 3 kernel is tested to be exactly the table's bandwidths and to match the direct double "
           "sum (tests/test_mmd.py). The linear kernel's MMD² is the squared distance between the two groups' mean "
           "representations, unbounded, where a Gaussian kernel's is at most 2: a failed run's first-epoch MMD², "
           "beside its CE, shows whether λ·MMD² swamped the classification loss from the start.",
    sections=(Section(60, lambda report: section_kernels(report.one)),)))
