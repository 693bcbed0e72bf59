"""Distributed training: the train stage under `torchrun` on CPU (gloo) matches a single-process run, and the
GPU settings of params.yaml are checked before any work."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from conftest import BIN, copy_repository, run, tiny_params, write_params
from mlops.config import ConfigError, TrainParams, load_params
from mlops.errors import MlopsError
from mlops.ml import train as train_lib

# The two runs see the same examples per optimiser step but not the same batches: each process takes its
# share of the length-grouped batches, so padding, dropout masks and the order of the sums differ, and the
# weights drift apart a little. On the tiny data (about 60 validation and 120 test rows, where one row moves
# accuracy by 0.8 to 1.7 points) the runs land within a few rows and a few hundredths of loss of each other.
ACCURACY_TOLERANCE = 0.05
LOSS_TOLERANCE = 0.03
CPU_SETTINGS = {"epochs": 1, "batch_size": 8, "learning_rate": 0.001, "weight_decay": 0.0}
CPU_SETTINGS |= {"warmup_fraction": 0.0, "label_smoothing": 0.0, "progress_bar": False}


@pytest.mark.parametrize(
    "batch_size, accumulation, processes, layout",
    [
        (64, 1, 1, (64, 1)),
        (64, 1, 2, (32, 1)),
        (64, 2, 2, (64, 1)),
        (64, 3, 2, (48, 2)),
        (6, 2, 4, (3, 1)),
    ],
)
def test_every_layout_keeps_the_examples_per_optimiser_step(
    batch_size: int, accumulation: int, processes: int, layout: tuple[int, int]
) -> None:
    per_device, steps = train_lib.batch_layout(batch_size, accumulation, processes)
    assert (per_device, steps) == layout
    assert per_device * steps * processes == batch_size * accumulation
    assert per_device <= batch_size


def test_a_batch_the_processes_cannot_share_evenly_is_refused_with_what_to_do() -> None:
    with pytest.raises(MlopsError, match=r"64 examples per step cannot be shared evenly by 3 processes: make it"):
        train_lib.batch_layout(64, 1, 3)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_on_cpu_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    settings = TrainParams(**CPU_SETTINGS, device="auto", mixed_precision=precision)
    with pytest.raises(MlopsError, match=rf"train\.mixed_precision {precision} needs a CUDA GPU"):
        train_lib._device(settings)


def test_cuda_without_a_gpu_is_refused_and_auto_falls_back_to_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MlopsError, match=r"train\.device is cuda but torch sees no CUDA GPU"):
        train_lib._device(TrainParams(**CPU_SETTINGS, device="cuda"))
    assert train_lib._device(TrainParams(**CPU_SETTINGS, device="auto")) == "cpu"


def test_the_defaults_train_on_cpu_in_full_precision_one_step_per_batch() -> None:
    settings = TrainParams(**CPU_SETTINGS)
    assert (settings.device, settings.mixed_precision, settings.gradient_accumulation_steps) == ("cpu", "none", 1)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"device": "gpu"}, "train.device: Input should be 'auto', 'cpu' or 'cuda'"),
        # Unquoted, YAML reads no as false: the message shows what it read.
        ({"mixed_precision": False}, "train.mixed_precision: Input should be 'none', 'fp16' or 'bf16', got False"),
        ({"gradient_accumulation_steps": 0}, "train.gradient_accumulation_steps: Input should be greater than 0"),
    ],
)
def test_a_bad_gpu_setting_names_its_key(tmp_path: Path, change: dict, expected: str) -> None:
    write_params(tmp_path, tiny_params(train=change))
    with pytest.raises(ConfigError) as error:
        load_params(tmp_path / "params.yaml")
    assert expected in str(error.value)


def _train_and_evaluate(project: Path, launcher: list[str]) -> tuple[dict, list[dict], str]:
    """Train with ``launcher`` in a fresh store, evaluate in one process; the metrics, history and train log."""
    for leftover in ("models", "evaluate", "mlartifacts", "mlflow.db"):
        path = project / leftover
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    trained = run([*launcher, str(BIN / "mlops"), "train"], project)
    run([str(BIN / "mlops"), "evaluate"], project)
    metrics = json.loads((project / "evaluate" / "metrics.json").read_text())
    history = json.loads((project / "models" / "history.json").read_text())
    return metrics, history, trained.stdout + trained.stderr


def _logged_runs(project: Path) -> int:
    with sqlite3.connect(project / "mlflow.db") as store:
        return store.execute("SELECT COUNT(*) FROM runs").fetchone()[0]


@pytest.mark.heavy
@pytest.mark.needs("data")
def test_two_processes_on_cpu_train_like_one_and_only_rank_0_writes_and_logs(tmp_path: Path) -> None:
    project = copy_repository(tmp_path / "project")
    write_params(project, tiny_params())
    run(["dvc", "pull", "-q", "data.dvc"], project)

    single, single_history, _ = _train_and_evaluate(project, [])
    # --standalone: a free rendezvous port on this machine, so parallel test runs do not meet each other.
    torchrun = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", "--no-python"]
    double, double_history, log = _train_and_evaluate(project, torchrun)

    assert log.count("trained models/model; MLflow run") == 1
    assert "the 2 processes trained the same tokenizer" in log
    assert _logged_runs(project) == 1
    assert not list(project.glob(".models-*"))
    assert [row["epoch"] for row in double_history] == [row["epoch"] for row in single_history]
    final_single, final_double = single_history[-1], double_history[-1]
    assert final_double["validation_accuracy"] == pytest.approx(
        final_single["validation_accuracy"], abs=ACCURACY_TOLERANCE
    )
    assert final_double["validation_loss"] == pytest.approx(final_single["validation_loss"], abs=LOSS_TOLERANCE)
    assert double["accuracy"] == pytest.approx(single["accuracy"], abs=ACCURACY_TOLERANCE)
    assert double["log_loss"] == pytest.approx(single["log_loss"], abs=LOSS_TOLERANCE)
