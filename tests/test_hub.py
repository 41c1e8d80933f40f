"""Publish and download end to end against the loopback Hub (tests/hub_server.py).

The real huggingface_hub and timm code paths run: HfApi.create_repo / create_commit (preupload,
LFS batch + upload, NDJSON commit), hf_hub_download, timm's ``hf-hub:`` and ``local-dir:``
sources and a registered pretrained tag with an ``hf_hub_id``.
"""
import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import timm
import torch
import yaml
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from safetensors import SafetensorError

import timm_lc.models  # noqa: F401  registers lc_resnet*
from timm_lc.hub import (
    PAPER_CITATION, CorruptCheckpointError, HubError, UnknownArchitectureError, load_pretrained_model,
    push_to_hub, render_model_card, save_pretrained,
)
from timm_lc_cli import main as cli_main
from timm_lc_cli.push import main as push_main

# huggingface_hub's own LFS PUT passes a file object as `data=`, which httpx deprecates
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

ARCH = "lc_resnet_tiny_hebb"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _png(path: Path) -> None:
    """A valid 1x1 PNG (written by hand: no plotting library needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


def _trained_run(directory: Path) -> torch.nn.Module:
    """A run directory as `timm-lc train` leaves it, with non-default weights and BN statistics."""
    torch.manual_seed(0)
    model = timm.create_model(ARCH)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_()
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    recipe = {"model": ARCH, "dataset": "uoft-cs/cifar10", "epochs": 2, "lr": 0.05, "batch_size": 64}
    save_pretrained(model, directory, extra_config={
        "sleep": model.sleep_cfg, "recipe": recipe, "dataset": "uoft-cs/cifar10",
        "metrics": {"top1": 41.25, "snr": 3.5},
    })
    (directory / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    records = [{"step": 10 * i, "epoch": i, "train_loss": 2.3 - 0.2 * i, "top1": 30.0 + 5.625 * i, "snr": 1.0 + i}
               for i in range(3)]
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    _png(directory / "plots" / "accuracy.png")
    (directory / "checkpoints").mkdir()
    torch.save({"optimizer": {}}, directory / "checkpoints" / "state.pt")  # must never be uploaded
    return model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("run")
    return directory, _trained_run(directory)


@pytest.fixture(scope="module")
def pushed(hub_server, hub_token, run):
    """The run pushed once to ``test-org/tiny``; shared by the download tests."""
    directory, model = run
    result = push_to_hub(directory, "test-org/tiny", token=hub_token, model_name=f"{ARCH}.hubtest")
    return result, directory, model


def _assert_same_weights(loaded: torch.nn.Module, original: torch.nn.Module) -> None:
    expected, got = original.state_dict(), loaded.state_dict()
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype and torch.equal(got[key], value), key


def _digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode() + value.numpy().tobytes())
    return h.hexdigest()


# ---- publish --------------------------------------------------------------------------------

def test_push_uploads_checkpoint_card_and_plots_in_one_commit(hub_server, pushed):
    result, directory, model = pushed
    commits = hub_server.commits("test-org/tiny")
    assert len(commits) == 2 and commits[0].oid == result.commit_oid  # initial .gitattributes + ours
    files = hub_server.files("test-org/tiny")
    assert sorted(files) == [".gitattributes", "README.md", "config.json", "model.safetensors", "plots/accuracy.png"]
    assert sorted(result.files) == sorted(set(files) - {".gitattributes"})
    assert files["model.safetensors"] == (directory / "model.safetensors").read_bytes()
    assert files["plots/accuracy.png"] == (directory / "plots" / "accuracy.png").read_bytes()

    config = json.loads(files["config.json"])
    assert config["architecture"] == ARCH and config["num_classes"] == 10
    assert config["pretrained_cfg"]["input_size"] == [3, 16, 16]
    assert config["model_args"]["num_classes"] == 10
    assert "sleep" not in config  # one place: pretrained_cfg, which create_model gives back
    assert config["pretrained_cfg"]["sleep"] == model.sleep_cfg == {"every": 10, "mode": "hebbian", "pools": "paper",
                                                  "iterations": 100, "batch_size": 128, "gamma": 1e-5, "lr": None,
                                                  "pool_optimizer_state": False}

    card = files["README.md"].decode()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "timm" and meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["uoft-cs/cifar10"]
    num_params = sum(p.numel() for p in model.parameters())
    for text in (f"`{ARCH}`", f"{num_params:,}", "3x16x16", "`uoft-cs/cifar10`", "| iterations | 100 |",
                 "| gamma | 1e-05 |", "| top1 | 41.25 |", "| snr | 3.5 |", "| top1 | 41.25 | 41.25 |",
                 "| snr | 3 | 3 |", "epochs: 2", "![accuracy](plots/accuracy.png)", "import timm_lc",
                 'timm.create_model("hf-hub:test-org/tiny", pretrained=True)', PAPER_CITATION,
                 hashlib.sha256(files["model.safetensors"]).hexdigest()):
        assert text in card, text

    entry = result.manifest_entry
    assert entry["sha256"] == hashlib.sha256((directory / "model.safetensors").read_bytes()).hexdigest()
    assert entry["num_params"] == num_params and entry["revision"] == result.commit_oid
    assert entry["model"] == f"{ARCH}.hubtest" and entry["metrics"] == {"top1": 41.25, "snr": 3.5}


def test_push_model_object_to_branch(hub, hub_token, run):
    _, model = run
    result = push_to_hub(model, "test-org/branchy", revision="v1", token=hub_token, private=True,
                         extra_config={"sleep": model.sleep_cfg, "dataset": "uoft-cs/cifar10"})
    assert result.revision == "v1"
    assert "model.safetensors" not in hub.files("test-org/branchy", "main")
    assert "model.safetensors" in hub.files("test-org/branchy", "v1")
    card = hub.files("test-org/branchy", "v1")["README.md"].decode()
    assert "No metrics were recorded with this run." in card and "Not recorded with this run." in card


# ---- download -------------------------------------------------------------------------------

def test_load_by_hf_hub_local_dir_and_registered_tag(pushed, monkeypatch):
    _, directory, model = pushed
    from_hub = timm.create_model("hf-hub:test-org/tiny", pretrained=True)
    _assert_same_weights(from_hub, model)
    assert from_hub.sleep_cfg == model.sleep_cfg
    _assert_same_weights(timm.create_model(f"local-dir:{directory}", pretrained=True), model)

    # a registered pretrained tag whose cfg points at the repo (as timm_lc.models does for published ones)
    from timm.models import _registry
    cfg = timm.models.get_pretrained_cfg(ARCH)
    cfg.hf_hub_id, cfg.tag = "test-org/tiny", "hubtest"
    monkeypatch.setitem(_registry._model_pretrained_cfgs, f"{ARCH}.hubtest", cfg)
    _assert_same_weights(timm.create_model(f"{ARCH}.hubtest", pretrained=True), model)

    for name in ("hf-hub:test-org/tiny", f"local-dir:{directory}", str(directory), f"{ARCH}.hubtest"):
        _assert_same_weights(load_pretrained_model(name), model)


def test_non_default_sleep_settings_come_back_from_the_hub(hub, hub_token, run):
    from timm_lc.train import SleepPhase
    _, model = run
    trained = dict(model.sleep_cfg, every=1, iterations=2, pools="residue")
    push_to_hub(model, "test-org/sleepy", token=hub_token, extra_config={"sleep": trained})
    from_hub = timm.create_model("hf-hub:test-org/sleepy", pretrained=True)
    assert from_hub.sleep_cfg == trained
    assert SleepPhase.from_model(from_hub).config() == dict(trained, seed=0)


def test_load_revision(hub, hub_token, run):
    directory, model = run
    push_to_hub(directory, "test-org/revs", revision="exp-1", token=hub_token)
    _assert_same_weights(load_pretrained_model("hf-hub:test-org/revs@exp-1"), model)
    with pytest.raises(HubError, match="test-org/revs' has no config.json at revision 'main'"):
        load_pretrained_model("hf-hub:test-org/revs")


def test_offline_reload_from_cache(pushed, hub_server):
    """A fresh process with HF_HUB_OFFLINE=1 and an unreachable endpoint loads the cached checkpoint."""
    _, _, model = pushed
    timm.create_model("hf-hub:test-org/tiny", pretrained=True)  # make sure it is cached
    script = (
        "import hashlib, sys, timm, timm_lc.models\n"
        "from timm_lc.hub import HubError, load_pretrained_model\n"
        "def digest(m):\n"
        "    h = hashlib.sha256()\n"
        "    for k, v in m.state_dict().items(): h.update(k.encode() + v.numpy().tobytes())\n"
        "    return h.hexdigest()\n"
        "print(digest(timm.create_model('hf-hub:test-org/tiny', pretrained=True)))\n"
        "print(digest(load_pretrained_model('hf-hub:test-org/tiny')))\n"
        "try:\n"
        "    load_pretrained_model('hf-hub:test-org/never-downloaded')\n"
        "except HubError as err:\n"
        "    print(err)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == lines[1] == _digest(model)
    assert "not in the local cache" in lines[2] and "HF_HUB_OFFLINE" in lines[2]


# ---- errors ---------------------------------------------------------------------------------

def test_push_without_network_is_one_line(run):
    """A token but no Hub to reach (HF_ENDPOINT at a closed loopback port): one line, exit 1, no traceback."""
    directory, _ = run
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = dict(os.environ, HF_ENDPOINT=endpoint, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    code = "import sys, timm_lc_cli; sys.exit(timm_lc_cli.main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", code, "push", str(directory), "--repo-id", "test-org/offline",
                          "--token", "hf_anything", "--max-retries", "0"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.startswith("timm-lc push: error: ") and f"cannot reach the Hub at {endpoint}" in out.stderr
    assert "holds none of this push" in out.stderr


def test_no_token_fails_before_any_request(hub, run, capsys):
    directory, _ = run
    before = len(hub.requests)
    with pytest.raises(HubError, match="no Hugging Face token .* Nothing was uploaded"):
        push_to_hub(directory, "test-org/no-token")
    assert push_main([str(directory), "--repo-id", "test-org/no-token"]) == 1
    assert "no Hugging Face token" in capsys.readouterr().err
    assert len(hub.requests) == before and "test-org/no-token" not in hub.repos


def test_rejected_token(hub, run):
    directory, _ = run
    with pytest.raises(HubError, match="rejected the token"):
        push_to_hub(directory, "test-org/bad-token", token="hf_wrong", max_retries=0)


def test_server_errors_are_retried(hub, hub_token, run):
    directory, model = run
    hub.fail_next("commit", times=2, status=503)
    before = hub.requests_to("commit")
    push_to_hub(directory, "test-org/flaky", token=hub_token, max_retries=3, retry_wait=0.0)
    assert hub.requests_to("commit") - before == 3
    assert len(hub.commits("test-org/flaky")) == 2
    _assert_same_weights(load_pretrained_model("hf-hub:test-org/flaky"), model)


def test_persistent_server_errors_leave_no_partial_checkpoint(hub, hub_token, run):
    directory, _ = run
    hub.fail_next("commit", times=10, status=500)
    with pytest.raises(HubError, match=r"answered 500.*Gave up after 2 retries.*holds none of this push"):
        push_to_hub(directory, "test-org/down", token=hub_token, max_retries=2, retry_wait=0.0)
    assert sorted(hub.files("test-org/down")) == [".gitattributes"]


def test_failed_weights_upload_leaves_no_partial_checkpoint(hub, hub_token, run):
    directory, _ = run
    hub.fail_next("lfs_upload", times=1, status=403)  # 403 is final (not retried)
    with pytest.raises(HubError, match=r"Error while uploading .*403 Forbidden.*Nothing was committed"):
        push_to_hub(directory, "test-org/lfs-fail", token=hub_token, retry_wait=0.0)
    assert sorted(hub.files("test-org/lfs-fail")) == [".gitattributes"]


def test_broken_run_dirs_fail_before_any_request(hub, hub_token, run, tmp_path):
    directory, _ = run
    before = len(hub.requests)
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        (tmp_path / "empty").mkdir()
        push_to_hub(tmp_path / "empty", "test-org/broken", token=hub_token)

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_bytes((directory / "config.json").read_bytes())
    weights = (directory / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    with pytest.raises(CorruptCheckpointError, match="model.safetensors from run directory .* truncated"):
        push_to_hub(truncated, "test-org/broken", token=hub_token)

    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    config = json.loads((directory / "config.json").read_text())
    config["num_classes"] = config["model_args"]["num_classes"] = 7
    (mismatched / "config.json").write_text(json.dumps(config))
    (mismatched / "model.safetensors").write_bytes(weights)
    with pytest.raises(ValueError, match=r"does not fit .*shape mismatch .*expected \(7,"):
        push_to_hub(mismatched, "test-org/broken", token=hub_token)

    with pytest.raises(ValueError, match="expected repo_id 'ORG/NAME'"):
        push_to_hub(directory, "no-namespace", token=hub_token)
    assert len(hub.requests) == before


def test_truncated_download_is_a_clear_error(hub, pushed, tmp_path):
    hub.serve_truncated("test-org/tiny", "model.safetensors")
    cache = tmp_path / "cache"
    with pytest.raises(CorruptCheckpointError,
                       match="download of model.safetensors from 'test-org/tiny' was truncated"):
        load_pretrained_model("hf-hub:test-org/tiny", cache_dir=cache)
    assert not list(cache.rglob("*.incomplete"))  # nothing half-written kept in the cache
    assert not [p for p in cache.rglob("model.safetensors")]


def test_corrupt_weights_in_repo_name_the_file(hub, hub_token, run, tmp_path):
    directory, _ = run
    weights = (directory / "model.safetensors").read_bytes()
    HfApi(token=hub_token).create_repo("test-org/corrupt")
    HfApi(token=hub_token).create_commit("test-org/corrupt", [
        CommitOperationAdd("config.json", (directory / "config.json").read_bytes()),
        CommitOperationAdd("model.safetensors", weights[: len(weights) // 2]),
    ], commit_message="a truncated upload by another tool")
    with pytest.raises(CorruptCheckpointError,
                       match="model.safetensors from hf-hub:test-org/corrupt is truncated or not a valid safetensors"):
        load_pretrained_model("hf-hub:test-org/corrupt", cache_dir=tmp_path)
    # plain timm gives safetensors' bare message (which is why load_pretrained_model exists)
    with pytest.raises(SafetensorError):
        timm.create_model("hf-hub:test-org/corrupt", pretrained=True, cache_dir=tmp_path)


def test_corrupt_cached_blob_is_detected(pushed, tmp_path):
    path = Path(hf_hub_download("test-org/tiny", "model.safetensors", cache_dir=tmp_path))
    blob = Path(os.path.realpath(path))
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # same size, valid header, different bytes
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="sha256 differs from the Hub's"):
        load_pretrained_model("hf-hub:test-org/tiny", cache_dir=tmp_path)


def test_unknown_repo_and_revision(hub, pushed):
    with pytest.raises(HubError, match="repository 'test-org/does-not-exist' was not found"):
        load_pretrained_model("hf-hub:test-org/does-not-exist")
    with pytest.raises(HubError, match="revision 'no-such-branch' does not exist in 'test-org/tiny'"):
        load_pretrained_model("hf-hub:test-org/tiny@no-such-branch")


def test_unregistered_architecture_says_import_timm_lc(hub, hub_token, run, tmp_path, monkeypatch):
    directory, _ = run
    # timm_lc not imported: timm only knows "Unknown model"; our helpers name the fix
    from timm.models import _registry
    monkeypatch.delitem(_registry._model_entrypoints, ARCH)
    with pytest.raises(RuntimeError, match=rf"Unknown model \({ARCH}\)"):
        timm.create_model(f"local-dir:{directory}", pretrained=True)
    for name in (f"local-dir:{directory}", "hf-hub:test-org/tiny"):
        with pytest.raises(UnknownArchitectureError, match=rf"'{ARCH}' .* run `import timm_lc`"):
            load_pretrained_model(name)
    before = len(hub.requests)
    with pytest.raises(UnknownArchitectureError, match="import timm_lc"):
        push_to_hub(directory, "test-org/unregistered", token=hub_token)
    assert len(hub.requests) == before


def test_cli_push_adds_manifest_entry(hub, hub_token, run, tmp_path, capsys):
    directory, _ = run
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"organization": "test-org", "checkpoints": []}))
    argv = [str(directory), "--repo-id", "test-org/cli", "--token", hub_token, "--private",
            "--model-name", f"{ARCH}.cli", "--manifest", str(manifest)]
    assert cli_main(["push", *argv]) == 0  # through the `timm-lc` dispatcher
    assert "pushed model.safetensors, config.json, README.md, plots/accuracy.png to test-org/cli@main" \
        in capsys.readouterr().out
    entries = json.loads(manifest.read_text())["checkpoints"]
    assert [e["repo_id"] for e in entries] == ["test-org/cli"] and entries[0]["model"] == f"{ARCH}.cli"
    assert hub.repos["test-org/cli"].private
    # a private repo is not visible without the token
    with pytest.raises(HubError, match="not found"):
        load_pretrained_model("hf-hub:test-org/cli")


def test_registered_name_without_weights_is_an_error_not_a_random_init(hub):
    with pytest.raises(HubError, match=f"loading {ARCH}: no pretrained weights are registered"):
        load_pretrained_model(ARCH)
    with pytest.raises(HubError, match=f"loading {ARCH}.nope: no such pretrained tag"):
        load_pretrained_model(f"{ARCH}.nope")
    model = load_pretrained_model(ARCH, pretrained=False)
    assert isinstance(model, torch.nn.Module)


def test_card_of_a_run_killed_mid_write_skips_the_torn_metrics_line(tmp_path):
    """A kill during the last metrics.jsonl write leaves a torn line; the card uses the complete ones."""
    _trained_run(tmp_path)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 30, "top1": 99')
    card = render_model_card(tmp_path, "test-org/torn")
    assert "41.25" in card and "99" not in card.split("## Results", 1)[-1].split("##", 1)[0]
