"""The one command line: `mlops COMMAND`. Each command is a thin call into the modules."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer

from mlops import determinism, logs
from mlops.config import DEFAULT_PARAMS, Params, load_params
from mlops.errors import MlopsError, UsageError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

ParamsOption = Annotated[Path, typer.Option("--params", help="The parameters file.")]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")] = False) -> None:
    """Train, evaluate, report on, deploy and serve the model."""
    logs.configure(logging.DEBUG if verbose else logging.INFO)


def _stages(settings: Params) -> ModuleType:
    """The stages module, imported (with torch) only after the CPU kernels are pinned."""
    determinism.pin_kernels(settings.reproducibility)
    from mlops import stages

    determinism.confirm_pinned(settings.reproducibility)
    return stages


@app.command()
def pretrain(params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Pretrain the tokenizer and encoder on the unlabelled texts into pretrained/ (DVC stage `pretrain`)."""
    settings = load_params(params)
    history = _stages(settings).pretrain(settings)
    typer.echo(f"pretrained/ saved: masked-word loss {history[-1]['train_loss']:.4f} after {len(history)} epochs")


@app.command()
def train(params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Train the model on the train split and track the run in MLflow (DVC stage `train`)."""
    settings = load_params(params)
    run = _stages(settings).train(settings)
    if run is None:  # a process other than rank 0 of a distributed launch: rank 0 reports
        return
    typer.echo(f"MLflow run {run.run_id}: model logged at {run.model_uri}")


@app.command()
def evaluate(params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Score the model and the baseline on the test split into evaluate/ (DVC stage `evaluate`)."""
    settings = load_params(params)
    metrics = _stages(settings).evaluate(settings)
    from mlops.ml.spec import METRICS

    baseline = metrics.get("baseline", {})
    typer.echo(
        ", ".join(
            f"{name} {metrics[name]:.4f}" + (f" (baseline {baseline[name]:.4f})" if name in baseline else "")
            for name in METRICS.headline
            if isinstance(metrics.get(name), float)
        )
    )


@app.command()
def report(
    base: Annotated[
        str | None,
        typer.Option("--base", help="Git revision to compare with [default: merge base with main; on main, HEAD~1]."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="The markdown file; PNG plots are written beside it.")] = Path(
        "report/report.md"
    ),
    base_results: Annotated[
        Path | None,
        typer.Option(
            "--base-results",
            help="Folder with CI's `pipeline-results` for main (evaluate/, dvc.lock, source.json): the base's "
            "results instead of the committed ones; missing or empty falls back to the committed files, with a note.",
        ),
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Write a markdown report comparing the workspace's pipeline results with a base revision."""
    from mlops.report import write_report

    written = write_report(load_params(params), base, out, base_results)
    typer.echo(f"wrote {written.report} and {len(written.images)} plots, compared with {written.base.how}")


@app.command()
def sweep(
    spec: Annotated[Path, typer.Option("--spec", help="The sweep: trials, budget, selection metric.")] = Path(
        "sweep.yaml"
    ),
) -> None:
    """Run the trials of sweep.yaml with `dvc exp run`, one after another, and apply the best to the workspace."""
    from mlops import sweep as sweep_lib

    settings = load_params(DEFAULT_PARAMS)  # `dvc exp run --set-param` edits params.yaml
    declared = sweep_lib.load_spec(spec)

    def show(trial: sweep_lib.Trial) -> None:
        outcome = f"{declared.select.metric} {trial.selection:.4f}" if trial.status == "ok" else trial.error
        typer.echo(f"{trial.name} {trial.overrides}: {trial.status}, {outcome} ({trial.seconds:.0f} s)")

    results = sweep_lib.run_sweep(declared, settings, on_trial=show)
    if results.best is None:
        raise MlopsError("every trial failed (sweep/results.json has their errors): the workspace is as it was")
    typer.echo(f"applied {results.best} to the workspace; the table is in sweep/results.json")


@app.command()
def doctor(params: ParamsOption = DEFAULT_PARAMS) -> None:
    """List what still refers to the shipped example: data, labels, tracking names, gate, card, README, tests."""
    from mlops import doctor as doctor_lib

    found = doctor_lib.findings(load_params(params))
    for line in found:
        typer.echo(f"- {line}")
    if found:
        typer.echo(f"{len(found)} thing(s) still refer to the example (src/mlops/ml/example.py says what it is)")
        raise typer.Exit(1)
    typer.echo("nothing refers to the example any more")


SummaryOption = Annotated[
    Path | None,
    typer.Option("--summary", help="Also append a Markdown summary to this file (e.g. $GITHUB_STEP_SUMMARY)."),
]


@app.command()
def gate(params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Judge the workspace's model against the thresholds and the champion, re-scored on the same test split."""
    settings = load_params(params)
    determinism.pin_kernels(settings.reproducibility)  # the champion is re-scored as evaluate scored the candidate
    from mlops.registry import deploy as deploy_lib
    from mlops.registry import render

    result = deploy_lib.gate(settings)
    typer.echo(render.gate_table(result))
    if not result.verdict.passed:
        raise deploy_lib.GateRefused(result)
    typer.echo("the gate passed")


class DeployTo(StrEnum):
    STAGING = "staging"
    CHALLENGER = "challenger"
    CHAMPION = "champion"


class PromoteTo(StrEnum):
    CHALLENGER = "challenger"
    CHAMPION = "champion"


@app.command()
def deploy(
    params: ParamsOption = DEFAULT_PARAMS,
    to: Annotated[
        DeployTo,
        typer.Option("--to", help="How far a version that passes the gate goes; challenger is the canary."),
    ] = DeployTo.CHAMPION,
    summary: SummaryOption = None,
) -> None:
    """Gate the workspace's model, register it (once per run or commit, as dev), move staging, then --to."""
    settings = load_params(params)
    determinism.pin_kernels(settings.reproducibility)  # the champion is re-scored as evaluate scored the candidate
    from mlops.registry import deploy as deploy_lib
    from mlops.registry import render

    outcome = deploy_lib.deploy(settings, to=to.value)
    if outcome.gate is not None:
        typer.echo(render.gate_table(outcome.gate))
    if summary:
        headline = f"**Refused**: {outcome.message}." if outcome.refused else outcome.message
        with summary.open("a") as file:
            file.write(render.summary_markdown(outcome.gate, headline))
    if outcome.refused:
        raise deploy_lib.GateRefused(outcome.gate)
    typer.echo(outcome.message)


@app.command()
def promote(
    version: Annotated[
        str | None,
        typer.Argument(help="The version to move [default: staging's for --to challenger, else the challenger's]."),
    ] = None,
    to: Annotated[
        PromoteTo,
        typer.Option(
            "--to", help="challenger starts the canary (what the production Environment guards); champion serves all."
        ),
    ] = PromoteTo.CHAMPION,
    why: Annotated[str, typer.Option("--why", help="Recorded in the alias history.")] = "promoted by hand",
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Move the challenger (canary) or champion alias to a version; the replaced champion is kept for rollback."""
    if version is not None:
        version = _version_number(version)
    from mlops.registry import registry

    name = load_params(params).tracking.registered_model
    client = registry.connect()
    if to == registry.CHALLENGER:
        version = version or registry.version_of(client, name, registry.STAGING, "mlops promote 3 --to challenger")
        registry.start_canary(client, name, version, "mlops promote", why)
        typer.echo(f"version {version} of {name} is the challenger (canary)")
        return
    version = version or registry.version_of(client, name, registry.CHALLENGER, "mlops promote 3")
    registry.promote(client, name, version, "mlops promote", why)
    typer.echo(f"version {version} of {name} is the champion")


def _version_number(version: str) -> str:
    if not (version.isascii() and version.isdigit() and int(version) > 0):
        raise UsageError(f"{version!r} is not a version number: `mlops models` lists the versions")
    return str(int(version))


@app.command()
def rollback(
    why: Annotated[str, typer.Option("--why", help="Recorded in the alias history.")] = "rolled back by hand",
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Put the previous champion back (undoes the last promotion)."""
    from mlops.registry import registry

    name = load_params(params).tracking.registered_model
    version = registry.rollback(registry.connect(), name, "mlops rollback", why)
    typer.echo(f"rolled back: version {version} of {name} is the champion again")


@app.command()
def models(
    history: Annotated[bool, typer.Option("--history", help="Also list every alias move, oldest first.")] = False,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Each environment's version, then the versions with their aliases, commit and gate verdict."""
    from mlops.registry import registry

    name = load_params(params).tracking.registered_model
    client = registry.connect(writes=False)  # it lists a read-only store; only an interrupted move writes
    for finished in registry.finish_interrupted(client, name):
        typer.echo(f"finished an interrupted move: {finished.line()}", err=True)
    typer.echo(registry.environments(client, name))
    typer.echo("")
    typer.echo(registry.version_table(client, name))
    if history:
        typer.echo("")
        typer.echo("\n".join(move.line() for move in registry.history(client, name)) or "no alias moves recorded")


@app.command()
def serve(
    champion: Annotated[
        str | None,
        typer.Option(help="Model folder or MLflow URI; default: the registry's @champion (and @challenger)."),
    ] = None,
    challenger: Annotated[str | None, typer.Option(help="Model folder or MLflow URI for the canary.")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    params: ParamsOption = DEFAULT_PARAMS,
    fault_injection: Annotated[
        bool, typer.Option(envvar="MLOPS_FAULT_INJECTION", help="Enable POST /admin/faults (alert tests only).")
    ] = False,
) -> None:
    """Serve the champion with the challenger as a canary (traffic split from params.yaml serving)."""
    from mlops.serving.limits import check_address

    check_address(host, port)
    settings = load_params(params)
    from mlops.serving import processes

    processes.serve(settings, champion, challenger, host, port, fault_injection)


registry_app = typer.Typer(
    no_args_is_help=True, help="Keep the champion as a release file, and rebuild a missing registry from one."
)
app.add_typer(registry_app, name="registry")


@registry_app.command("pack")
def registry_pack(
    out: Annotated[Path, typer.Option("--out", help="Folder for model.tar.gz and the release notes (notes.md).")],
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Pack the champion for a GitHub Release; prints tag=, title= and commit= lines (for $GITHUB_OUTPUT)."""
    from mlops.registry import registry, release

    name = load_params(params).tracking.registered_model
    packed = release.pack(registry.connect(writes=False), name, out)
    typer.echo(f"tag={packed.tag}\ntitle={packed.title}\ncommit={packed.commit}")


@registry_app.command("restore")
def registry_restore(
    source: Annotated[Path, typer.Option("--from", help="Folder holding a release's model.tar.gz.")],
    summary: SummaryOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Rebuild the missing embedded registry from a model release, its model as the champion (the cold start)."""
    from mlops import tracking
    from mlops.registry import release

    name = load_params(params).tracking.registered_model
    restored = release.restore(source, tracking.tracking_uri(), name)
    message = (
        f"cold start: registry rebuilt from release {restored.release} "
        f"(version {restored.published_version} there, champion v{restored.version} here)"
    )
    if summary:
        with summary.open("a") as file:
            file.write(f"{message}\n")
    typer.echo(message)


canary_app = typer.Typer(no_args_is_help=True, help="Judge the canary (challenger) on live traffic.")
app.add_typer(canary_app, name="canary")


@canary_app.command("analyze")
def canary_analyze(
    prometheus_url: Annotated[
        str, typer.Option("--prometheus-url", envvar="PROMETHEUS_URL", help="Prometheus scraping `mlops serve`.")
    ],
    window: Annotated[
        str | None, typer.Option("--window", help="How far back to look, e.g. 10m [default: params canary.window].")
    ] = None,
    apply: Annotated[
        bool, typer.Option("--apply", help="Move the registry aliases: promote, or remove the challenger.")
    ] = False,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Compare challenger with champion from Prometheus: promote, hold or roll back (exit 3 on roll back)."""
    from mlops.serving import canary

    settings = load_params(params)
    analysis = canary.analyze(prometheus_url, canary.with_window(settings.canary, window))
    typer.echo(canary.format_table(analysis))
    if apply:
        from mlops.registry import registry

        typer.echo(
            canary.apply(analysis, registry.connect(), settings.tracking.registered_model, "mlops canary analyze")
        )
    if analysis.decision is canary.Decision.ROLL_BACK:
        raise typer.Exit(canary.ROLL_BACK_EXIT_CODE)


@canary_app.command("watch")
def canary_watch(
    prometheus_url: Annotated[
        str, typer.Option("--prometheus-url", envvar="PROMETHEUS_URL", help="Prometheus scraping `mlops serve`.")
    ],
    interval: Annotated[
        float | None,
        typer.Option("--interval", help="Seconds between analyses [default: params canary.watch_interval_seconds]."),
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Analyze the canary every interval and promote or roll it back, until stopped (the closed loop)."""
    from mlops.serving import watch

    settings = load_params(params)
    watch.watch(prometheus_url, settings, interval or settings.canary.watch_interval_seconds)


def run() -> None:
    """Console entry point: a user's mistake is one line on stderr and exit status 1, never a traceback."""
    try:
        app()
    except MlopsError as error:
        typer.echo(f"error: {error}", err=True)
        raise SystemExit(1) from None
