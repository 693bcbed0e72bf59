"""What the serving tests share: reading a Prometheus exposition, and damaging a saved model."""

from __future__ import annotations

import shutil
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families


def sample(metrics_text: str, name: str, **labels: str) -> float:
    """The sum of the samples of a Prometheus exposition matching a name and labels (0 when none)."""
    return sum(
        found.value
        for family in text_string_to_metric_families(metrics_text)
        for found in family.samples
        if found.name == name and all(found.labels.get(key) == value for key, value in labels.items())
    )


def broken_copy(model: Path, destination: Path, damage: str) -> Path:
    """A copy of a saved model with one kind of damage: no tokenizer, no classifier head, or NaN weights."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(model, destination)
    [weights_file] = destination.rglob("model.safetensors")  # a model folder, or an MLflow model holding one
    if damage == "no tokenizer":
        for path in weights_file.parent.glob("tokenizer*"):
            path.unlink()
        return destination
    weights = load_file(weights_file)
    if damage == "no classifier head":
        weights = {name: tensor for name, tensor in weights.items() if not name.startswith("classifier")}
    else:
        weights = {name: torch.full_like(tensor, float("nan")) for name, tensor in weights.items()}
    save_file(weights, weights_file, metadata={"format": "pt"})
    return destination
