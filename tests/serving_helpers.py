"""What the serving tests share besides monitoring_stack's metric readers: damaging a saved model."""

from __future__ import annotations

import shutil
from pathlib import Path


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
