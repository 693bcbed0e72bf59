"""`mlops doctor`: what in a fork still refers to the shipped example (mlops.ml.example), one line each.

Read-only: it looks at params.yaml, data.dvc, the card's prose, the README, the example's tests and the
committed results, and says what to change.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import yaml

from mlops.config import Params, flatten
from mlops.ml.spec import CARD_TEMPLATE
from mlops.paths import DATA_DVC_FILE, METRICS_FILE

README_FILE = Path("README.md")
EXAMPLE_MODULE = "mlops.ml.example"

# What to do about each example value still in params.yaml, by the key's section.
ADVICE = {
    "data": "point it at your data (README: Make it yours)",
    "tracking": "name your experiment and registered model",
    "gate": "set what your model must reach on your data",
    "train": "small data usually needs more epochs; a model that learned nothing fails evaluate",
}


def _example():
    try:
        return importlib.import_module(EXAMPLE_MODULE)
    except ModuleNotFoundError:
        return None


def _mentions(text: str, words: list[str]) -> list[str]:
    return [word for word in words if re.search(rf"\b{re.escape(word)}", text, flags=re.IGNORECASE)]


def _data_md5() -> str | None:
    try:
        outs = yaml.safe_load(DATA_DVC_FILE.read_text()).get("outs") or []
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return outs[0].get("md5") if outs and isinstance(outs[0], dict) else None


def findings(params: Params) -> list[str]:
    """One line per thing that still refers to the example; empty once the fork is its own."""
    example = _example()
    if example is None:
        return []
    found = []
    flat = flatten(params)
    for key, value in example.PARAMS.items():
        if flat.get(key) == value:
            advice = ADVICE.get(key.split(".")[0], "set it for your project")
            found.append(f"params.yaml {key} is still the example's ({value!r}): {advice}")
    if _data_md5() == example.DATA_MD5:
        found.append(f"{DATA_DVC_FILE} still tracks the example data: put yours in data/, then `dvc add data`")
    words = _mentions(CARD_TEMPLATE.read_text(), example.WORDS)
    if words:
        found.append(
            f"src/mlops/ml/{CARD_TEMPLATE.name} (the model card's prose) still describes the example "
            f"({', '.join(words)}): write your model's intended use and limitations"
        )
    if README_FILE.exists() and (words := _mentions(README_FILE.read_text(), example.WORDS)):
        found.append(
            f"{README_FILE} still describes the example ({', '.join(words)}): say what your model does, "
            "where its data comes from (and its licence) and your figures"
        )
    found += [
        f"{name} tests the example's data: delete it, or rewrite it for yours"
        for name in example.TEST_FILES
        if Path(name).exists()
    ]
    try:
        committed = list(json.loads(METRICS_FILE.read_text()).get("per_class", {}))
    except (OSError, ValueError, AttributeError):
        committed = None
    if committed and committed != params.data.labels:
        found.append(
            f"{METRICS_FILE} holds results for the labels {committed}, not {params.data.labels}: "
            "run `dvc repro` and commit dvc.lock and evaluate/"
        )
    return found
