"""DDP where machines differ: an epoch whose last batch leaves a rank without rows; a failure of rank 0 alone (a full disk on the rank that writes) ends
every rank within seconds; a resume whose file only rank 0 can read reaches every rank; a resume
on another number of ranks is refused unless the run does not depend on it; a checkpoint that
recorded more GPUs than this machine has still resumes. Two gloo ranks on the CPU."""
import dataclasses
import errno
import json
import os
import time

import pytest
import torch

from tests.conftest import free_port, leave_spawned_rank
from utils.distributed import Context, PeerFailure
from utils.errors import UserError

FLAGS = ["--data_name", "digits", "--width", "0.125", "--epochs", "3", "--train_subset", "200", "--mlmmdr_lamb",
         "0.3", "--sync_bn", "--device", "cpu", "--no_progress"]


def _rank_train(rank: int, port: int, out_dir: str, resume: bool, failing: str, report: str) -> None:
    """Train the run of FLAGS as rank ``rank`` of 2 (env:// rendezvous, as torchrun starts it);
    ``failing`` makes one of rank 0's writes fail or rank 1's reads fail. Writes what happened."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import pipeline.stages.train as train_stage
    from pipeline.cli import build_run_parser, config_from_args
    from utils import distributed

    if failing == "second resume save" and rank == 0:
        calls = []
        original = train_stage.save_torch

        def full_disk(obj, path):
            calls.append(path)
            if len(calls) == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            original(obj, path)

        train_stage.save_torch = full_disk
    if failing == "other node's disk" and rank == 1:
        def unreadable(path):
            raise FileNotFoundError(errno.ENOENT, "not on this node", str(path))

        train_stage.load_checkpoint = unreadable
    config = config_from_args(build_run_parser("test").parse_args(FLAGS + ["--out_dir", out_dir]
                                                                   + (["--resume"] if resume else [])))
    started = time.time()
    outcome = {"rank": rank}
    try:
        result = train_stage.train(config)
        outcome.update(ok=True, ba=result["ba"], asr=result["asr"], epochs=result["epochs"])
    except BaseException as error:  # recorded for the test to read
        outcome.update(ok=False, error=type(error).__name__, message=str(error))
    outcome["seconds"] = time.time() - started
    outcome["ended"] = time.time()
    with open(f"{report}.{rank}", "w") as handle:  # before the teardown, which gloo may abort after a peer failed
        json.dump(outcome, handle)
    distributed.shutdown()


def _spawn(tmp_path, name: str, out_dir, resume: bool = False, failing: str = "") -> list:
    import torch.multiprocessing as mp

    report = str(tmp_path / name)
    context = mp.spawn(_rank_train, args=(free_port(), str(out_dir), resume, failing, report), nprocs=2,
                       join=False)
    deadline = time.time() + 240  # the collective timeout is 30 minutes: a rank left waiting fails this
    while any(process.exitcode is None for process in context.processes):
        assert time.time() < deadline, "a rank is still waiting"
        time.sleep(0.5)
    # what each rank did is in its report; an exit code after it (a teardown abort) is not the test's
    return [json.loads(open(f"{report}.{rank}").read()) for rank in range(2)]


NAME = "digits_vgg11_patched_mlmmdr_0.3_all_w0.125_n200"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The uninterrupted run, and a run whose rank 0 hit a full disk at its second epoch's save and
    was then resumed with its resume file unreadable on rank 1's node."""
    folder = tmp_path_factory.mktemp("ddp_failures")
    whole = _spawn(folder, "whole", folder / "whole")
    failed = _spawn(folder, "failed", folder / "broken", failing="second resume save")
    left = sorted(path.name for path in (folder / "broken" / f".{NAME}.staging").iterdir())
    in_place = (folder / "broken" / NAME).exists()
    resumed = _spawn(folder, "resumed", folder / "broken", resume=True, failing="other node's disk")
    return {"whole": whole, "failed": failed, "resumed": resumed, "folder": folder, "left": left,
            "in_place": in_place}


