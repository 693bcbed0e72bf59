"""Bad input never costs work: params, data and registry faults end in one line, a non-zero exit, and
the model, the results and the registry exactly as they were (compared byte for byte before and after)."""

from __future__ import annotations

import bz2
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO_ROOT, git, run, tiny_params
from faults import failing_server, read_only, read_only_file
from mlops.config import DataParams
from mlops.datacheck import DataVersionError, check_data
from mlops.ml.data import DataError, load_dataset

pytestmark = pytest.mark.slow

# Not a speed target: a guard so that a command retrying for minutes fails the test instead of stalling it.
HANG_GUARD_SECONDS = 120
DATA_FILE = Path("data/rotten_tomatoes_corpus_full.csv.bz2")
KEPT = ("models", "evaluate", "mlflow.db", "mlartifacts", "data", "dvc.lock")


def state(folder: Path, names: tuple[str, ...] = KEPT) -> dict[str, str]:
    """md5 of every file that a failed command must leave alone."""
    files = [path for name in names for path in sorted([folder / name, *(folder / name).rglob("*")]) if path.is_file()]
    return {str(path.relative_to(folder)): hashlib.md5(path.read_bytes()).hexdigest() for path in files}


def command(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, env={**os.environ, **env}, timeout=HANG_GUARD_SECONDS
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The command failed with exactly one `error:` line on stderr (libraries may warn too), no traceback."""
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def project(pipeline_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained tiny project with version 1 registered as champion; tests put back what they change."""
    copy = Path(shutil.copytree(pipeline_project, tmp_path_factory.mktemp("bad-input") / "project", symlinks=True))
    run(["mlops", "deploy"], copy)
    return copy


@contextlib.contextmanager
def changed(project: Path, params_text: str | bytes | None = None, data: bytes | None = None) -> Iterator[None]:
    """params.yaml and/or the data file replaced for the duration, then everything put back (`dvc repro`
    records changed data into data.dvc and stages it in git)."""
    kept = [project / name for name in ("params.yaml", DATA_FILE, "data.dvc", "dvc.lock")]
    saved = [path.read_bytes() for path in kept]
    if params_text is not None:
        kept[0].write_bytes(params_text.encode() if isinstance(params_text, str) else params_text)
    if data is not None:
        kept[1].write_bytes(data)
    try:
        yield
    finally:
        for path, content in zip(kept, saved, strict=True):
            path.write_bytes(content)
        git(project, "reset", "-q")


def params_text(**overrides: object) -> str:
    return yaml.safe_dump(tiny_params(**overrides), sort_keys=False)


def test_every_stage_output_persists_so_dvc_never_deletes_it_before_a_run() -> None:
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        for out in stage.get("outs", []) + stage.get("metrics", []) + stage.get("plots", []):
            options = next(iter(out.values())) if isinstance(out, dict) else {}
            assert options.get("persist") is True, f"stage {name}: {out} lacks persist: true"


@pytest.mark.parametrize(
    ("overrides", "expected", "stage"),
    [
        ({"train": {"epochs": True}}, "train.epochs: Input should be a valid integer, got True", "train"),
        ({"train": {"weight_decay": float("inf")}}, "train.weight_decay: Input should be a finite number", "train"),
        ({"seed": -1}, "seed: Input should be greater than or equal to 0", "train"),
        ({"data": {"text_column": "review"}}, "has no column 'review'", "train"),
        ({"train": {"batch_size": 4096}}, "train.batch_size 4096 is more than the", "train"),
        (
            {"evaluate": {"latency_requests": 0}},
            "evaluate.latency_requests: Input should be greater than 0",
            "evaluate",
        ),
    ],
)
def test_a_failing_repro_keeps_the_last_model_and_results(
    project: Path, overrides: dict, expected: str, stage: str
) -> None:
    before = state(project)
    with changed(project, params_text(**overrides)):
        result = command(["dvc", "repro"], project)
        status = json.loads(run(["dvc", "status", "--json"], project).stdout)
    assert result.returncode != 0 and expected in result.stderr and "Traceback" not in result.stderr
    assert state(project) == before
    assert stage in status, "the failed stage must still be due to run"


def params_without(section: str) -> str:
    params = tiny_params()
    del params[section]
    return yaml.safe_dump(params, sort_keys=False)


@pytest.mark.parametrize(
    ("content", "ours", "dvc_says"),
    [
        ("", "params.yaml is empty", "are missing from 'params.yaml'"),
        ("- seed\n", "params.yaml must be a mapping of sections, got a list", "expected a dictionary, got 'list'"),
        (params_without("model"), "params.yaml: model: missing", "Parameters 'model."),  # pretrain's model.* first
        (params_text() + "seed: 7\n", "params.yaml: duplicate key 'seed' at line", 'found duplicate key "seed"'),
        (params_text().encode().replace(b"seed: 42", b"seed: 42 # \xe9"), "params.yaml line 1 has a byte", "utf-8"),
    ],
)
def test_a_broken_params_file_is_one_line_and_dvc_names_it_too(
    project: Path, content: str | bytes, ours: str, dvc_says: str
) -> None:
    before = state(project)
    with changed(project, content):
        assert one_error_line(command(["mlops", "train"], project)).startswith(f"error: {ours}")
        repro = command(["dvc", "repro"], project)
    assert repro.returncode != 0 and dvc_says in repro.stderr and "Traceback" not in repro.stderr
    assert state(project) == before


def truncated(project: Path, inside_a_quoted_field: bool) -> bytes:
    raw = bz2.decompress((project / DATA_FILE).read_bytes())
    cut = raw.index(b',"', len(raw) // 2) + 20 if inside_a_quoted_field else raw.index(b"\nfresh,", len(raw) // 2) + 1
    return bz2.compress(raw[:cut])


def test_data_that_differs_from_data_dvc_stops_training_and_evaluation(project: Path) -> None:
    before = state(project)
    with changed(project, data=truncated(project, inside_a_quoted_field=True)):
        for stage in ("train", "evaluate"):
            error = one_error_line(command(["mlops", stage], project))
            assert error == (
                "error: data/ does not match data.dvc (changed, truncated or partly copied): "
                "run `dvc pull data.dvc` to restore it, or `dvc add data` to record the new data"
            )
    assert state(project) == before


def test_data_truncated_between_records_is_refused_under_dvc_repro_and_can_be_restored(project: Path) -> None:
    before = state(project)
    with changed(project, data=truncated(project, inside_a_quoted_field=False)):
        repro = command(["dvc", "repro"], project)
        assert repro.returncode != 0
        assert "error: data shrank from " in repro.stderr and "git checkout HEAD -- data.dvc" in repro.stderr
        assert state(project) == {**before, **state(project, ("data",))}  # models, results and registry kept
        # What the message says to do brings the data back.
        git(project, "checkout", "HEAD", "--", "data.dvc")
        run(["dvc", "checkout", "-q", "data.dvc"], project)
        assert state(project) == before


def test_the_folder_hash_is_the_one_dvc_records(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    run(["dvc", "init", "-q"], tmp_path)
    folder = tmp_path / "data"
    (folder / "nested" / "deeper").mkdir(parents=True)
    for name, content in {"b.csv": "b\n", "a.csv": "a\n", "nested/z.txt": "z", "nested/deeper/y": "y"}.items():
        (folder / name).write_text(content)
    run(["dvc", "add", "-q", "data"], tmp_path)
    check_data(folder / "a.csv", tmp_path / "data.dvc")
    (folder / "nested" / "z.txt").write_text("changed")
    with pytest.raises(DataVersionError, match=r"^data/ does not match .*data\.dvc"):
        check_data(folder / "a.csv", tmp_path / "data.dvc")
    check_data(tmp_path / "elsewhere.csv", tmp_path / "data.dvc")  # not tracked by this .dvc file: not checked
    check_data(folder / "a.csv", tmp_path / "absent.dvc")


def reviews_csv(rows: int = 40) -> bytes:
    frame = pd.DataFrame(
        {
            "category": ["fresh" if index % 2 else "rotten" for index in range(rows)],
            "text": [f'review {index}, with a comma and a "quote"' for index in range(rows)],
            "movie_name": [f"movie {index % 8}" for index in range(rows)],
            "extra": ["x"] * rows,
        }
    )
    return frame.to_csv(index=False).encode()


def data_params(path: Path) -> DataParams:
    return DataParams.model_validate({**tiny_params()["data"], "path": str(path), "max_rows": None})


@pytest.mark.parametrize("compress", [False, True], ids=["csv", "bz2"])
@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda raw: raw[: raw.rindex(b'"review') + 12], "is not a readable CSV file (unexpected end of data)"),
        (lambda raw: raw[: raw.rindex(b",x\n")], "record 40 has fewer fields than the header (1 such record)"),
        (lambda raw: raw.replace(b",x\n", b"\n", 3)[: len(raw)], "has fewer fields than the header"),
        (lambda raw: b"", "is empty (not even a header row)"),
        (lambda raw: raw.split(b"\n")[0] + b"\n", "has no usable rows"),
    ],
    ids=["inside-a-quoted-field", "last-record-short", "short-records", "empty", "header-only"],
)
def test_a_damaged_csv_is_refused_never_read_in_part(tmp_path: Path, damage, expected: str, compress: bool) -> None:
    data = damage(reviews_csv())
    path = tmp_path / ("reviews.csv.bz2" if compress else "reviews.csv")
    path.write_bytes(bz2.compress(data) if compress else data)
    with pytest.raises(DataError) as error:
        load_dataset(data_params(path))
    assert expected in str(error.value) and "\n" not in str(error.value)
    assert "dvc checkout data.dvc" in str(error.value) or expected == "has no usable rows"


