"""Learning-rate milestones as fractions of the epochs (paper §3.4), resolved into config.json."""
import pytest

from pipeline.cli import build_run_parser as build_parser, config_from_args


def resolved(*argv):
    return config_from_args(build_parser("test").parse_args(list(argv)))


@pytest.mark.parametrize("argv, epochs, milestones", [
    (["--data_name", "cifar10"], 100, [50, 70]),                     # paper §3.4
    (["--data_name", "celeba"], 40, [20, 30]),                       # paper §3.4
    (["--data_name", "cifar10", "--epochs", "12"], 12, [6, 8]),      # 50% and 70% of 12
    (["--data_name", "fmnist", "--epochs", "12"], 12, [6, 8]),       # CIFAR-10's schedule reused
    (["--data_name", "celeba", "--epochs", "12"], 12, [6, 9]),       # 50% and 75% of 12
    (["--data_name", "gtsrb", "--epochs", "80"], 80, [40, 56]),
    (["--data_name", "cifar10", "--epochs", "1"], 1, []),            # no decay point inside 1 epoch
    (["--data_name", "digits"], 10, [5, 7]),
    (["--data_name", "fmnist", "--epochs", "12", "--milestones", "3", "9"], 12, [3, 9]),  # explicit wins
])
def test_milestones_scale_with_epochs(argv, epochs, milestones):
    config = resolved(*argv)
    assert (config.epochs, config.milestones) == (epochs, milestones)


@pytest.mark.parametrize("argv, name", [
    (["--data_name", "digits"], "digits_vgg11_patched"),
    (["--data_name", "digits", "--ce_reduction", "pooled"], "digits_vgg11_patched_pooled"),
    (["--data_name", "digits", "--mlmmdr_lamb", "0.3", "--ce_reduction", "pooled"],
     "digits_vgg11_patched_mlmmdr_0.3_all_pooled"),
])
def test_the_prototypes_pooled_loss_names_its_own_run(argv, name):
    config = resolved(*argv)
    assert config.run_name == name and config.ce_reduction == ("pooled" if "pooled" in name else "split")
