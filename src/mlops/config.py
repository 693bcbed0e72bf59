"""Typed view of params.yaml: the only place parameters are read.

Every section forbids unknown keys, and values are strict (no bool for an int, no
string for a number, no inf or NaN), so a mistake fails before any work starts
with one line that names the key. Bounds are those the libraries would enforce later.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops import dotted
from mlops.errors import MlopsError

DEFAULT_PARAMS = Path("params.yaml")

Fraction = Annotated[float, Field(gt=0, lt=1)]
Share = Annotated[float, Field(ge=0, le=1)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # numpy's seed range
PositiveInt = Annotated[int, Field(gt=0)]
Name = Annotated[str, Field(min_length=1, pattern=r"\S")]


def _registered_model_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,255}", name):
        raise ValueError(
            f"{name!r} is not a registered model name: use up to 256 letters, digits, spaces, '.', '_' or '-' "
            "(MLflow refuses '/' and ':'; quotes would break its search filters)"
        )
    return name


RegisteredModelName = Annotated[str, AfterValidator(_registered_model_name)]


class ConfigError(MlopsError):
    """params.yaml is missing, unreadable or invalid."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataParams(Section):
    path: Path
    text_column: Name
    label_column: Name
    group_column: Name | None  # None: every row is its own group (a stratified split by row)
    labels: Annotated[list[Name], Field(min_length=2)]
    ignore_labels: list[Name]
    test_size: Fraction
    validation_size: Fraction
    # Its own seed, not the training seed: a change of seed alone is then compared on the same test rows (paired).
    split_seed: Seed
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
    # The tokenizer trainer aborts the process (a Rust allocation failure) near 10**9.
    vocab_size: Annotated[int, Field(ge=100, le=1_000_000)]
    max_length: Annotated[int, Field(ge=8, le=512)]
    hidden_size: Annotated[int, Field(gt=0, le=8192)]
    num_layers: Annotated[int, Field(gt=0, le=96)]
    num_heads: Annotated[int, Field(gt=0, le=128)]
    intermediate_size: Annotated[int, Field(gt=0, le=65536)]
    dropout: Share
    classifier_dropout: Share
    ngram_buckets: Annotated[int, Field(ge=0, le=2**24)]

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ModelParams:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be a multiple of num_heads")
        return self


class OptimiserParams(Section):
    """What training and pretraining share: how long, in what batches, at what learning rate."""

    # A run of more epochs would not end in any useful time on the CPUs this template targets.
    epochs: Annotated[int, Field(gt=0, le=1000)]
    batch_size: Annotated[int, Field(gt=0, le=4096)]
    learning_rate: Annotated[float, Field(gt=0, le=1)]
    weight_decay: Annotated[float, Field(ge=0, le=1)]
    warmup_fraction: Share


class TrainParams(OptimiserParams):
    label_smoothing: Share
    progress_bar: bool
    # The n-gram model's own rate (model.ngram_buckets); null: learning_rate.
    ngram_learning_rate: Annotated[float, Field(gt=0, le=1)] | None = None
    # A GPU run: where to train, in what precision, and how many micro-batches make one optimiser step.
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    mixed_precision: Literal["none", "fp16", "bf16"] = "none"
    gradient_accumulation_steps: Annotated[int, Field(gt=0, le=1024)] = 1


class PretrainParams(OptimiserParams):
    """Masked-language-model pretraining of model's encoder on unlabelled text (the `pretrain` stage)."""

    mask_probability: Annotated[float, Field(gt=0, lt=1)]  # of the tokens, the share the model must guess
    dropout: Share


class EvaluateParams(Section):
    latency_requests: Annotated[int, Field(gt=0, le=100_000)]
    fail_without_skill: bool  # false: only warn when the model predicts one label or does not beat the majority rate
    baseline_max_features: Annotated[int, Field(gt=0, le=10_000_000)]
    baseline_ngram_max: Annotated[int, Field(ge=1, le=3)]
    baseline_c: Annotated[float, Field(gt=0)]


class TrackingParams(Section):
    experiment: Annotated[Name, Field(max_length=500)]
    registered_model: RegisteredModelName
    wandb: bool
    wandb_project: Name


class ReportParams(Section):
    # Per headline metric: how big a significant change must be to be called a regression or improvement.
    regression_tolerance: dict[str, Annotated[float, Field(ge=0)]]
    reproducibility_tolerance: Annotated[float, Field(ge=0)]


