"""Where the pipeline reads and writes, relative to the project root; dvc.yaml declares the same paths.

Kept free of heavy imports so that the report and the registry commands start fast.
"""

from pathlib import Path

PARAMS_FILE = Path("params.yaml")
LOCK_FILE = Path("dvc.lock")
DATA_DVC_FILE = Path("data.dvc")

PRETRAINED_DIR = Path("pretrained")
PRETRAINED_HISTORY_FILE = PRETRAINED_DIR / "history.json"

MODELS_DIR = Path("models")
MODEL_DIR = MODELS_DIR / "model"
HISTORY_FILE = MODELS_DIR / "history.json"
RUN_FILE = MODELS_DIR / "run.json"

EVALUATE_DIR = Path("evaluate")
METRICS_FILE = EVALUATE_DIR / "metrics.json"
PLOTS_DIR = EVALUATE_DIR / "plots"
PREDICTIONS_FILE = EVALUATE_DIR / "predictions.csv"

SWEEP_FILE = Path("sweep.yaml")
SWEEP_RESULTS = Path("sweep") / "results.json"
