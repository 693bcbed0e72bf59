"""Model behaviour: building from a config or a local pretrained checkpoint, inference, determinism.

The tests bring their own labels and a small three-label dataset, so they hold whatever data params.yaml names.
"""

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse
from sklearn.feature_extraction.text import TfidfTransformer
from transformers import BertForMaskedLM

from conftest import tiny_params
from mlops.config import ModelParams, Params
from mlops.ml import train as train_lib
from mlops.ml.data import encode_labels, load_splits
from mlops.ml.model import (
    HashedNgrams,
    MeanPooledBertClassifier,
    ModelError,
    TextClassifier,
    bert_config,
    build,
)

LABELS = ["cats", "dogs", "birds"]
TEXTS = ["the cat purrs on the mat", "a dog barks at the door", "birds sing in the tree", "a quiet afternoon"]
WORDS = {
    "cats": ["purr", "meow", "whiskers", "kitten", "litter"],
    "dogs": ["bark", "fetch", "leash", "puppy", "kennel"],
    "birds": ["wing", "nest", "feather", "chirp", "beak"],
}


def model_params(**changes: object) -> ModelParams:
    return ModelParams.model_validate({**tiny_params()["model"], **changes})


def test_build_from_config_trains_a_lowercasing_wordpiece_tokenizer() -> None:
    tokenizer, model = build(model_params(), LABELS, TEXTS * 10)
    assert tokenizer("A MOVING film")["input_ids"] == tokenizer("a moving film")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("a film")["input_ids"])[0] == "[CLS]"
    assert model.config.id2label == dict(enumerate(LABELS))
    assert model.config.hidden_size == 32
    assert model.config.vocab_size == len(tokenizer)


def test_a_local_pretrained_checkpoint_is_loaded_with_our_labels(tmp_path: Path) -> None:
    tokenizer, model = build(model_params(), ["a", "b"], TEXTS * 10)
    tokenizer.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    loaded_tokenizer, loaded = build(model_params(pretrained=str(tmp_path)), LABELS, [])
    assert loaded.config.id2label == dict(enumerate(LABELS))
    assert loaded.config.num_labels == 3
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()
    embeddings = model.base_model.embeddings.word_embeddings.weight
    assert np.allclose(loaded.base_model.embeddings.word_embeddings.weight.detach(), embeddings.detach())


def test_a_masked_word_encoder_is_fine_tuned_with_its_weights_under_a_mean_pooling_head(tmp_path: Path) -> None:
    tokenizer, _ = build(model_params(), LABELS, TEXTS * 10)
    encoder = BertForMaskedLM(bert_config(model_params(), tokenizer, dropout=0.0))
    encoder.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    _, model = build(model_params(pretrained=str(tmp_path)), LABELS, [])
    assert isinstance(model, MeanPooledBertClassifier)
    assert model.config.num_labels == 3
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, encoder.bert.embeddings.word_embeddings.weight)
    assert torch.equal(
        model.bert.encoder.layer[-1].output.dense.weight, encoder.bert.encoder.layer[-1].output.dense.weight
    )


def hashed_counts(texts: list[list[int]], buckets: int) -> sparse.csr_matrix:
    """Each text's counts of its pieces and ordered pairs of neighbours, hashed as HashedNgrams hashes them."""
    counts = sparse.lil_matrix((len(texts), buckets))
    for row, ids in enumerate(texts):
        for bucket in [*ids, *((a * 1_000_003 + b) for a, b in itertools.pairwise(ids))]:
            counts[row, bucket % buckets] += 1
    return counts.tocsr()


def test_the_ngram_model_scores_scikit_learns_tf_idf_of_each_piece_and_pair_without_the_padding() -> None:
    ngrams = HashedNgrams(buckets=1000, num_labels=2)
    with torch.no_grad():
        ngrams.scores.weight.copy_(torch.randn(1000, 2, generator=torch.Generator().manual_seed(0)))
    training = [[7, 9], [9, 7, 5], [5, 5, 11, 13], [7, 11]]
    width = max(map(len, training))
    padded = torch.tensor([ids + [0] * (width - len(ids)) for ids in training])
    ngrams.fit_document_frequencies([(padded[:2], padded[:2] > 0), (padded[2:], padded[2:] > 0)])
    texts = [[7, 9], [9, 7], [7, 7, 9, 5], [13, 404]]  # a repeated piece; a piece no training text has
    input_ids = torch.tensor([ids + [0] * (4 - len(ids)) for ids in texts])
    scores = ngrams(input_ids, (input_ids > 0).long())

    tf_idf = TfidfTransformer(sublinear_tf=True).fit(hashed_counts(training, 1000))
    expected = tf_idf.transform(hashed_counts(texts, 1000)) @ ngrams.scores.weight.detach().double().numpy()
    assert np.allclose(scores.detach().numpy(), expected, atol=1e-5)
    assert np.allclose(ngrams.inverse_document_frequency.numpy(), tf_idf.idf_, atol=1e-5)
    assert not torch.allclose(scores[0], scores[1])  # word order counts through the pairs
    alone = ngrams(input_ids[:1, :2], torch.ones(1, 2, dtype=torch.long))
    assert torch.allclose(alone, scores[:1], atol=1e-6)  # padding changes nothing