def test_a_folder_as_the_data_path_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"is a folder: set data\.path in params\.yaml to the CSV file"):
        load_dataset(data_params(tmp_path))


def test_an_intact_csv_still_loads_whole(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv.bz2"
    path.write_bytes(bz2.compress(reviews_csv()))
    assert len(load_dataset(data_params(path))) == 40


@pytest.mark.parametrize("healthy", [False, True], ids=["503-everywhere", "503-behind-a-healthy-health-check"])
def test_a_tracking_server_answering_503_is_one_line_not_minutes_of_retries(project: Path, healthy: bool) -> None:
    before = state(project)
    with failing_server(healthy=healthy) as url:
        for args in (["mlops", "models"], ["mlops", "deploy"]):
            error = one_error_line(command(args, project, MLFLOW_TRACKING_URI=url))
            assert url in error and "503" in error and "MLFLOW_TRACKING_URI" in error
    assert state(project) == before


def test_a_read_only_store_refuses_writes_in_one_line_and_still_lists(project: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy2(project / "mlflow.db", store / "mlflow.db")
    with read_only(store) as view:
        uri = f"sqlite:///{view / 'mlflow.db'}"
        before = state(view, ("mlflow.db",))
        for args in (["mlops", "promote", "1"], ["mlops", "rollback"], ["mlops", "deploy"]):
            error = one_error_line(command(args, project, MLFLOW_TRACKING_URI=uri))
            assert error.startswith(f"error: the MLflow store {uri} is read-only")
        listed = command(["mlops", "models"], project, MLFLOW_TRACKING_URI=uri)
        assert listed.returncode == 0 and "champion" in listed.stdout
        assert state(view, ("mlflow.db",)) == before


def test_a_read_only_store_file_in_a_writable_folder_is_refused_for_writes(project: Path, tmp_path: Path) -> None:
    database = tmp_path / "mlflow.db"
    shutil.copy2(project / "mlflow.db", database)
    before = database.read_bytes()
    with read_only_file(database):
        error = one_error_line(command(["mlops", "promote", "1"], project, MLFLOW_TRACKING_URI=f"sqlite:///{database}"))
    assert error.startswith(f"error: the MLflow store sqlite:///{database} is read-only")
    assert database.read_bytes() == before


def test_a_store_that_does_not_exist_is_refused_not_created_empty(project: Path, tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere" / "mlflow.db"
    for args in (["mlops", "models"], ["mlops", "deploy"]):
        error = one_error_line(command(args, project, MLFLOW_TRACKING_URI=f"sqlite:///{nowhere}"))
        assert "is in a folder that does not exist" in error
    assert not nowhere.parent.exists()

    absent = tmp_path / "mlflow.db"
    for args in (["mlops", "models"], ["mlops", "promote", "1"]):
        error = one_error_line(command(args, project, MLFLOW_TRACKING_URI=f"sqlite:///{absent}"))
        assert error.startswith(f"error: the MLflow store sqlite:///{absent} does not exist: run `dvc repro`")
    assert not absent.exists()


def test_a_store_that_is_not_a_database_is_one_line_and_left_alone(project: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "mlflow.db"
    damaged.write_bytes((project / "mlflow.db").read_bytes()[4096:])  # lost its header page
    before = damaged.read_bytes()
    for args in (["mlops", "models"], ["mlops", "deploy"]):
        error = one_error_line(command(args, project, MLFLOW_TRACKING_URI=f"sqlite:///{damaged}"))
        assert error.startswith(f"error: the MLflow store {damaged} is not a readable SQLite database")
    assert damaged.read_bytes() == before


@pytest.mark.parametrize("version", ["abc", "0", "1.5", "v1", "٣", ""])
def test_promote_refuses_what_is_not_a_version_number_up_front(project: Path, version: str) -> None:
    before = state(project)
    error = one_error_line(command(["mlops", "promote", version], project))
    assert error == f"error: {version!r} is not a version number: `mlops models` lists the versions"
    assert state(project) == before


def test_bad_gate_thresholds_stop_deploy_before_the_registry(project: Path) -> None:
    before = state(project)
    with changed(project, params_text(gate={"minimum": {"accuracy": float("nan")}})):
        error = one_error_line(command(["mlops", "deploy"], project))
    assert error == "error: params.yaml: gate.minimum.accuracy: Input should be a finite number, got nan"
    assert state(project) == before