def test_a_full_disk_on_rank_0_stops_every_rank_at_once(runs):
    rank0, rank1 = runs["failed"]
    assert (rank0["ok"], rank0["error"]) == (False, "UserError") and "No space left on device" in rank0["message"]
    assert rank0["message"].endswith("the run resumes from its last finished epoch with --resume")
    assert (rank1["ok"], rank1["error"]) == (False, "PeerFailure")
    assert rank1["message"].startswith("rank 0 failed (OSError: [Errno 28] No space left on device")
    assert abs(rank0["ended"] - rank1["ended"]) < 30  # seconds, not the 30-minute collective timeout
    # the first epoch's resume state and history stay for a resume; nothing was put in place
    assert runs["left"] == ["config.json", "history.csv", "resume.pt"] and not runs["in_place"]


def test_the_resume_state_reaches_every_rank_from_rank_0(runs):
    """Rank 1 cannot read the file (its node's disk); it gets rank 0's state and the resumed run
    ends with the uninterrupted run's numbers."""
    assert all(outcome["ok"] for outcome in runs["resumed"]), runs["resumed"]
    whole = json.loads((runs["folder"] / "whole" / NAME / "metrics.json").read_text())
    resumed = json.loads((runs["folder"] / "broken" / NAME / "metrics.json").read_text())
    without_seconds = lambda history: [{k: v for k, v in row.items() if k != "seconds"} for row in history]  # noqa
    assert without_seconds(resumed["history"]) == without_seconds(whole["history"])
    assert len(resumed["history"]) == 3


@pytest.mark.parametrize("recorded, now, sync_bn, mmd_sync, allowed", [
    (2, 2, False, "global", True),
    (2, 1, True, "global", True),      # --sync_bn and the global MMD²: the one-process update
    (4, 2, True, "global", True),
    (2, 1, False, "global", False),    # each rank normalised its own shard
    (1, 2, True, "local", False),      # each rank's own MMD²
])
def test_a_resume_on_another_number_of_ranks_goes_on_only_when_the_run_does_not_depend_on_it(
        recorded, now, sync_bn, mmd_sync, allowed):
    from pipeline.config import RunConfig
    from pipeline.stages.train import check_world_size

    config = RunConfig(data_name="digits", sync_bn=sync_bn, mmd_sync=mmd_sync).resolve_defaults()
    if allowed:
        check_world_size(recorded, now, config, "resume.pt")
    else:
        with pytest.raises(UserError, match=f"written by a run on {recorded} rank.*this one has {now}"):
            check_world_size(recorded, now, config, "resume.pt")


def _trainer(context=Context(), **settings):
    import datasets
    import models
    from attacks import build as build_attack
    from attacks.poisoning import PoisonedData
    from training import Trainer, TrainSettings

    data = datasets.build("digits", seed=0)
    poisoned = PoisonedData(data.train_x[:100], data.train_y[:100], build_attack("patched"))
    model = models.build("vgg11", num_classes=10, width=0.125)
    return Trainer(model, poisoned, TrainSettings(progress=False, **settings), torch.device("cpu"), context)


def test_a_checkpoint_that_recorded_more_gpus_than_this_machine_has_resumes():
    """Older checkpoints saved every visible GPU's generator, which set_rng_state_all cannot restore
    on fewer GPUs; training never draws from them, so none is saved and such an entry is ignored."""
    trainer = _trainer()
    state = trainer.state_dict([])
    assert "cuda_rng" not in state and state["world_size"] == 1
    state["cuda_rng"] = [torch.zeros(16, dtype=torch.uint8)] * (torch.cuda.device_count() + 8)
    assert _trainer().load_state_dict(state) == []


def test_compile_with_sync_bn_under_ddp_is_refused():
    with pytest.raises(UserError, match="--compile with --sync_bn under torchrun is not supported"):
        _trainer(Context(0, 2), compile=True, sync_bn=True)


