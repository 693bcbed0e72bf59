"""Training: the transformers Trainer, seeded, keeping the best epoch on the validation split.

Forkers: edit this file to change how the model learns (optimiser settings, schedule,
early stopping). It returns the per-epoch history that the tracking and the plots use.

Launched by `torchrun --nproc-per-node N` (or `accelerate launch`), the Trainer runs distributed data
parallel by itself: each process trains on its share of every batch, gloo carries the gradients on CPU,
NCCL on GPUs. Only the first process (rank 0) saves the model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score
from transformers import (
    DataCollatorWithPadding,
    EvalPrediction,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    enable_full_determinism,
)

from mlops.config import Params, TrainParams
from mlops.errors import MlopsError
from mlops.ml import model as model_lib
from mlops.ml.data import Splits, encode_labels

log = logging.getLogger(__name__)


class TrainingSetupError(MlopsError):
    """The device, precision or process layout asked for cannot be used here."""


def launched_processes() -> int:
    """How many processes share the training: torchrun and accelerate launch say so in WORLD_SIZE."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def batch_layout(batch_size: int, accumulation: int, processes: int) -> tuple[int, int]:
    """The per-process batch and accumulation steps that keep ``batch_size * accumulation`` examples per optimiser
    step over ``processes``, each process taking at most ``batch_size`` at once (a GPU's memory holds that much)."""
    per_step = batch_size * accumulation
    for steps in range(1, per_step + 1):
        if per_step % (processes * steps) == 0 and per_step // (processes * steps) <= batch_size:
            return per_step // (processes * steps), steps
    raise TrainingSetupError(
        f"train.batch_size x train.gradient_accumulation_steps = {per_step} examples per step cannot be shared "
        f"evenly by {processes} processes: make it a multiple of {processes}"
    )


def _device(settings: TrainParams) -> str:
    """cpu or cuda, from train.device and what torch sees; refuses what cannot work."""
    cuda = torch.cuda.is_available()
    if settings.device == "cuda" and not cuda:
        raise TrainingSetupError("train.device is cuda but torch sees no CUDA GPU: set train.device: auto or cpu")
    device = "cuda" if settings.device == "cuda" or (settings.device == "auto" and cuda) else "cpu"
    if device == "cpu" and settings.mixed_precision != "none":
        # Half precision is a GPU feature (slow or missing on most CPUs), and autocast on CPU would undo the
        # pinned kernels' repeatable weights.
        raise TrainingSetupError(
            f"train.mixed_precision {settings.mixed_precision} needs a CUDA GPU: set it to none to train on CPU"
        )
    return device


def _check_same_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    """Every process trains its own tokenizer from the same texts: stop if any came out different."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    vocabulary = sorted(tokenizer.get_vocab().items())
    digest = hashlib.sha256(repr(vocabulary).encode()).hexdigest()
    digests: list[str | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(digests, digest)
    if len(set(digests)) > 1:
        raise TrainingSetupError(
            f"the processes trained {len(set(digests))} different tokenizers from the same texts: "
            "tokenizer training is not deterministic here; train on one process"
        )
    if torch.distributed.get_rank() == 0:
        log.info("the %d processes trained the same tokenizer (sha256 %s)", len(digests), digest[:12])


class EncodedTexts(torch.utils.data.Dataset):
    def __init__(self, frame: pd.DataFrame, tokenizer: PreTrainedTokenizerBase, labels: list[str], max_length: int):
        self.encodings = tokenizer(frame["text"].tolist(), truncation=True, max_length=max_length)
        self.labels = encode_labels(frame["label"], labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, object]:
        item = {key: values[index] for key, values in self.encodings.items()}
        item["labels"] = int(self.labels[index])
        return item


def _own_learning_rate(optimizer: torch.optim.Optimizer, weight: torch.Tensor, learning_rate: float) -> None:
    """Move ``weight`` out of the optimiser's parameter groups into one of its own at ``learning_rate``, with the
    same weight decay; the Trainer's schedule (warm-up, then linear decay) scales it like the others."""
    for group in optimizer.param_groups:
        if any(parameter is weight for parameter in group["params"]):
            group["params"] = [parameter for parameter in group["params"] if parameter is not weight]
            optimizer.add_param_group({**group, "params": [weight], "lr": learning_rate})
            return


