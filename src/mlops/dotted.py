"""Nested mappings as dotted keys (train.epochs, per_class.LABEL.f1): the one naming of params and
metrics that MLflow, DVC, the report and the gate share."""

from collections.abc import Mapping


def flatten(values: Mapping | None) -> dict[str, object]:
    flat: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            flat[prefix] = value

    walk("", values or {})
    return flat


def numeric_leaves(values: Mapping | None) -> dict[str, float]:
    """Only the numbers (booleans excluded), as floats."""
    return {
        key: float(value)
        for key, value in flatten(values).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
