"""The model: a small BERT built from a config with a tokenizer trained here, or a pretrained checkpoint.

A BERT encoder classifies the mean of its token vectors, not BERT's own [CLS] pooler: masked-word pretraining
never trains the pooler, so fine-tuning had to learn it from the labelled rows alone. Beside it, a linear model of
the TF-IDF of the text's word pieces and pairs of neighbouring pieces (hashed into ``model.ngram_buckets``, as
fastText does) adds its scores: the wide and deep pattern, trained together. On this corpus the n-gram model
carries most of the accuracy (README: How the defaults were chosen).

Forkers: edit this file to change the architecture. Anything that
``AutoModelForSequenceClassification`` can load works through ``model.pretrained``
(a local directory saved with ``save_pretrained``, or a hub name where the hub is reachable);
architectures other than BERT keep their own classification head.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertPreTrainedModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from mlops.config import ModelParams
from mlops.contract import Classifier
from mlops.errors import MlopsError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Saved beside the weights: the label mix the model was trained on, which serving watches for drift.
LABEL_SHARE_FILE = "training_label_share.json"


class ModelError(MlopsError):
    """The model or tokenizer cannot be built or loaded."""


class HashedNgrams(nn.Module):
    """A linear model of a text's word pieces and pairs of neighbouring pieces, each hashed into one of
    ``buckets`` score vectors, on their TF-IDF weights: a bucket's count c in the text weighs 1 + ln c times
    its inverse document frequency in the training texts (scikit-learn's smoothed, sublinear TF-IDF), and each
    text's weights are scaled to unit length, so a long text does not outvote a short one."""

    def __init__(self, buckets: int, num_labels: int) -> None:
        super().__init__()
        self.buckets = buckets
        self.scores = nn.Embedding(buckets, num_labels)
        self.register_buffer("inverse_document_frequency", torch.ones(buckets))

    def counted(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The buckets of each text's pieces and pairs, padding left out, each once per text: the text's row
        number, the bucket, and how many of the text's pieces and pairs fell in it."""
        # A large odd multiplier spreads the pairs over the buckets; a pair may share a piece's bucket.
        pairs = (input_ids[:, :-1] * 1_000_003 + input_ids[:, 1:]) % self.buckets
        buckets = torch.cat([input_ids % self.buckets, pairs], dim=1)
        present = torch.cat([attention_mask, attention_mask[:, :-1] * attention_mask[:, 1:]], dim=1).bool()
        rows = torch.arange(len(input_ids), device=input_ids.device).unsqueeze(1).expand_as(buckets)
        keys, counts = torch.unique(rows[present] * self.buckets + buckets[present], return_counts=True)
        return keys // self.buckets, keys % self.buckets, counts

    @torch.no_grad()
    def fit_document_frequencies(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Set the inverse document frequencies from the training texts' ids and attention masks, in batches:
        ln((1 + n) / (1 + df)) + 1 for a bucket found in df of the n texts."""
        frequency = torch.zeros_like(self.inverse_document_frequency)
        documents = 0
        for input_ids, attention_mask in batches:
            _, buckets, _ = self.counted(input_ids, attention_mask)
            frequency += torch.bincount(buckets, minlength=self.buckets).to(frequency.device, frequency.dtype)
            documents += len(input_ids)
        self.inverse_document_frequency.copy_(torch.log((1 + documents) / (1 + frequency)) + 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        rows, buckets, counts = self.counted(input_ids, attention_mask)
        weights = (1 + torch.log(counts.to(self.scores.weight.dtype))) * self.inverse_document_frequency[buckets]
        lengths = torch.zeros(len(input_ids), dtype=weights.dtype, device=weights.device)
        lengths = lengths.index_add(0, rows, weights * weights).sqrt()
        scores = (weights / lengths[rows]).unsqueeze(1) * self.scores(buckets)
        summed = torch.zeros(len(input_ids), self.scores.embedding_dim, dtype=scores.dtype, device=scores.device)
        return summed.index_add(0, rows, scores)


class MeanPooledBertConfig(BertConfig):
    model_type = "mlops-mean-pooled-bert"

    def __init__(self, ngram_buckets: int = 0, **settings: object) -> None:
        super().__init__(**settings)
        self.ngram_buckets = ngram_buckets


class MeanPooledBertClassifier(BertPreTrainedModel):
    """A BERT encoder and a linear classifier of the mean of its token vectors (padding left out), plus a linear
    model of the hashed word pieces and piece pairs when ``config.ngram_buckets`` is not 0."""

    config_class = MeanPooledBertConfig

    def __init__(self, config: MeanPooledBertConfig) -> None:
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.ngrams = HashedNgrams(config.ngram_buckets, config.num_labels) if config.ngram_buckets else None
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> SequenceClassifierOutput:
        tokens = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)
        logits = self.classifier(self.dropout(pooled))
        if self.ngrams is not None:
            logits = logits + self.ngrams(input_ids, attention_mask)
        loss = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


# Saved models name their type in config.json; registering it lets AutoModelForSequenceClassification load them.
AutoConfig.register(MeanPooledBertConfig.model_type, MeanPooledBertConfig)
AutoModelForSequenceClassification.register(MeanPooledBertConfig, MeanPooledBertClassifier)


def train_tokenizer(texts: list[str], params: ModelParams) -> PreTrainedTokenizerFast:
    """A lower-casing WordPiece tokenizer learned from the training texts only."""
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # The trainer numbers "##" pieces in hash-map order, which breaks ties differently on every run
    # (huggingface/tokenizers#1794). Declaring them up front fixes their ids, so training is repeatable.
    pieces = sorted(
        {
            f"##{char}"
            for text in texts
            for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
            for char in word[1:]
        }
    )
    trainer = trainers.WordPieceTrainer(vocab_size=params.vocab_size, special_tokens=SPECIAL_TOKENS + pieces)
    learner = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    learner.normalizer, learner.pre_tokenizer = normalizer, pre_tokenizer
    learner.train_from_iterator(texts, trainer)

    tokenizer = Tokenizer(models.WordPiece(vocab=learner.get_vocab(), unk_token="[UNK]"))
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
    tokenizer.decoder = decoders.WordPiece()
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=params.max_length,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def build(
    params: ModelParams, labels: list[str], train_texts: list[str]
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """The tokenizer and a freshly initialised (or pretrained) classifier for ``labels``."""
    id2label = dict(enumerate(labels))
    label2id = {label: index for index, label in id2label.items()}
    if params.pretrained:
        try:
            tokenizer = AutoTokenizer.from_pretrained(params.pretrained)
            config = AutoConfig.from_pretrained(
                params.pretrained, num_labels=len(labels), id2label=id2label, label2id=label2id
            )
            if config.model_type == "bert":
                config = _mean_pooled(config, params.ngram_buckets)
            # Fine-tuning's dropout, not the checkpoint's, where the architecture has BERT's names for it.
            dropouts = {
                "hidden_dropout_prob": params.dropout,
                "attention_probs_dropout_prob": params.dropout,
                "classifier_dropout": params.classifier_dropout,
            }
            config.update({name: value for name, value in dropouts.items() if hasattr(config, name)})
            model = AutoModelForSequenceClassification.from_pretrained(
                params.pretrained, config=config, ignore_mismatched_sizes=True
            )
        except (OSError, ValueError) as error:
            raise ModelError(
                f"cannot load the pretrained model {params.pretrained!r} ({str(error).splitlines()[0]}): "
                "point model.pretrained at a directory saved with save_pretrained "
                "(the pretrain stage's: `dvc pull pretrain`, or `dvc repro pretrain` to pretrain it here)"
            ) from None
    else:
        tokenizer = train_tokenizer(train_texts, params)
        config = _mean_pooled(bert_config(params, tokenizer, params.dropout), params.ngram_buckets)
        config.update({"num_labels": len(labels), "id2label": id2label, "label2id": label2id})
        model = MeanPooledBertClassifier(config)
    if getattr(model, "ngrams", None) is not None:
        model.ngrams.fit_document_frequencies(_encoded(tokenizer, train_texts, params.max_length))
    return tokenizer, model


def _encoded(
    tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int, batch_size: int = 4096
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The texts' token ids and attention masks as the classifier sees them, a batch at a time."""
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(
            texts[start : start + batch_size], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        yield encoded["input_ids"], encoded["attention_mask"]


def bert_config(params: ModelParams, tokenizer: PreTrainedTokenizerBase, dropout: float) -> BertConfig:
    """The encoder's shape from model params, for a classifier or for pretraining."""
    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=params.hidden_size,
        num_hidden_layers=params.num_layers,
        num_attention_heads=params.num_heads,
        intermediate_size=params.intermediate_size,
        max_position_embeddings=params.max_length,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        classifier_dropout=params.classifier_dropout,
        pad_token_id=tokenizer.pad_token_id,
    )


def _mean_pooled(config: BertConfig, ngram_buckets: int) -> MeanPooledBertConfig:
    settings = {key: value for key, value in config.to_dict().items() if key not in {"model_type", "architectures"}}
    return MeanPooledBertConfig(ngram_buckets=ngram_buckets, **settings)


def load_classifier(directory: Path | str) -> Classifier:
    """The trained model saved in ``directory``: how serving, evaluate and the MLflow flavour load it."""
    return TextClassifier(directory)


class TextClassifier:
    """Inference on a saved model directory: texts in, class probabilities out (a mlops.contract.Classifier)."""

    def __init__(self, directory: Path | str, max_length: int | None = None) -> None:
        self.directory = directory = Path(directory)
        if not (directory / "config.json").exists():
            raise ModelError(f"{directory} holds no saved model: run `dvc repro train` first")
        if not any((directory / name).exists() for name in ("tokenizer.json", "tokenizer_config.json")):
            raise ModelError(
                f"{directory} holds a model but no tokenizer: save the tokenizer beside it (tokenizer.save_pretrained)"
            )
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.model = AutoModelForSequenceClassification.from_pretrained(directory).eval()
        self.max_length = max_length or self.tokenizer.model_max_length
        self.labels = [self.model.config.id2label[index] for index in range(self.model.config.num_labels)]
        share_file = directory / LABEL_SHARE_FILE
        self.training_label_share: dict[str, float] = json.loads(share_file.read_text()) if share_file.exists() else {}

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.empty((0, len(self.labels)), dtype=np.float32)
        # Batching texts of similar length wastes less compute on padding.
        order = np.argsort([len(text) for text in texts], kind="stable")
        probabilities = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                chunk = order[start : start + batch_size]
                encoded = self.tokenizer(
                    [texts[index] for index in chunk],
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                logits = self.model(**encoded).logits
                probabilities[chunk] = torch.softmax(logits, dim=-1).numpy()
        return probabilities

    def size_mb(self) -> float:
        weights = [path for path in self.directory.iterdir() if path.suffix in {".safetensors", ".bin"}]
        return sum(path.stat().st_size for path in weights) / 2**20
