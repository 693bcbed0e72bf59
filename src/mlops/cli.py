"""The one command line: `mlops COMMAND`. Each command is a thin call into the modules."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from mlops.config import DEFAULT_PARAMS, load_params
from mlops.errors import MlopsError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

ParamsOption = Annotated[Path, typer.Option("--params", help="The parameters file.")]


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")] = False) -> None:
    """Train, evaluate, report on, deploy and serve the model."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def train(params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Train the model on the train split and track the run in MLflow (DVC stage `train`)."""
    from mlops import stages

    run = stages.train(load_params(params))
    typer.echo(f"MLflow run {run.run_id}: model logged at {run.model_uri}")


@app.command()
def evaluate(params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Score the model and the baseline on the test split into evaluate/ (DVC stage `evaluate`)."""
    from mlops import stages

    metrics = stages.evaluate(load_params(params))
    typer.echo(
        f"accuracy {metrics['accuracy']:.4f} (baseline {metrics['baseline']['accuracy']:.4f}), "
        f"macro-F1 {metrics['macro_f1']:.4f}, p95 latency {metrics['latency_p95_ms']:.1f} ms"
    )


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

        typer.echo(canary.apply(analysis, registry.connect(), settings.tracking.registered_model))
    if analysis.decision is canary.Decision.ROLL_BACK:
        raise typer.Exit(canary.ROLL_BACK_EXIT_CODE)


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
    from mlops.serving import app as serving

    settings = load_params(params)
    serving.serve(settings, serving.model_sources(settings, champion, challenger), host, port, fault_injection)


def run() -> None:
    """Console entry point: a user's mistake is one line on stderr and exit status 1, never a traceback."""
    try:
        app()
    except MlopsError as error:
        typer.echo(f"error: {error}", err=True)
        raise SystemExit(1) from None
