import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def digits():
    import datasets

    return datasets.build("digits", seed=0)


TINY_RUN = ["--data_name", "digits", "--width", "0.25", "--epochs", "4", "--train_subset", "600",
            "--no_progress"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A small backdoored digits run (RBT), trained once per test session: (argv, run_dir)."""
    import main
    from utils.cli import run_cli

    out_dir = tmp_path_factory.mktemp("runs")
    argv = TINY_RUN + ["--out_dir", str(out_dir)]
    assert run_cli(main.main, argv) == 0
    return argv, out_dir / "digits_vgg11_patched_w0.25_n600"
