"""Training: the transformers Trainer, seeded, keeping the best epoch on the validation split.

Forkers: edit this file to change how the model learns (optimiser settings, schedule,
early stopping). It returns the per-epoch history that the tracking and the plots use.
"""

from __future__ import annotations

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

from mlops.config import Params
from mlops.ml import model as model_lib
from mlops.ml.data import Splits, encode_labels


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
    labels = params.data.labels
    tokenizer, model = model_lib.build(params.model, labels, splits.train["text"].tolist())
    max_length = params.model.max_length
    train_set = EncodedTexts(splits.train, tokenizer, labels, max_length)
    validation_set = EncodedTexts(splits.validation, tokenizer, labels, max_length)

    with tempfile.TemporaryDirectory(prefix="checkpoints-") as checkpoints:
        arguments = TrainingArguments(
            output_dir=checkpoints,
            num_train_epochs=params.train.epochs,
            per_device_train_batch_size=params.train.batch_size,
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
            use_cpu=True,
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
        trainer.train()
        trainer.save_model(str(output_dir))
        tokenizer.save_pretrained(str(output_dir))
        return _history(trainer.state.log_history)
