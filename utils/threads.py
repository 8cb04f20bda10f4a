"""One CPU thread count for every library a stage computes with.

torch's ``set_num_threads`` sizes torch's own pool only. numpy and scipy call OpenBLAS, and
scikit-learn's k-means calls OpenMP, each with a pool the size of the machine's cores by default.
Two grid runs at once with ``--threads 1`` each then start four BLAS threads on two cores, and
OpenBLAS threads spin while they wait: an evaluate stage with AC, SS and SR alone took 150–300 s so
against 17 s alone. ``cpu_threads`` pins all of them to one count (threadpoolctl), as ``--threads``
means; results computed by BLAS can depend on that count, as torch's do, and config.json records it.
"""
from contextlib import contextmanager


def _load_pools() -> None:
    """Load every library whose pool a stage may use. threadpoolctl limits only the pools loaded when
    it is called; the stages import scipy and scikit-learn lazily, and scipy's OpenBLAS and
    scikit-learn's OpenMP would come up with a thread per core after it."""
    import scipy.linalg  # noqa: F401  (scipy's own OpenBLAS)
    import sklearn.cluster  # noqa: F401  (scikit-learn's OpenMP, k-means)


@contextmanager
def cpu_threads(count: int):
    """torch's threads and every BLAS and OpenMP pool limited to ``count`` inside the block."""
    import torch
    from threadpoolctl import threadpool_limits

    _load_pools()
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        with threadpool_limits(limits=count):
            yield count
    finally:
        torch.set_num_threads(previous)


def pin_cpu_threads(count: int) -> int:
    """torch's threads and every BLAS and OpenMP pool set to ``count`` for the rest of the process
    (a benchmark's ``--threads``); returns it."""
    import torch
    from threadpoolctl import threadpool_limits

    _load_pools()
    torch.set_num_threads(count)
    threadpool_limits(limits=count)
    return count
