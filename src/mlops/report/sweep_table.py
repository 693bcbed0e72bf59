"""The report's Sweep section: every trial of the last `mlops sweep` (sweep/results.json), when there is one."""

from __future__ import annotations

import json
from pathlib import Path

from mlops.ml.spec import METRICS
from mlops.paths import RUN_FILE, SWEEP_RESULTS


def _number(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "—"


def _test_cell(interval: dict | None) -> str:
    if not interval:
        return "—"
    return f"{_number(interval['value'])} [{_number(interval['low'])}, {_number(interval['high'])}]"


def _cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _stale(results: dict, run_file: Path) -> bool:
    """The workspace's model is no longer the sweep's winner (retrained or changed since)."""
    best = next((trial for trial in results["trials"] if trial["name"] == results["best"]), None)
    if best is None or not run_file.exists():
        return False
    return json.loads(run_file.read_text()).get("run_id") != best["run_id"]


def section(path: Path = SWEEP_RESULTS, run_file: Path = RUN_FILE) -> list[str]:
    """Markdown lines of the sweep table, or none when no sweep ran in this workspace."""
    if not path.exists():
        return []
    results = json.loads(path.read_text())
    metric = results["metric"]
    headline = METRICS.headline
    lines = [
        "### Sweep",
        "",
        f"{len(results['trials'])} trials chosen by the best epoch's `{metric}` ({results['goal']}) on the "
        "validation split; the test metrics (95% bootstrap intervals) are shown, never used to choose. "
        + (
            f"**{results['best']}** is the workspace's model, the one this report judges."
            if results["best"]
            else "Every trial failed: the workspace is as it was."
        ),
        "",
        *(
            ["> [!WARNING]", "> The workspace's model is not this sweep's best trial any more: the table is stale.", ""]
            if _stale(results, run_file)
            else []
        ),
        "| trial | overrides | "
        + f"{metric} | "
        + " | ".join(f"test {name}" for name in headline)
        + " | time | status |",
        "|---|---|---:|" + "---:|" * len(headline) + "---:|---|",
    ]
    for trial in results["trials"]:
        name = f"**{trial['name']}** ⭐" if trial["name"] == results["best"] else trial["name"]
        overrides = ", ".join(f"`{key}={json.dumps(value)}`" for key, value in trial["overrides"].items())
        status = "ok" if trial["status"] == "ok" else f"❌ failed: {trial['error']}"
        cells = [name, overrides, _number(trial["selection"])]
        cells += [_test_cell(trial["test"].get(metric_name)) for metric_name in headline]
        cells += [f"{trial['seconds']:.0f} s", status]
        lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    return lines
