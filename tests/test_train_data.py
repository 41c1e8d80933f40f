"""Data: the embedded digits demo, seeded augmentation, the translation baseline, hub-style data sets."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from timm_lc_settings.train import TrainConfig
from timm_lc.train.data import EpochSampler, RepeatedViews, build_data, build_train_loader, collate_views
from timm_lc.train.demo_data import DIGITS_MEAN, DIGITS_STD, DigitsCanvas, load_digits_split

from fixtures.train_data import make_dataset

ROOT = Path(__file__).resolve().parents[1]


def test_demo_split_is_fixed_and_disjoint():
    from sklearn.datasets import load_digits
    train_x, train_y = load_digits_split("train")
    test_x, test_y = load_digits_split("test")
    assert (len(train_y), len(test_y)) == (1437, 360)
    all_images = torch.from_numpy(load_digits().images).float() / 16
    assert torch.equal(torch.cat([train_x, test_x]).sum(0), all_images.sum(0))  # a partition of the 1,797
    assert torch.equal(load_digits_split("test")[1], test_y)


def test_demo_placements():
    train = DigitsCanvas("train", canvas_size=16, translate=2, seed=0, normalize=False)
    offsets = {train.offset(i, epoch) for i in range(50) for epoch in range(3)}
    assert {o[0] for o in offsets} == {2, 3, 4, 5, 6} == {o[1] for o in offsets}  # centre 4 +- 2
    image, label = train[(1, 5, 0)]
    top, left = train.offset(5, 1)
    assert image.shape == (1, 16, 16) and torch.equal(image[0, top:top + 8, left:left + 8], train.images[5])
    assert image.sum() == train.images[5].sum()  # nothing else on the canvas
    assert torch.equal(train[(1, 5, 0)][0], image) and label == int(train.labels[5])
    test = DigitsCanvas("test", canvas_size=16, translate=4, normalize=False)
    assert torch.equal(test[3][0], test[(9, 3, 2)][0])  # fixed placements at test time


def test_translation_baseline_repeats_each_image():
    base = DigitsCanvas("train", canvas_size=16, translate=4, seed=0)
    views = RepeatedViews(base, repeats=3)
    images, labels = collate_views([views[(0, 0)], views[(0, 1)]])
    assert images.shape == (6, 1, 16, 16) and labels.tolist() == [int(base.labels[0])] * 3 + [int(base.labels[1])] * 3
    assert not torch.equal(images[0], images[1])  # independently translated copies


def test_sampler_order_depends_on_seed_and_epoch_only():
    a, b = EpochSampler(10, seed=1), EpochSampler(10, seed=1)
    a.set_epoch(3), b.set_epoch(3)
    assert list(a) == list(b) and sorted(i for _, i in a) == list(range(10))
    b.set_epoch(4)
    assert list(a) != list(b)


def test_train_loader_is_reproducible():
    cfg = TrainConfig(max_train_samples=64, batch_size=16)
    bundle = build_data(cfg)
    batches = []
    for _ in range(2):
        loader, sampler = build_train_loader(bundle, cfg)
        sampler.set_epoch(2)
        batches.append(next(iter(loader)))
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])


def test_hub_style_datasets_with_real_columns(tmp_path):
    for name, channels in (("cifar100", 3), ("tinyimagenet", 3)):
        path = make_dataset(name, tmp_path)
        cfg = TrainConfig(dataset=name, dataset_path=str(path), translate=2)
        bundle = build_data(cfg)
        image, label = bundle.train[(0, 1, 0)]  # tinyimagenet item 1 is greyscale: converted to RGB
        size = {"cifar100": 32, "tinyimagenet": 48}[name]
        assert image.shape == (channels, size, size) and bundle.eval[0][0].shape == (channels, size, size)
        assert bundle.num_classes == {"cifar100": 100, "tinyimagenet": 200}[name]
        assert torch.equal(bundle.train[(0, 1, 0)][0], image)  # seeded augmentation
        assert 0 <= label < bundle.num_classes


def test_local_imagefolder(tmp_path):
    from PIL import Image
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (20, 24), (i * 90, 10, 200)).save(tmp_path / split / cls / f"{i}.png")
    bundle = build_data(TrainConfig(dataset=str(tmp_path), img_size=16))
    assert bundle.num_classes == 2 and len(bundle.train) == 4 and bundle.train[(0, 0, 0)][0].shape == (3, 16, 16)


def test_offline_without_cache_names_the_dataset(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "timm_lc.train", "--config", str(ROOT / "recipes/cifar10/lc.yaml"),
                           "--output-dir", str(tmp_path / "run"), "--max-steps", "1"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "uoft-cs/cifar10" in proc.stderr and "--dataset-path" in proc.stderr


def test_holdout_split_is_fixed_disjoint_and_complete():
    from timm_lc.train.data import holdout_split
    kept, held = holdout_split(1437, 0.1)
    assert len(held) == 144 and sorted(kept + held) == list(range(1437))
    assert (kept, held) == holdout_split(1437, 0.1)  # the same for every seed and variant
    with pytest.raises(ValueError, match="leaves none to train on"):
        holdout_split(1, 0.5)


def test_val_fraction_evaluates_on_held_out_training_digits():
    from timm_lc.train.data import build_data, holdout_split
    cfg = TrainConfig(canvas_size=16, translate=2, test_shift=2, val_fraction=0.1)
    bundle = build_data(cfg)
    kept, held = holdout_split(1437, 0.1)
    assert (len(bundle.train), len(bundle.eval)) == (len(kept), len(held))
    train_images, train_labels = load_digits_split("train")
    image, label = bundle.eval[3]
    assert label == int(train_labels[held[3]])
    assert torch.equal(bundle.eval[3][0], image)  # a fixed placement, as test images
    digit = (image[0] * DIGITS_STD[0] + DIGITS_MEAN[0])
    top, left = bundle.eval.offset(3)
    torch.testing.assert_close(digit[top:top + 8, left:left + 8], train_images[held[3]])


def test_place_on_canvas_against_the_placed_pixels():
    from timm_lc.train.canvas import PlaceOnCanvas, placement_range
    image = torch.rand(1, 14, 14) + 0.1
    assert placement_range(24, 14, 4) == (1, 9) and placement_range(24, 14, 0) == (5, 5)
    offsets = set()
    for seed in range(40):
        torch.manual_seed(seed)
        canvas = PlaceOnCanvas(24, 4)(image)
        nonzero = canvas[0].nonzero()
        top, left = nonzero.min(0).values.tolist()
        assert 1 <= top <= 9 and 1 <= left <= 9
        assert torch.equal(canvas[:, top:top + 14, left:left + 14], image)
        assert canvas.sum() == pytest.approx(image.sum().item())  # zeros elsewhere
        offsets.add((top, left))
    assert len(offsets) > 10

def test_no_network_fails_at_once_and_names_hf_hub_offline(tmp_path):
    """A Hub that does not answer (a closed loopback port): one try, no retries, one line naming HF_HUB_OFFLINE=1."""
    import socket
    with socket.socket() as closed:  # bound, never listening: every connection is refused
        closed.bind(("127.0.0.1", 0))
        env = {"PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT),
               "OMP_NUM_THREADS": "1", "HF_ENDPOINT": f"http://127.0.0.1:{closed.getsockname()[1]}"}
        proc = subprocess.run([sys.executable, "-m", "timm_lc.train", "--config",
                               str(ROOT / "recipes/cifar10/lc.yaml"), "--output-dir", str(tmp_path / "run")],
                              env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Retrying" not in proc.stderr, proc.stderr
    assert "uoft-cs/cifar10" in proc.stderr and "Hub is unreachable" in proc.stderr
    assert "HF_HUB_OFFLINE=1" in proc.stderr and not (tmp_path / "run").exists()


def test_unreachable_hub_reads_the_cache_in_offline_mode(monkeypatch):
    import datasets
    import huggingface_hub.constants
    import pytest
    from timm_lc.train import data
    from timm_lc.train.data import DatasetUnavailableError, load_hf_split
    seen = []

    def cached_load(source, split, cache_dir=None):
        seen.append((source, split, datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE))
        if source == "org/missing":
            raise ConnectionError("Couldn't reach the Hugging Face Hub (offline mode)")
        return "the cached split"
    monkeypatch.setattr(datasets, "load_dataset", cached_load)
    monkeypatch.setattr(data, "hub_unreachable", lambda source: OSError("[Errno 111] Connection refused"))
    offline_before = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    assert load_hf_split("org/cached", "train") == "the cached split"
    with pytest.raises(DatasetUnavailableError, match=r"'org/missing'.*Connection refused.*HF_HUB_OFFLINE=1"):
        load_hf_split("org/missing", "test")
    assert seen == [("org/cached", "train", True, True), ("org/missing", "test", True, True)]
    assert (datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE) == offline_before
    monkeypatch.setattr(data, "hub_unreachable", lambda source: None)  # the Hub answers: asked as usual
    assert load_hf_split("org/cached", "train") == "the cached split" and seen[-1][2:] == offline_before


def test_hub_probe_tells_an_answer_from_no_answer(hub_server):
    from timm_lc.train.data import hub_unreachable
    assert hub_unreachable("org/no-such-data-set") is None  # the test suite's loopback Hub answers 404
