"""What the shipped example is, so that `mlops doctor` can tell a forker what still refers to it.

Forkers: leave this file until `mlops doctor` finds nothing more, then delete it (the doctor then has nothing
to compare with and says so).
"""

# params.yaml values that are the example's own: a forker sets each for their data and model.
PARAMS = {
    "data.path": "data/rotten_tomatoes_corpus_full.csv.bz2",
    "data.label_column": "category",
    "data.group_column": "movie_name",
    "data.labels": ["rotten", "fresh"],
    "data.ignore_labels": ["plot"],
    "tracking.experiment": "rotten-tomatoes",
    "tracking.registered_model": "rotten-tomatoes-sentiment",
    "gate.minimum.accuracy": 0.71,
    "gate.minimum.macro_f1": 0.70,
    "train.epochs": 4,
}
# The DVC hash of the example's data/ folder (data.dvc).
DATA_MD5 = "999cc1106fb265723478489e824212dc.dir"
# Words of the example's domain: the card's prose and the README should not speak of them after a fork.
WORDS = ["movie", "film", "review", "critic", "rotten", "sentiment"]
# Tests that know the example's data.
TEST_FILES = ["tests/test_example_data.py"]
