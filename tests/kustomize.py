"""A renderer for the subset of kustomize that deploy/k8s uses (no kustomize or kubectl binary installs here):
`resources` (files and folders), `namespace`, `images` (newName/newTag) and JSON 6902 `patches` with a target.
Anything else in a kustomization.yaml is an error, so the overlays cannot outgrow what this checks."""

from __future__ import annotations

from pathlib import Path

import jsonpatch
import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
CLUSTER_SCOPED = {"Namespace"}


def render(folder: Path) -> list[dict]:
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - SUPPORTED
    if unsupported:
        raise ValueError(f"{folder}/kustomization.yaml uses {sorted(unsupported)}: keep to {sorted(SUPPORTED)}")
    documents: list[dict] = []
    for resource in kustomization.get("resources", []):
        path = folder / resource
        documents += render(path) if path.is_dir() else [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        matches = [
            doc for doc in documents if doc["kind"] == target["kind"] and doc["metadata"]["name"] == target["name"]
        ]
        if len(matches) != 1:
            raise ValueError(f"{folder}: patch target {target} matches {len(matches)} resources")
        index = documents.index(matches[0])
        documents[index] = jsonpatch.apply_patch(matches[0], yaml.safe_load(patch["patch"]))
    for image in kustomization.get("images", []):
        for container in _containers(documents):
            name, _, _tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image['newTag']}"
    if "namespace" in kustomization:
        for doc in documents:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    return documents


def _containers(documents: list[dict]) -> list[dict]:
    return [
        container
        for doc in documents
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    ]