class GateParams(Section):
    """Promotion thresholds. Metric names are keys of evaluate/metrics.json."""

    minimum: dict[str, float]
    maximum: dict[str, float]
    max_regression: dict[str, Annotated[float, Field(ge=0)]]
    # "value": thresholds judged on the metric; "interval": on the worse bound of its 95% bootstrap interval.
    thresholds_on: Literal["value", "interval"] = "value"


class ReproducibilityParams(Section):
    pin_cpu_kernels: bool


class ServingParams(Section):
    challenger_share: Share
    shadow: bool
    max_batch_size: PositiveInt
    max_batch_wait_ms: Annotated[float, Field(ge=0, le=1000)]
    server_processes: PositiveInt | None
    inference_workers: Annotated[int, Field(ge=0)] | None
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
    window: Annotated[str, Field(pattern=r"^[1-9][0-9]*[smh]$")]  # Prometheus refuses a zero range
    min_requests: PositiveInt
    max_error_rate_increase: Share
    max_latency_p99_ratio: Annotated[float, Field(ge=1)]
    max_accuracy_drop: Share
    min_feedback: Annotated[int, Field(ge=0)]
    watch_interval_seconds: Annotated[float, Field(gt=0, le=86400)] = 60.0


class Params(Section):
    seed: Seed
    threads: PositiveInt
    reproducibility: ReproducibilityParams
    data: DataParams
    model: ModelParams
    pretrain: PretrainParams
    train: TrainParams
    evaluate: EvaluateParams
    tracking: TrackingParams
    report: ReportParams
    gate: GateParams
    serving: ServingParams
    canary: CanaryParams

    @field_validator("threads")
    @classmethod
    def _threads_fit_the_machine(cls, threads: int) -> int:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if threads > cpus:
            raise ValueError(f"{threads} is more than the {cpus} CPUs this process may use: lower it")
        return threads


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses duplicate keys and reads 1e-3 as a number, as YAML 1.2 (and DVC) do."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` keys may be overridden: that is what merging is for
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # SafeLoader refuses it with its own message
            if key in seen:
                raise ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}: keep one of them")
            seen.add(key)
        return super().construct_mapping(node, deep)


_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _describe(error: ValidationError, path: Path) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key (check its spelling against params.yaml in the template)"
    elif first["type"] == "string_pattern_mismatch" and first["ctx"]["pattern"] == r"\S":
        message = "must not be empty or blank"
    elif first["type"] == "missing":
        message = "missing (copy it from params.yaml in the template)"
    elif first["type"] == "value_error":
        message = str(first["ctx"]["error"])
    elif "input" in first:
        message = f"{message}, got {first['input']!r}"
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{path}: {location}: {message}{suffix}"


def _read_mapping(path: Path) -> dict:
    """The parsed params file as a mapping, or ConfigError naming the line at fault."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path} not found: run from the project root or pass --params") from None
    except IsADirectoryError:
        raise ConfigError(f"{path} is a folder: pass the parameters file with --params") from None
    except OSError as error:
        raise ConfigError(f"{path} cannot be read ({error.strerror}): check its permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ConfigError(
            f"{path} line {line} has a byte that is not UTF-8 (0x{data[error.start]:02x}): save the file as UTF-8"
        ) from None
    try:
        raw = yaml.load(text, Loader=_StrictLoader)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path} is not valid YAML{where}: fix the syntax") from None
    if raw is None:
        raise ConfigError(f"{path} is empty: copy params.yaml from the template and edit it")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must be a mapping of sections, got a {type(raw).__name__}")
    return raw


def load_params(path: Path = DEFAULT_PARAMS) -> Params:
    """Read and validate params.yaml, raising ConfigError with one readable line."""
    raw = _read_mapping(path)
    try:
        # Through JSON so that strict mode still reads paths from strings; YAML dates and the like become text.
        text = json.dumps(raw, default=str)
    except ValueError:  # json's "Circular reference detected": an alias inside its own anchor
        raise ConfigError(
            f"{path}: an alias (*name) is used inside its own anchor (&name): write the value out"
        ) from None
    try:
        return Params.model_validate_json(text, strict=True)
    except ValidationError as error:
        raise ConfigError(_describe(error, path)) from None


def flatten(params: Params) -> dict[str, object]:
    """Params as dotted keys, the form MLflow and the reports use."""
    return dotted.flatten(params.model_dump(mode="json"))