def test_the_ngram_models_document_frequencies_are_saved_with_the_model(tmp_path: Path) -> None:
    tokenizer, model = build(model_params(ngram_buckets=64), LABELS, TEXTS * 10)
    frequencies = model.ngrams.inverse_document_frequency
    assert frequencies.min() == pytest.approx(1.0)  # [CLS] and [SEP] are in every text
    assert frequencies.max() > 1.0
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert torch.equal(TextClassifier(tmp_path).model.ngrams.inverse_document_frequency, frequencies)


def test_the_ngram_model_is_left_out_when_it_has_no_buckets() -> None:
    _, model = build(model_params(ngram_buckets=0), LABELS, TEXTS * 10)
    assert model.ngrams is None
    assert not any(name.startswith("ngrams") for name in model.state_dict())
    _, model = build(model_params(ngram_buckets=64), LABELS, TEXTS * 10)
    assert model.ngrams.scores.weight.shape == (64, 3)


def test_a_missing_pretrained_checkpoint_is_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot load the pretrained model") as error:
        build(model_params(pretrained=str(tmp_path / "nowhere")), LABELS, [])
    assert "\n" not in str(error.value)


def test_text_classifier_refuses_a_folder_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="holds no saved model"):
        TextClassifier(tmp_path)


def test_text_classifier_refuses_a_model_without_its_tokenizer(tmp_path: Path) -> None:
    _, model = build(model_params(), LABELS, TEXTS * 10)
    model.save_pretrained(tmp_path)
    refusal = f"{tmp_path} holds a model but no tokenizer: save the tokenizer beside it"
    with pytest.raises(ModelError, match=f"^{re.escape(refusal)}"):
        TextClassifier(tmp_path)


@pytest.fixture(scope="module")
def params(tmp_path_factory: pytest.TempPathFactory) -> Params:
    """Tiny params on 240 made-up posts about three animals, each post of a thread sharing its label."""
    rng = np.random.default_rng(0)
    rows = [
        {
            "post": " ".join(rng.choice([*WORDS[LABELS[thread % 3]], "the", "a", "is", "very", "my"], size=6)),
            "animal": LABELS[thread % 3],
            "thread": f"t{thread}",
        }
        for thread in range(60)
        for _ in range(4)
    ]
    path = tmp_path_factory.mktemp("posts") / "posts.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    data = {"path": str(path), "text_column": "post", "label_column": "animal", "group_column": "thread"}
    return Params.model_validate(tiny_params(data={**data, "labels": LABELS, "ignore_labels": [], "max_rows": None}))


def test_training_is_deterministic_and_keeps_the_best_epoch(params: Params, tmp_path: Path) -> None:
    splits = load_splits(params.data)
    first = train_lib.train(splits, params, tmp_path / "first")
    second = train_lib.train(splits, params, tmp_path / "second")
    assert first == second
    assert [row["epoch"] for row in first] == [1, 2]
    assert set(first[0]) == {"epoch", "train_loss", "validation_loss", "validation_accuracy"}

    texts = splits.test["text"].tolist()
    a, b = TextClassifier(tmp_path / "first"), TextClassifier(tmp_path / "second")
    probabilities = a.predict_proba(texts)
    assert np.array_equal(probabilities, b.predict_proba(texts))
    assert probabilities.shape == (len(texts), 3)
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    best = max(first, key=lambda row: row["validation_accuracy"])["validation_accuracy"]
    validation = a.predict_proba(splits.validation["text"].tolist()).argmax(axis=1)
    truth = encode_labels(splits.validation["label"], LABELS)
    assert (validation == truth).mean() == pytest.approx(best, abs=1e-6)


def test_the_ngram_table_trains_at_its_own_learning_rate_with_the_same_weight_decay(params: Params) -> None:
    _, model = build(params.model, LABELS, TEXTS * 10)
    table = model.ngrams.scores.weight
    optimizer = torch.optim.AdamW(
        [
            {"params": [table, model.classifier.weight], "weight_decay": 0.05},
            {"params": [model.classifier.bias], "weight_decay": 0.0},
        ],
        lr=1e-3,
    )
    train_lib._own_learning_rate(optimizer, table, 0.02)
    groups = [(group["params"], group["lr"], group["weight_decay"]) for group in optimizer.param_groups]
    assert groups == [
        ([model.classifier.weight], 1e-3, 0.05),
        ([model.classifier.bias], 1e-3, 0.0),
        ([table], 0.02, 0.05),
    ]


def test_batched_and_single_predictions_agree(params: Params, tmp_path: Path) -> None:
    splits = load_splits(params.data)
    train_lib.train(
        splits, params.model_copy(update={"train": params.train.model_copy(update={"epochs": 1})}), tmp_path
    )
    classifier = TextClassifier(tmp_path)
    batched = classifier.predict_proba(TEXTS, batch_size=3)
    single = np.vstack([classifier.predict_proba([text]) for text in TEXTS])
    assert np.allclose(batched, single, atol=1e-5)
    assert classifier.predict_proba([]).shape == (0, 3)


def test_the_tokenizer_learns_the_same_vocabulary_every_time() -> None:
    texts = [f"{word}ing {word}ed un{word}able" for word in ("walk", "talk", "jump", "laugh", "cry")] * 3
    vocabularies = [build(model_params(vocab_size=120), LABELS, texts)[0].get_vocab() for _ in range(5)]
    assert all(vocabulary == vocabularies[0] for vocabulary in vocabularies)