def one_epoch(context: Context, amp: bool, dtype=torch.float64, device=torch.device("cpu"), images: int = 59) -> dict:
    """One epoch at batch 64 with --sync_bn and ML-MMDR (λ 0.3) on ``images`` digits plus 10%
    poisoned copies; the weights after it. The default 59 + 6 = 65 rows leave a last batch of 1
    row, so on 2 ranks rank 1 gets none. Model and inputs in ``dtype``: in float64 the comparison
    with one process is exact to the rounding of sums taken in another order."""
    import datasets
    import models
    from attacks import build as build_attack
    from attacks.poisoning import PoisonedData
    from training import Trainer, TrainSettings

    class Converted(PoisonedData):
        def make_batch(self, positions):
            batch = super().make_batch(positions)
            return dataclasses.replace(batch, x=batch.x.to(dtype))

    data = datasets.build("digits", seed=0)
    poisoned = Converted(data.train_x[:images], data.train_y[:images], build_attack("patched"), poison_ratio=0.1,
                         device=device)
    torch.manual_seed(0)
    model = models.build("vgg11", num_classes=10, width=0.125).to(device=device, dtype=dtype)
    settings = TrainSettings(batch_size=64, mlmmdr_lamb=0.3, sync_bn=True, amp=amp, lr=0.05, progress=False)
    trainer = Trainer(model, poisoned, settings, device, context)
    trainer.train_epoch(0)
    trainer.close()
    return {key: value.detach().cpu().clone() for key, value in model.state_dict().items()}


def _rank_short_epoch(rank: int, store: str, out: str) -> None:
    import torch.distributed as dist

    from utils import distributed

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        results = {"exact": one_epoch(Context(rank, 2), amp=False),
                   "amp": one_epoch(Context(rank, 2), amp=True, dtype=torch.float32)}
        if rank == 0:
            torch.save(results, out)
    finally:
        distributed.shutdown()  # frees the group before the interpreter exits
    leave_spawned_rank()


@pytest.mark.numerics
def test_an_epoch_whose_last_batch_leaves_a_rank_without_rows(tmp_path):
    """The empty rank takes part in every collective (BatchNorm's statistics, the gathered MMD,
    DDP's gradients) and the epoch equals one process's; under --amp it ends too, with the
    synchronised BatchNorm's statistics in float32."""
    import torch.multiprocessing as mp

    out = tmp_path / "states.pt"
    context = mp.spawn(_rank_short_epoch, args=(str(tmp_path / "store"), str(out)), nprocs=2, join=False)
    deadline = time.time() + 240
    while not context.join(timeout=1):
        assert time.time() < deadline, "a rank is still waiting"
    results = torch.load(out, weights_only=True)
    single = one_epoch(Context(), amp=False)
    differences = [(results["exact"][key] - single[key]).abs().max().item() for key in single
                   if single[key].is_floating_point()]
    # float64: the sums run in another order on two ranks, ~1e-16 relative per operation; two
    # steps of SGD at lr 0.05 leave the weights within far less than 1e-9 of each other
    assert max(differences) < 1e-9, max(differences)
    amp_state = results["amp"]
    assert all(value.isfinite().all() for value in amp_state.values() if value.is_floating_point())
    assert all(amp_state[key].dtype == torch.float32 for key in amp_state if key.endswith("running_mean"))


@pytest.mark.parametrize("error, printed", [
    (UserError("the data folder is not readable on this node"), "rank 1: error: the data folder is not readable"),
    (PeerFailure("rank 0 failed (OSError: disk full); its own output says more"), "rank 1: error: rank 0 failed"),
    (PeerFailure("bad input rank 0 prints", echo=True), ""),
])
def test_a_rank_above_0_reports_its_own_errors_but_not_rank_0s_line_again(monkeypatch, capsys, error, printed):
    from pipeline.cli import run_cli

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")

    def fails(argv):
        raise error

    assert run_cli(fails, []) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(printed) and (printed or err == "")


def test_a_download_holds_the_data_folders_lock(tmp_path, monkeypatch):
    """Every rank and array task downloads in turn (the first one downloads, the others find the
    files); the download itself is replaced here, this machine having no network."""
    from filelock import FileLock, Timeout

    import pipeline.prepare
    from pipeline.config import RunConfig

    held = []

    def download(name, data_path=None, seed=0, download=False):
        try:
            FileLock(str(tmp_path / ".cifar10.download.lock"), timeout=0).acquire()
            held.append(False)
        except Timeout:
            held.append(True)
        return "dataset"

    monkeypatch.setattr(pipeline.prepare.datasets, "build", download)
    config = RunConfig(data_name="cifar10", data_path=str(tmp_path), download=True)
    assert pipeline.prepare.load_data(config) == "dataset" and held == [True]
