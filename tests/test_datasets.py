"""Each loader on a tiny fixture written in the dataset's native on-disk format."""
import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
from utils.errors import ParameterError, UserError


def write_idx(path, array, compress):
    header = (2051 if array.ndim == 3 else 2049).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as handle:
            handle.write(raw)
    else:
        path.write_bytes(raw)


@pytest.fixture
def fmnist_dir(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, count, compress in (("train", 12, True), ("t10k", 5, False)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)), compress)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(count) % 10, compress)
    return tmp_path


def test_fmnist_pads_to_32_with_three_channels(fmnist_dir):
    raw = gzip.open(fmnist_dir / "train-images-idx3-ubyte.gz").read()
    first = np.frombuffer(raw, dtype=np.uint8, offset=16)[:784].reshape(28, 28)
    data = datasets.build("fmnist", data_path=fmnist_dir)
    assert data.train_x.shape == (12, 3, 32, 32) and data.test_x.shape == (5, 3, 32, 32)
    assert torch.equal(data.train_x[0, 1, 2:30, 2:30], torch.from_numpy(first.copy()))
    assert data.train_x[:, :, :2].sum() == 0  # zero padding
    assert data.test_y.tolist() == [0, 1, 2, 3, 4] and data.num_classes == 10


def test_fmnist_corrupt_file_is_a_clear_error(fmnist_dir):
    path = fmnist_dir / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match="truncated"):
        datasets.build("fmnist", data_path=fmnist_dir)
    path.write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 20)
    with pytest.raises(UserError, match="bad magic"):
        datasets.build("fmnist", data_path=fmnist_dir)


def write_cifar(root, per_batch=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, per_batch))
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": data, "labels": labels}, handle)
        batches[name] = (data, labels)
    return batches


def test_cifar10_reads_the_python_batches(tmp_path):
    batches = write_cifar(tmp_path)
    data = datasets.build("cifar10", data_path=tmp_path)
    assert data.train_x.shape == (20, 3, 32, 32) and data.test_x.shape == (4, 3, 32, 32)
    first, labels = batches["data_batch_1"]
    assert torch.equal(data.train_x[0], torch.from_numpy(first[0].reshape(3, 32, 32)))
    assert data.train_y[:4].tolist() == [int(v) for v in labels]


def test_cifar10_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserError, match="no CIFAR-10 python batches"):
        datasets.build("cifar10", data_path=tmp_path)
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="corrupt"):
        datasets.build("cifar10", data_path=tmp_path)