def _accuracy(prediction: EvalPrediction) -> dict[str, float]:
    return {"accuracy": float(accuracy_score(prediction.label_ids, np.argmax(prediction.predictions, axis=-1)))}


def _history(log_history: list[dict[str, float]]) -> list[dict[str, float]]:
    """One row per epoch: training loss, validation loss and accuracy."""
    epochs: dict[int, dict[str, float]] = {}
    for entry in log_history:
        epoch = round(entry.get("epoch", 0))
        row = epochs.setdefault(epoch, {"epoch": epoch})
        if "loss" in entry:
            row["train_loss"] = float(entry["loss"])
        if "eval_loss" in entry:
            row["validation_loss"] = float(entry["eval_loss"])
            row["validation_accuracy"] = float(entry["eval_accuracy"])
    return [row for epoch, row in sorted(epochs.items()) if epoch > 0 and len(row) == 4]


def train(splits: Splits, params: Params, output_dir: Path) -> list[dict[str, float]]:
    """Train on ``splits.train``, save the best model and tokenizer to ``output_dir``, return the history."""
    torch.set_num_threads(params.threads)
    enable_full_determinism(params.seed, warn_only=True)
    device = _device(params.train)
    processes = launched_processes()
    per_device_batch, accumulation = batch_layout(
        params.train.batch_size, params.train.gradient_accumulation_steps, processes
    )
    labels = params.data.labels
    tokenizer, model = model_lib.build(params.model, labels, splits.train["text"].tolist())
    max_length = params.model.max_length
    train_set = EncodedTexts(splits.train, tokenizer, labels, max_length)
    validation_set = EncodedTexts(splits.validation, tokenizer, labels, max_length)

    with tempfile.TemporaryDirectory(prefix="checkpoints-") as checkpoints:
        arguments = TrainingArguments(
            output_dir=checkpoints,
            num_train_epochs=params.train.epochs,
            per_device_train_batch_size=per_device_batch,
            gradient_accumulation_steps=accumulation,
            per_device_eval_batch_size=max(64, params.train.batch_size),
            learning_rate=params.train.learning_rate,
            weight_decay=params.train.weight_decay,
            warmup_steps=params.train.warmup_fraction,
            label_smoothing_factor=params.train.label_smoothing,
            train_sampling_strategy="group_by_length",
            eval_strategy="epoch",
            save_strategy="epoch",
            logging_strategy="epoch",
            save_total_limit=1,
            save_only_model=True,
            load_best_model_at_end=True,
            metric_for_best_model="accuracy",
            seed=params.seed,
            use_cpu=device == "cpu",
            ddp_backend="gloo" if device == "cpu" and processes > 1 else None,  # None: NCCL on GPUs
            ddp_find_unused_parameters=False,
            fp16=params.train.mixed_precision == "fp16",
            bf16=params.train.mixed_precision == "bf16",
            dataloader_num_workers=0,
            disable_tqdm=not params.train.progress_bar,
            report_to="none",
        )
        trainer = Trainer(
            model=model,
            args=arguments,
            train_dataset=train_set,
            eval_dataset=validation_set,
            data_collator=DataCollatorWithPadding(tokenizer),
            compute_metrics=_accuracy,
        )
        ngrams = getattr(model, "ngrams", None)
        if ngrams is not None and params.train.ngram_learning_rate is not None:
            # A linear model of sparse features: at the encoder's rate its scores barely move in a few epochs.
            _own_learning_rate(trainer.create_optimizer(), ngrams.scores.weight, params.train.ngram_learning_rate)
        _check_same_tokenizer(tokenizer)
        # Each process has its own checkpoints folder and only rank 0 writes checkpoints, so the others
        # cannot load the best epoch at the end (transformers logs it quietly): they need not, rank 0 saves.
        trainer.train()
        if trainer.is_world_process_zero():
            trainer.save_model(str(output_dir))
            tokenizer.save_pretrained(str(output_dir))
        return _history(trainer.state.log_history)
