"""Pretraining: the encoder learns the corpus's language by guessing masked words (masked language modelling).

Forkers: edit this file to change how the encoder is pretrained. It trains the tokenizer and an encoder of
model's shape on unlabelled texts (data.pretraining_texts) and saves both with ``save_pretrained``, where
``model.pretrained`` finds them for fine-tuning.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch.nn.functional import cross_entropy
from transformers import (
    BertForMaskedLM,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerBase,
    enable_full_determinism,
    get_linear_schedule_with_warmup,
)

from mlops.config import Params
from mlops.errors import MlopsError
from mlops.ml import model as model_lib

log = logging.getLogger(__name__)


class PretrainingError(MlopsError):
    """Pretraining cannot start or diverged."""


def windows(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> list[list[int]]:
    """Each text's token ids, [CLS] and [SEP] around them, in pieces of at most ``max_length``: a text longer
    than that (a plot synopsis) becomes several pieces instead of losing its end."""
    width = max_length - 2
    return [
        [tokenizer.cls_token_id, *ids[start : start + width], tokenizer.sep_token_id]
        for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        for start in range(0, len(ids), width)
    ]


def length_batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Indices in batches of pieces of similar length (little padding) in random order: shuffled, sorted by
    length within runs of 50 batches, cut into batches, and the batches shuffled."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    span = batch_size * 50
    batches = []
    for start in range(0, len(order), span):
        run = sorted(order[start : start + span], key=lengths.__getitem__)
        batches += [run[index : index + batch_size] for index in range(0, len(run), batch_size)]
    return [batches[index] for index in torch.randperm(len(batches), generator=generator).tolist()]


def _optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW that decays the weight matrices only, not biases and LayerNorm scales."""
    matrices = [parameter for parameter in model.parameters() if parameter.ndim >= 2]
    vectors = [parameter for parameter in model.parameters() if parameter.ndim < 2]
    groups = [{"params": matrices, "weight_decay": weight_decay}, {"params": vectors, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate)


def pretrain(texts: list[str], params: Params, output_dir: Path) -> list[dict[str, float]]:
    """Train a tokenizer and a masked language model on ``texts``, save both to ``output_dir`` and return the
    loss per epoch."""
    settings = params.pretrain
    torch.set_num_threads(params.threads)
    enable_full_determinism(params.seed, warn_only=True)
    tokenizer = model_lib.train_tokenizer(texts, params.model)
    pieces = windows(tokenizer, texts, params.model.max_length)
    if len(pieces) < settings.batch_size:
        raise PretrainingError(
            f"pretrain.batch_size {settings.batch_size} is more than the {len(pieces)} pieces of pretraining text: "
            "lower it"
        )
    model = BertForMaskedLM(model_lib.bert_config(params.model, tokenizer, settings.dropout))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=settings.mask_probability)
    examples = [{"input_ids": ids} for ids in pieces]
    lengths = [len(ids) for ids in pieces]
    shuffler = torch.Generator().manual_seed(params.seed)
    steps = settings.epochs * math.ceil(len(pieces) / settings.batch_size)
    optimizer = _optimizer(model, settings.learning_rate, settings.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, math.ceil(settings.warmup_fraction * steps), steps)
    log.info("pretraining on %d texts (%d pieces) for %d steps", len(texts), len(pieces), steps)

    history = []
    model.train()
    for epoch in range(1, settings.epochs + 1):
        loss_sum, guessed = 0.0, 0
        for indices in length_batches(lengths, settings.batch_size, shuffler):
            batch = collator([examples[index] for index in indices])
            masked = batch["labels"] != -100
            if not masked.any():
                continue
            hidden = model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            # The vocabulary projection only where a word is to be guessed: most of the cost of the full head.
            loss = cross_entropy(model.cls(hidden[masked]), batch["labels"][masked])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            loss_sum += loss.item() * int(masked.sum())
            guessed += int(masked.sum())
        epoch_loss = loss_sum / max(guessed, 1)
        if not math.isfinite(epoch_loss):
            raise PretrainingError(
                f"the pretraining loss is {epoch_loss} at epoch {epoch}: lower pretrain.learning_rate"
            )
        log.info("pretraining epoch %d: masked-word loss %.4f", epoch, epoch_loss)
        history.append({"epoch": epoch, "train_loss": epoch_loss})
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return history