class RunsCode:
    """Unpickling this calls os.system: what a crafted batch would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_crafted_cifar10_batch_runs_nothing(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "executed"
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_2", "wb") as handle:
        pickle.dump({"data": RunsCode(marker), "labels": [0]}, handle)
    with pytest.raises(UserError, match=r"data_batch_2 is not a CIFAR-10 batch: it asks to load (posix|os)\.system"):
        datasets.build("cifar10", data_path=tmp_path)
    assert not marker.exists()


def test_cifar10_reads_a_python2_style_batch_with_bytes_keys(tmp_path):
    """The official files are Python 2 pickles (protocol 2, numpy arrays, byte-string keys)."""
    write_cifar(tmp_path)
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as handle:
        pickle.dump({b"batch_label": b"testing batch 1 of 1", b"data": data, b"labels": [3, 7],
                     b"filenames": [b"a.png", b"b.png"]}, handle, protocol=2)
    loaded = datasets.build("cifar10", data_path=tmp_path)
    assert loaded.test_y.tolist() == [3, 7] and torch.equal(loaded.test_x[1].flatten(), torch.from_numpy(data[1]))


def write_celeba(root):
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, 7)]
    partitions = [0, 0, 0, 1, 2, 2]
    # columns: 5_o_Clock_Shadow Heavy_Makeup Mouth_Slightly_Open Smiling
    attributes = [(1, 1, 1, 1), (-1, -1, -1, 1), (1, 1, -1, -1), (1, 1, 1, 1), (-1, -1, 1, -1), (1, 1, 1, -1)]
    for i, name in enumerate(names):
        Image.fromarray(np.full((218, 178, 3), 40 * i, dtype=np.uint8)).save(base / "img_align_celeba" / name)
    lines = [str(len(names)), "5_o_Clock_Shadow Heavy_Makeup Mouth_Slightly_Open Smiling"]
    lines += [f"{name} " + " ".join(f"{v:2d}" for v in attrs) for name, attrs in zip(names, attributes)]
    (base / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    (base / "list_eval_partition.txt").write_text(
        "\n".join(f"{n} {p}" for n, p in zip(names, partitions)) + "\n")
    return base


def test_celeba_eight_classes_official_partitions_and_cache(tmp_path):
    base = write_celeba(tmp_path)
    data = datasets.build("celeba", data_path=tmp_path)
    # label = Heavy_Makeup·4 + Mouth_Slightly_Open·2 + Smiling
    assert data.train_y.tolist() == [7, 1, 4] and data.test_y.tolist() == [2, 6]
    assert data.train_x.shape == (3, 3, 32, 32) and data.num_classes == 8
    assert abs(int(data.train_x[1, 0, 16, 16]) - 40) <= 2
    assert (base / "mlmmdr_cache_32.pt").is_file()
    (base / "img_align_celeba" / "000001.jpg").unlink()  # the cache is used from now on
    assert torch.equal(datasets.build("celeba", data_path=tmp_path).train_x, data.train_x)


def test_celeba_corrupt_image_is_a_clear_error(tmp_path):
    base = write_celeba(tmp_path)
    (base / "img_align_celeba" / "000002.jpg").write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt"):
        datasets.build("celeba", data_path=tmp_path)
    assert not (base / "mlmmdr_cache_32.pt").exists()


def write_gtsrb(root):
    base = root / "gtsrb"
    for label, count in ((0, 2), (42, 1)):
        folder = base / "GTSRB" / "Training" / f"{label:05d}"
        folder.mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((40, 45, 3), 10 + label, dtype=np.uint8)).save(folder / f"00000_{i:05d}.ppm")
    test = base / "GTSRB" / "Final_Test" / "Images"
    test.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i, label in enumerate((5, 17)):
        Image.fromarray(np.full((30, 30, 3), 200, dtype=np.uint8)).save(test / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;30;30;5;5;25;25;{label}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")


def test_gtsrb_reads_torchvision_layout(tmp_path):
    write_gtsrb(tmp_path)
    data = datasets.build("gtsrb", data_path=tmp_path)
    assert data.num_classes == 43
    assert data.train_y.tolist() == [0, 0, 42] and data.test_y.tolist() == [5, 17]
    assert data.train_x.shape == (3, 3, 32, 32) and int(data.train_x[2, 0, 0, 0]) == 52


def test_a_gtsrb_cache_missing_a_tensor_is_rebuilt(tmp_path):
    write_gtsrb(tmp_path)
    datasets.build("gtsrb", data_path=tmp_path)
    cache = next(tmp_path.rglob("mlmmdr_cache_32.pt"))
    torch.save({"train_x": torch.zeros(1, 3, 32, 32, dtype=torch.uint8)}, cache)  # an old or broken cache
    data = datasets.build("gtsrb", data_path=tmp_path)
    assert data.train_y.tolist() == [0, 0, 42] and set(torch.load(cache, weights_only=True)) == {
        "train_x", "train_y", "test_x", "test_y"}


def test_digits_is_a_seeded_stratified_80_20_split():
    a, b = datasets.build("digits", seed=0), datasets.build("digits", seed=1)
    assert len(a.train_y) == 1437 and len(a.test_y) == 360
    assert a.train_x.shape[1:] == (3, 32, 32) and a.train_x.dtype == torch.uint8
    assert torch.equal(a.test_y.bincount(), b.test_y.bincount())  # stratified: same class counts
    assert not torch.equal(a.test_x, b.test_x)
    assert torch.equal(a.test_x, datasets.build("digits", seed=0).test_x)


def test_missing_data_path_and_unknown_dataset():
    with pytest.raises(ParameterError, match="^data_path is required for fmnist"):
        datasets.build("fmnist")
    with pytest.raises(UserError, match="does not exist"):
        datasets.build("cifar10", data_path="/nonexistent/place")
    with pytest.raises(UserError, match="unknown dataset 'mnist'"):
        datasets.build("mnist")


@pytest.fixture
def served(tmp_path):
    """A local HTTP server whose cifar-10-python.tar.gz is 4 KiB of noise (not the archive): a real
    download, from 127.0.0.1, that torchvision then refuses as corrupt. Yields its URL."""
    import functools
    import http.server
    import threading

    root = tmp_path / "served"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(np.random.default_rng(0).bytes(4096))
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz"
    server.shutdown()
    server.server_close()


# .invalid never resolves (RFC 6761): a download from it fails at the name lookup on any machine,
# as every download fails on one without a network
UNRESOLVABLE = "http://invalid.invalid/cifar-10-python.tar.gz"


@pytest.mark.parametrize("case", ["unresolvable", "corrupt"])
def test_a_failed_download_is_one_line_and_leaves_nothing_behind(tmp_path, monkeypatch, capsys, served, case):
    """A --download that fails (offline: the name lookup; or an archive that is not CIFAR-10's) left
    the data folder, its lock and the partial archive behind, with a traceback or "check the path":
    now what the command created is removed, a folder that was there and its files stay, and the
    line says the download failed, why, and how to go on without a network."""
    from torchvision.datasets import CIFAR10

    import main
    from pipeline.cli import run_cli

    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)  # straight to the server, as on a machine without a proxy
    url = UNRESOLVABLE if case == "unresolvable" else served
    monkeypatch.setattr(CIFAR10, "url", url)
    data = tmp_path / "data" / "cifar"
    if case == "corrupt":  # a folder of the user's: it and what it held stay
        data.mkdir(parents=True)
        (data / "notes.txt").write_text("mine\n")
    before = sorted(path for path in tmp_path.rglob("*") if "served" not in path.parts)
    argv = ["--data_name", "cifar10", "--data_path", str(data), "--download", "--out_dir", str(tmp_path / "runs")]
    assert run_cli(main.main, argv) == 2
    *progress, error = capsys.readouterr().err.strip().splitlines()  # before it, only torchvision's download bar
    assert all("%|" in line for line in progress) and bool(progress) == (case == "corrupt"), progress
    why = "cannot resolve the server's name: " if case == "unresolvable" else "File not found or corrupted.)"
    assert error.startswith(f"error: downloading CIFAR-10 into {data} failed ({why}"), error
    assert error.endswith(f"; on a machine with internet access run this command (or fetch {url} and extract it), "
                          f"copy --data_path's folder to this machine and give it as --data_path, without --download")
    assert sorted(path for path in tmp_path.rglob("*") if "served" not in path.parts) == before


def test_download_for_a_dataset_that_is_never_downloaded_writes_nothing(tmp_path):
    """digits is built in: --download took the download lock all the same, leaving data/ and
    data/.digits.download.lock behind; it takes none for a dataset it does not fetch."""
    from pipeline.config import RunConfig
    from pipeline.prepare import load_data

    data = tmp_path / "data"
    assert load_data(RunConfig(data_name="digits", data_path=str(data), download=True)).name == "digits"
    assert list(tmp_path.iterdir()) == []
