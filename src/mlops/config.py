"""Typed view of params.yaml: the only place parameters are read.

Every section forbids unknown keys, so a typo fails before any work starts
with one line that names the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mlops import dotted
from mlops.errors import MlopsError

DEFAULT_PARAMS = Path("params.yaml")

Fraction = Annotated[float, Field(gt=0, lt=1)]
Share = Annotated[float, Field(ge=0, le=1)]
PositiveInt = Annotated[int, Field(gt=0)]


class ConfigError(MlopsError):
    """params.yaml is missing, unreadable or invalid."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(Section):
    path: Path
    text_column: str
    label_column: str
    group_column: str
    labels: Annotated[list[str], Field(min_length=2)]
    ignore_labels: list[str]
    test_size: Fraction
    validation_size: Fraction
    max_rows: PositiveInt | None

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> DataParams:
        if self.test_size + self.validation_size >= 0.9:
            raise ValueError("test_size + validation_size must leave at least 10% for training")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError("labels must be distinct")
        return self


class ModelParams(Section):
    pretrained: str | None
    vocab_size: Annotated[int, Field(ge=100)]
    max_length: Annotated[int, Field(ge=8, le=512)]
    hidden_size: PositiveInt
    num_layers: PositiveInt
    num_heads: PositiveInt
    intermediate_size: PositiveInt
    dropout: Share
    classifier_dropout: Share

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelParams:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        return self


class TrainParams(Section):
    epochs: PositiveInt
    batch_size: PositiveInt
    learning_rate: Annotated[float, Field(gt=0, le=1)]
    weight_decay: Annotated[float, Field(ge=0)]
    warmup_fraction: Share
    label_smoothing: Share
    progress_bar: bool


class EvaluateParams(Section):
    latency_requests: PositiveInt
    baseline_max_features: PositiveInt
    baseline_ngram_max: Annotated[int, Field(ge=1, le=3)]
    baseline_c: Annotated[float, Field(gt=0)]


class TrackingParams(Section):
    experiment: str
    registered_model: str
    wandb: bool
    wandb_project: str


class ReportParams(Section):
    regression_tolerance: Annotated[float, Field(ge=0)]
    reproducibility_tolerance: Annotated[float, Field(ge=0)]


class GateParams(Section):
    """Promotion thresholds. Metric names are keys of evaluate/metrics.json."""

    minimum: dict[str, float]
    maximum: dict[str, float]
    max_regression: dict[str, Annotated[float, Field(ge=0)]]


class ServingParams(Section):
    challenger_share: Share
    shadow: bool
    max_batch_size: PositiveInt
    max_batch_wait_ms: Annotated[float, Field(ge=0, le=1000)]
    inference_threads: PositiveInt | None
    max_items: PositiveInt
    max_text_chars: PositiveInt
    reload_seconds: Annotated[float, Field(gt=0)]
    feedback_window: PositiveInt
    max_queued_texts: PositiveInt
    read_timeout_seconds: Annotated[float, Field(gt=0, le=3600)]

    @model_validator(mode="after")
    def _queue_takes_a_full_request(self) -> ServingParams:
        if self.max_queued_texts < self.max_items:
            raise ValueError(
                f"max_queued_texts ({self.max_queued_texts}) is below max_items ({self.max_items}): "
                "a full request could never be admitted"
            )
        return self


class CanaryParams(Section):
    window: Annotated[str, Field(pattern=r"^[0-9]+[smh]$")]
    min_requests: PositiveInt
    max_error_rate_increase: Share
    max_latency_p99_ratio: Annotated[float, Field(ge=1)]
    max_accuracy_drop: Share
    min_feedback: Annotated[int, Field(ge=0)]


class Params(Section):
    seed: int
    threads: PositiveInt
    data: DataParams
    model: ModelParams
    train: TrainParams
    evaluate: EvaluateParams
    tracking: TrackingParams
    report: ReportParams
    gate: GateParams
    serving: ServingParams
    canary: CanaryParams


def _describe(error: ValidationError, path: Path) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key (check its spelling against params.yaml in the template)"
    elif first["type"] == "value_error":
        message = str(first["ctx"]["error"])
    elif "input" in first and first["type"] != "missing":
        message = f"{message}, got {first['input']!r}"
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{path}: {location}: {message}{suffix}"


def load_params(path: Path = DEFAULT_PARAMS) -> Params:
    """Read and validate params.yaml, raising ConfigError with one readable line."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run from the project root or pass --params") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: fix the syntax") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_describe(error, path)) from None


def flatten(params: Params) -> dict[str, object]:
    """Params as dotted keys, the form MLflow and the reports use."""
    return dotted.flatten(params.model_dump(mode="json"))
