"""hub/: the manifest of published checkpoints agrees with timm_lc.models' pretrained cfgs; the card template."""
import json
from dataclasses import replace
from pathlib import Path

import pytest
import timm

import timm_lc.models  # noqa: F401  registers lc_resnet* and their pretrained cfgs
from timm_lc.hub import MANIFEST_KEYS, MODEL_CARD_TEMPLATE, add_to_manifest, load_manifest

HUB_DIR = Path(__file__).resolve().parents[1] / "hub"
MANIFEST = load_manifest(HUB_DIR / "manifest.json")
ORG = MANIFEST["organization"]


def _registered_with_weights_of(org):
    """Registered ``arch.tag`` names whose pretrained cfg points at a Hub repo of ``org``."""
    names = []
    for name in timm.list_models("lc_resnet*", include_tags=True):
        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is not None and cfg.hf_hub_id and cfg.hf_hub_id.startswith(org + "/"):
            names.append(name)
    return names


def manifest_disagreements(manifest):
    """Every way hub/manifest.json and the registered pretrained cfgs disagree (empty: they agree)."""
    problems = []
    entries = {e["repo_id"]: e for e in manifest["checkpoints"]}
    for name in _registered_with_weights_of(manifest["organization"]):
        cfg = timm.models.get_pretrained_cfg(name)
        repo_id, _, revision = cfg.hf_hub_id.partition("@")
        entry = entries.get(repo_id)
        if entry is None:
            problems.append(f"{name}: hf_hub_id {cfg.hf_hub_id} has no manifest entry")
            continue
        for key, registered, listed in (("model", name, entry["model"]),
                                        ("num_classes", cfg.num_classes, entry["num_classes"]),
                                        ("input_size", tuple(cfg.input_size), tuple(entry["input_size"] or ())),
                                        ("revision", revision or entry["revision"], entry["revision"])):
            if registered != listed:
                problems.append(f"{name}: {key} is {registered!r} in the cfg but {listed!r} in the manifest")
    for repo_id, entry in entries.items():
        try:
            cfg = timm.models.get_pretrained_cfg(entry["model"], allow_unregistered=False)
        except RuntimeError:
            cfg = None
        if cfg is None or not cfg.hf_hub_id or cfg.hf_hub_id.partition("@")[0] != repo_id:
            problems.append(f"manifest entry {repo_id}: no registered pretrained cfg {entry['model']} points to it")
    return problems


def test_manifest_entries_are_complete():
    repo_ids = [e["repo_id"] for e in MANIFEST["checkpoints"]]
    assert len(repo_ids) == len(set(repo_ids))
    for entry in MANIFEST["checkpoints"]:
        assert set(MANIFEST_KEYS) <= set(entry)
        assert entry["repo_id"].startswith(ORG + "/"), entry["repo_id"]
        assert entry["architecture"] == entry["model"].split(".", 1)[0]
        assert entry["dataset"] and entry["recipe"] and entry["metrics"], entry["repo_id"]


def test_manifest_agrees_with_registered_pretrained_cfgs():
    assert manifest_disagreements(MANIFEST) == []


def test_disagreements_are_detected(monkeypatch):
    """The agreement check itself: a cfg without entry, a mismatching entry, an entry without cfg."""
    from timm.models import _registry
    arch, name = "lc_resnet_tiny", "lc_resnet_tiny.published"
    cfg = replace(timm.models.get_pretrained_cfg(arch), hf_hub_id=f"{ORG}/lc_resnet_tiny.published", tag="published")
    monkeypatch.setitem(_registry._model_pretrained_cfgs, name, cfg)
    monkeypatch.setitem(_registry._model_with_tags, arch, list(_registry._model_with_tags[arch]) + [name])
    published = MANIFEST["checkpoints"]  # the real entries agree; only the fake cfg's problems show

    def problems(*entries):
        return manifest_disagreements({"organization": ORG, "checkpoints": published + list(entries)})

    assert problems() == [f"{name}: hf_hub_id {cfg.hf_hub_id} has no manifest entry"]
    entry = {"repo_id": cfg.hf_hub_id, "revision": "a" * 40, "model": name, "architecture": arch,
             "num_classes": cfg.num_classes, "input_size": list(cfg.input_size)}
    assert problems(entry) == []
    assert problems(dict(entry, num_classes=100)) == [
        f"{name}: num_classes is {cfg.num_classes} in the cfg but 100 in the manifest"]
    orphan = dict(entry, repo_id=f"{ORG}/unregistered", model="lc_resnet_tiny.unregistered")
    assert f"manifest entry {ORG}/unregistered: no registered pretrained cfg lc_resnet_tiny.unregistered " \
           f"points to it" in problems(entry, orphan)


def test_card_template_file_is_the_packaged_template():
    assert (HUB_DIR / "model_card.md").read_text(encoding="utf-8") == MODEL_CARD_TEMPLATE


def test_add_to_manifest_replaces_by_repo_id(tmp_path):
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"organization": "org", "checkpoints": []}))
    entry = {k: None for k in MANIFEST_KEYS}
    entry.update(repo_id="org/a", sha256="0" * 64, model="lc_resnet_tiny.x", architecture="lc_resnet_tiny")
    add_to_manifest(entry, path)
    add_to_manifest(dict(entry, sha256="1" * 64), path)
    add_to_manifest(dict(entry, repo_id="org/b"), path)
    saved = load_manifest(path)["checkpoints"]
    assert [(e["repo_id"], e["sha256"][0]) for e in saved] == [("org/a", "1"), ("org/b", "0")]
    assert not list(tmp_path.glob(".manifest.json.tmp-*"))
    with pytest.raises(ValueError, match="manifest lists checkpoints of 'org/...'"):
        add_to_manifest(dict(entry, repo_id="other/a"), path)
    with pytest.raises(ValueError, match="sha256 must be 64 hex digits"):
        path.write_text(json.dumps({"organization": "org", "checkpoints": [dict(entry, sha256="xyz")]}))
        load_manifest(path)
