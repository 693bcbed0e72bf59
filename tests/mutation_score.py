"""`make mutation`'s verdict on mutmut's results: the score of each decision module, and every survivor explained.

Reads mutants/**/*.meta (what `mutmut run` left), scores the decision functions below, and fails when a module
kills fewer than TARGET of its mutants or when a mutant survives that tests/mutation-baseline.txt does not
explain. A baseline line is ``function | mutated line | reason``: keyed by what the mutant changes rather than
mutmut's numbering, so it stays valid when unrelated code moves.

``--names`` prints the mutant name patterns of those functions instead, for `mutmut run` to test only them (the
modules' other functions, such as the report's git plumbing, would take most of the time).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "tests" / "mutation-baseline.txt"
TARGET = 0.90
DETECTED = {"killed", "timeout", "caught by type check", "segfault"}
# The decision code, per module: None is every function; otherwise the functions (Class.method) scored.
SCOPE: dict[str, set[str] | None] = {
    "mlops.config": {
        "DataParams._splits_leave_training_data",
        "ModelParams._heads_divide_hidden",
        "ServingParams._queue_takes_a_full_request",
        "Params._threads_fit_the_machine",
        "_registered_model_name",
        "_StrictLoader.construct_mapping",
        "_describe",
        "_read_mapping",
        "load_params",
    },
    "mlops.registry.gate": None,
    "mlops.registry.registry": {
        "promote",
        "start_canary",
        "retire_challenger",
        "rollback",
        "version_of",
        "move",
        "_apply",
        "_complete",
        "finish_interrupted",
    },
    "mlops.report.diff": {"metric_rows", "_quality_metrics", "MetricRow.change", "MetricRow.improved"},
    "mlops.serving.canary": {
        "decide",
        "VariantStats.error_rate",
        "VariantStats.accuracy",
        "Analysis.challenger_version",
    },
    "mlops.serving.router": None,
}


@dataclass(frozen=True)
class Mutant:
    key: str  # mutmut's name, e.g. mlops.registry.gate.xǁCheckǁreason__mutmut_3
    module: str
    function: str  # Class.method or function
    status: str

    @property
    def detected(self) -> bool:
        return self.status in DETECTED


def parse(key: str, exit_code: int | None) -> Mutant:
    module, _, mangled = key.rpartition(".")
    name = mangled.rsplit("__mutmut_", 1)[0]
    function = ".".join(name.split("ǁ")[1:]) if name.startswith("xǁ") else name.removeprefix("x_")
    return Mutant(key, module, function, status_by_exit_code[exit_code])


def name_patterns() -> list[str]:
    """mutmut name patterns (fnmatch) of the scored functions: module.x_function or module.xǁClassǁmethod."""
    patterns = []
    for module, functions in SCOPE.items():
        for function in sorted(functions) if functions is not None else ["*"]:
            if "." in function:
                mangled = "xǁ" + "ǁ".join(function.split("."))
            else:
                mangled = function if function == "*" else f"x_{function}"
            patterns.append(f"{module}.{mangled}__mutmut_*")
    return patterns


def in_scope(mutant: Mutant) -> bool:
    functions = SCOPE.get(mutant.module, set())
    return functions is None or mutant.function in functions


def load_mutants() -> list[Mutant]:
    metas = sorted((ROOT / "mutants").rglob("*.py.meta"))
    if not metas:
        sys.exit("no mutmut results in mutants/: run `make mutation`")
    return [
        parse(key, code) for meta in metas for key, code in json.loads(meta.read_text())["exit_code_by_key"].items()
    ]


def mutated_line(mutant: Mutant) -> str:
    """The mutant's new line(s), from `mutmut show`."""
    show = [sys.executable, "-m", "mutmut", "show", mutant.key]
    diff = subprocess.run(show, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    added = [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return " / ".join(added)


def load_baseline() -> dict[tuple[str, str], str]:
    explained = {}
    for line in BASELINE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            function, mutated, reason = (part.strip() for part in line.split(" | ", 2))
            explained[function, mutated] = reason
    return explained


def main() -> int:
    if sys.argv[1:] == ["--names"]:
        print("\n".join(name_patterns()))
        return 0
    mutants = [mutant for mutant in load_mutants() if in_scope(mutant)]
    baseline = load_baseline()
    failed = False
    print(f"{'module':<26} {'mutants':>7} {'killed':>6} {'score':>6}")
    for module in SCOPE:
        found = [mutant for mutant in mutants if mutant.module == module]
        killed = sum(mutant.detected for mutant in found)
        score = killed / len(found) if found else 0.0
        failed |= score < TARGET
        print(f"{module:<26} {len(found):>7} {killed:>6} {score:>6.1%}{'' if score >= TARGET else '  BELOW TARGET'}")
    total_killed = sum(mutant.detected for mutant in mutants)
    print(f"{'all decision code':<26} {len(mutants):>7} {total_killed:>6} {total_killed / len(mutants):>6.1%}")

    unexplained, seen = [], set()
    for mutant in (mutant for mutant in mutants if not mutant.detected):
        key = (f"{mutant.module}.{mutant.function}", mutated_line(mutant))
        seen.add(key)
        if key in baseline:
            print(f"survived ({mutant.status}), explained: {key[0]} | {key[1]} | {baseline[key]}")
        else:
            unexplained.append(f"{key[0]} | {key[1]} | ({mutant.status}: {mutant.key}; `mutmut show` it)")
    for stale in sorted(baseline.keys() - seen):
        print(f"note: killed now, remove from {BASELINE.name}: {' | '.join(stale)}")
    if unexplained:
        print(f"\n{len(unexplained)} survivor(s) not in {BASELINE.relative_to(ROOT)}: kill each with a test, or add it")
        print("with the reason no test can tell it from the original:\n  " + "\n  ".join(unexplained))
    return 1 if failed or unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
