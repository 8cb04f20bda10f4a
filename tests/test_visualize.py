"""visualize.py: each figure is written as a PNG of the expected size with the expected panels."""
import struct

import pytest

import visualize
from pipeline.cli import build_run_parser as build_parser
from pipeline.cli import config_from_args, run_cli
from pipeline.prepare import load_trained
from pipeline.rundir import RunDir, find_runs
from utils.errors import UserError
from visualization.scatter import feature_scatter, scatter_sets


def png_size(path) -> tuple:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def titles(figure) -> list:
    return [axis.get_title() for axis in figure.axes]


def test_scatter_png_and_panel_titles(tiny_sweep, tmp_path):
    argv = ["--data_name", "digits", "--width", "0.25", "--train_subset", "600", "--out_dir", str(tiny_sweep),
            "--figure_dir", str(tmp_path), "--num_samples", "30"]
    assert run_cli(visualize.main, argv + ["--mlmmdr_lamb", "0.1", "--pdf"]) == 0
    path = tmp_path / "digits_vgg11_patched_mlmmdr_0.1_all_w0.25_n600" / "features.png"
    assert png_size(path) == (1200, 400) and path.with_suffix(".pdf").is_file()
    config = config_from_args(build_parser("t").parse_args(argv[:8] + ["--mlmmdr_lamb", "0.1"]))
    figure, _ = feature_scatter(load_trained(config).subject, 30, label="ML-MMDR, λ=0.1")
    assert titles(figure) == ["s1, ML-MMDR, λ=0.1", "s2, ML-MMDR, λ=0.1", "s3, ML-MMDR, λ=0.1"]
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == ["benign", "malicious"]


def test_last_flag_loads_the_last_run(tiny_sweep, tmp_path):
    argv = ["--data_name", "digits", "--width", "0.25", "--train_subset", "600", "--out_dir", str(tiny_sweep),
            "--mlmmdr_lamb", "0.1", "--mlmmdr_layer", "last"]
    config = config_from_args(build_parser("t").parse_args(argv))
    assert RunDir.of(config).checkpoint()["config"]["mlmmdr_layer"] == "last"
    figure, _ = feature_scatter(load_trained(config).subject, 20, "tsne", label="SL-MMDR, λ=0.1")
    assert titles(figure) == ["s1, SL-MMDR, λ=0.1", "s2, SL-MMDR, λ=0.1", "s3, SL-MMDR, λ=0.1"]
    assert run_cli(visualize.main, argv + ["--figure_dir", str(tmp_path), "--num_samples", "20", "--method",
                                           "tsne"]) == 0
    assert (tmp_path / "digits_vgg11_patched_mlmmdr_0.1_last_w0.25_n600" / "features_tsne.png").is_file()
    assert not (tmp_path / "digits_vgg11_patched_mlmmdr_0.1_all_w0.25_n600").exists()


def test_empty_malicious_group_is_a_clear_message(tiny_run):
    argv, _ = tiny_run
    subject = load_trained(config_from_args(build_parser("t").parse_args(argv))).subject
    subject.target = 7  # the backdoor sends triggered images to 0, so none land on 7
    with pytest.raises(UserError, match="triggered images classified as the target"):
        scatter_sets(subject, 50)


def test_sweep_and_detection_figures(tiny_sweep, tmp_path, capsys):
    argv = ["--sweep", str(tiny_sweep), "--detection", str(tiny_sweep), "--figure_dir", str(tmp_path)]
    assert run_cli(visualize.main, argv) == 0
    sweep = tmp_path / "digits_vgg11_patched" / "sweep.png"
    detection = tmp_path / "digits_vgg11_patched" / "detection.png"
    assert png_size(sweep) == (2000, 360) and png_size(detection) == (360, 840)
    from visualization.detection import detection_figure
    from visualization.sweep import sweep_figure, sweep_lines

    results = [run.read("evaluation") for run in find_runs(tiny_sweep)]
    figure = sweep_figure(results, "t")
    assert titles(figure) == ["BA", "ASR", "MMD² at s1", "MMD² at s2", "MMD² at s3"]
    assert {m: [lamb for lamb, _ in pts] for m, pts in sweep_lines(results).items()} == {
        "ML-MMDR": [0.0, 0.1], "SL-MMDR": [0.0, 0.1]}
    figure = detection_figure(results, "t")
    assert titles(figure) == ["AC, N=40, r′=1", "SS, N=40, r′=1", "SR, N=40, r′=1"]
    labels = [t.get_text() for t in figure.axes[0].get_xticklabels()]
    assert labels == ["RBT", "SL-MMDR, λ=0.1", "ML-MMDR, λ=0.1"]


def test_sweep_without_evaluations_is_a_clear_error(tiny_run, tmp_path, capsys):
    import shutil

    _, run_dir = tiny_run
    copy = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("evaluation.*"))
    assert run_cli(visualize.main, ["--sweep", str(copy.parent), "--figure_dir", str(tmp_path)]) == 2
    assert "python evaluate.py --all_runs" in capsys.readouterr().err


def test_defense_figures_without_defense_results_are_a_clear_error(tiny_run, tmp_path, capsys):
    import shutil

    _, run_dir = tiny_run
    copy = tmp_path / "runs" / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("defense_*"))
    assert run_cli(visualize.main, ["--nc", str(copy.parent), "--figure_dir", str(tmp_path / "f")]) == 2
    assert "has the 'nc' stage's output; run python defend.py --defense nc" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_seeds_with_coinciding_statistics_share_one_label():
    from visualization.claims import seed_labels

    # seeds 0 and 1 at the same value, seed 2 far off: two labels, the pair's joined
    assert seed_labels({0: 1.0, 1: 1.0, 2: 0.5}, span=1.0) == [(0.5, "2"), (1.0, "0 1")]
    # within 3% of the axis they merge, at their mean; beyond it they stay apart
    assert seed_labels({2: 0.42, 0: 0.40}, span=1.0) == [(pytest.approx(0.41), "0 2")]
    assert seed_labels({2: 0.45, 0: 0.40}, span=1.0) == [(0.40, "0"), (0.45, "2")]
