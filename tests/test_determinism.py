"""The CPU kernel pins: the same weights on any x86-64 CPU with AVX2, set by the project itself."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from numpy._core._multiarray_umath import __cpu_features__

from conftest import copy_repository, run, tiny_params, write_params
from mlops import determinism
from mlops.config import ReproducibilityParams
from mlops.errors import MlopsError

PINNED = ReproducibilityParams(pin_cpu_kernels=True)

# What an AVX2 machine without AVX-512 looks like to each library that picks its kernels from the CPU:
# oneMKL, ATen, oneDNN (the three the pins hold), and numpy and OpenBLAS (the baseline and the metrics).
AVX2_MACHINE = {
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
    "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR",
}


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy of the environment without the pins, so what a test pins stays out of later tests' processes."""
    environment = {name: value for name, value in os.environ.items() if name not in determinism.KERNEL_PINS}
    monkeypatch.setattr(os, "environ", environment)


@pytest.mark.usefixtures("clean_environment")
def test_pinning_puts_every_pin_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(determinism, "_is_x86_64", lambda: True)
    monkeypatch.setattr(determinism, "_has_avx2", lambda: True)
    determinism.pin_kernels(PINNED)
    assert {name: os.environ[name] for name in determinism.KERNEL_PINS} == determinism.KERNEL_PINS


@pytest.mark.usefixtures("clean_environment")
def test_a_cpu_without_avx2_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(determinism, "_is_x86_64", lambda: True)
    monkeypatch.setattr(determinism, "_has_avx2", lambda: False)
    with pytest.raises(MlopsError, match=r"lacks AVX2.*reproducibility\.pin_cpu_kernels: false"):
        determinism.pin_kernels(PINNED)
    assert not set(determinism.KERNEL_PINS) & set(os.environ)


@pytest.mark.usefixtures("clean_environment")
@pytest.mark.parametrize("x86_64, setting", [(False, True), (True, False)], ids=["arm", "switched off"])
def test_other_architectures_and_the_switch_leave_the_environment_alone(
    monkeypatch: pytest.MonkeyPatch, x86_64: bool, setting: bool
) -> None:
    monkeypatch.setattr(determinism, "_is_x86_64", lambda: x86_64)
    determinism.pin_kernels(ReproducibilityParams(pin_cpu_kernels=setting))
    assert not set(determinism.KERNEL_PINS) & set(os.environ)


def _project(root: Path, pin: bool) -> Path:
    project = copy_repository(root)
    write_params(project, tiny_params(reproducibility={"pin_cpu_kernels": pin}))
    run(["dvc", "pull", "-q", "data.dvc"], project)
    return project


@pytest.mark.slow
@pytest.mark.parametrize("pin", [True, False], ids=["pinned", "unpinned"])
def test_the_training_process_runs_the_pinned_kernels_only_when_asked(tmp_path: Path, pin: bool) -> None:
    project = _project(tmp_path / "project", pin)
    write_params(project, tiny_params(reproducibility={"pin_cpu_kernels": pin}, train={"epochs": 1}))
    result = run(["mlops", "train"], project, env={"MKL_VERBOSE": "1"})
    # oneMKL reports its reproducibility branch on every call; ATen's capability is checked in-process.
    assert ("CNR:COMPATIBLE" in result.stdout) is pin
    assert ("CPU kernels pinned for reproducibility" in result.stderr) is pin
    if not pin:
        assert "CPU kernels not pinned" in result.stderr


def _train_and_evaluate(project: Path, machine: dict[str, str]) -> tuple[str, dict]:
    for command in (["mlops", "train"], ["mlops", "evaluate"]):
        run(command, project, env=machine)
    weights = hashlib.sha256((project / "models" / "model" / "model.safetensors").read_bytes()).hexdigest()
    metrics = json.loads((project / "evaluate" / "metrics.json").read_text())
    for timing in ("latency_p50_ms", "latency_p95_ms"):  # wall time: the one machine-dependent figure
        metrics.pop(timing)
    return weights, metrics


@pytest.mark.heavy
def test_pinned_training_gives_identical_weights_and_metrics_on_an_avx2_machine_and_an_avx512_one(
    tmp_path: Path,
) -> None:
    pinned = _project(tmp_path / "pinned", pin=True)
    unpinned = _project(tmp_path / "unpinned", pin=False)
    shutil.copytree(pinned, tmp_path / "pinned-avx2", symlinks=True)
    shutil.copytree(unpinned, tmp_path / "unpinned-avx2", symlinks=True)

    assert _train_and_evaluate(pinned, {}) == _train_and_evaluate(tmp_path / "pinned-avx2", AVX2_MACHINE)
    if not __cpu_features__["AVX512_SKX"]:
        pytest.skip("this CPU has no AVX-512, so it cannot also play the part of an AVX-512 machine")
    # The same two machines without the pins disagree: the check above could have failed.
    assert _train_and_evaluate(unpinned, {})[0] != _train_and_evaluate(tmp_path / "unpinned-avx2", AVX2_MACHINE)[0]
