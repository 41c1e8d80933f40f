"""Data sets and loaders: the embedded digits demo, Fashion-MNIST, CIFAR-10/100, TinyImageNet,
ImageNet-1k through ``datasets``, and any local imagefolder or ``save_to_disk`` data set.

Augmentation follows the reference code's protocol (docs/method.md): CIFAR-style sets a random crop
with ``translate`` pixels of padding filled with the mean (zero after normalisation; the reference's
default padding is 0, i.e. no translation) and optional flips; TinyImageNet a centre crop of
48 + 2 ``translate`` then a random 48 crop, tested on the centre 48; ImageNet timm's
RandomResizedCrop + flip without colour jitter, tested on Resize 256 + centre 224.

Training augmentation is seeded per sample by (seed, epoch, index, repeat) and never reads the
global RNG, so data order and augmentation are reproducible on any number of processes and
workers and after an exact resume. The paper's translation baseline (``repeats`` = n) puts n
independently augmented copies of each image into the batch.
"""
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from timm_lc_settings.train import TrainConfig
from . import fashion_mnist
from .demo_data import DIGITS_MEAN, DIGITS_STD, DigitsCanvas
from .canvas import PlaceOnCanvas
from .seeding import derive_seed, seeded

__all__ = [
    "DatasetSpec", "DATASETS", "DataBundle", "DatasetUnavailableError", "EpochSampler", "RepeatedViews",
    "ImageDataset", "build_data", "holdout_split", "build_train_loader", "build_eval_loader", "load_hf_split", "resolve_spec",
]

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)  # of the 60,000 training images


EVAL_SEED = 1  # seeds any random evaluation transform per image, whatever the training seed


class DatasetUnavailableError(RuntimeError):
    """The data set is neither cached nor downloadable (offline, missing, gated)."""


@dataclass(frozen=True)
class DatasetSpec:
    """How to read and augment one known data set."""
    hub_id: str
    image_column: str
    label_column: str
    eval_split: str
    img_size: int  # the network's input size
    crop_pct: float  # img_size / stored image size (TinyImageNet: 48 of 64; Fashion-MNIST: 32 of 28, a pad)
    num_classes: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    style: str  # "small": crops (see the module docstring); "imagenet": timm's ImageNet transforms
    in_chans: int = 3
    fill_mean: bool = True  # translation padding filled with the mean (else black, the image background)


DATASETS: Dict[str, DatasetSpec] = {
    "fashion-mnist": DatasetSpec(fashion_mnist.HUB_ID, "image", "label", "test", 32, 32 / 28, 10, FASHION_MNIST_MEAN,
                                 FASHION_MNIST_STD, "small", in_chans=1, fill_mean=False),
    "cifar10": DatasetSpec("uoft-cs/cifar10", "img", "label", "test", 32, 1.0, 10, CIFAR10_MEAN, CIFAR10_STD,
                           "small"),
    "cifar100": DatasetSpec("uoft-cs/cifar100", "img", "fine_label", "test", 32, 1.0, 100, CIFAR100_MEAN,
                            CIFAR100_STD, "small"),
    "tinyimagenet": DatasetSpec("zh-plus/tiny-imagenet", "image", "label", "valid", 48, 0.75, 200,
                                IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, "small"),
    "imagenet": DatasetSpec("ILSVRC/imagenet-1k", "image", "label", "validation", 224, 0.875, 1000,
                            IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, "imagenet"),
}
_BY_HUB_ID = {spec.hub_id.lower(): name for name, spec in DATASETS.items()}


def resolve_spec(dataset: str) -> Optional[DatasetSpec]:
    """The spec of a known data set by short name (``cifar10``) or hub id (``uoft-cs/cifar10``).

    Args:
        dataset: a short name or hub id, in any letter case.

    Returns:
        Its ``DatasetSpec``, or None when the data set is not one of ``DATASETS``.
    """
    key = dataset.lower()
    key = _BY_HUB_ID.get(key, key)
    return DATASETS.get(key)


def _is_saved_dataset(path: Path) -> bool:
    return any((path / name).is_file() for name in ("dataset_dict.json", "dataset_info.json", "state.json"))


def hub_unreachable(source: str) -> Optional[BaseException]:
    """Asks the Hub once, without retries, about data set ``source``.

    Args:
        source: A Hub data set id.

    Returns:
        None if the Hub answered (any HTTP status: a missing or gated data set is for ``datasets`` to
        report), else the error of the one try (no network, refused, timed out after
        ``HF_HUB_ETAG_TIMEOUT`` seconds).
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError
    try:
        HfApi().dataset_info(source, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except HfHubHTTPError:
        return None
    except Exception as e:  # the transport's own errors (connect, timeout, DNS) differ across httpx releases
        return e
    return None


@contextmanager
def _offline_mode() -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` for the calls inside: ``datasets`` reads its cache without asking the Hub."""
    import datasets
    from huggingface_hub import constants
    saved = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = saved


def load_hf_split(source: str, split: str, cache_dir: Optional[str] = None, local_path: Optional[str] = None,
                  max_samples: Optional[int] = None):
    """Loads one split with ``datasets``: a ``save_to_disk`` folder, an imagefolder or a hub data set.

    Fashion-MNIST is read from Debian's IDX files when they are installed (the same images as the
    Hub's copy; ``max_samples`` keeps its first n). A Hub data set is looked up once first: when the
    Hub does not answer, the split is read from the ``datasets`` cache in offline mode (as with
    ``HF_HUB_OFFLINE=1``) instead of retrying the Hub for half a minute.

    Args:
        source: A Hub data set id, or a directory (imagefolder or ``save_to_disk``).
        split: The split to load.
        cache_dir: The ``datasets`` cache directory (None: its default).
        local_path: A ``save_to_disk`` folder or imagefolder to read instead of ``source``.
        max_samples: Fashion-MNIST's IDX files only: keep the first n images.

    Returns:
        The ``datasets.Dataset`` of the split.

    Raises:
        DatasetUnavailableError: The data set is neither cached nor reachable (the message names it).
        ValueError: A local data set lacks the split.
        FileNotFoundError: ``local_path`` is not a directory.
    """
    import datasets
    idx_dir = fashion_mnist.local_dir()
    if local_path is None and source.lower() == fashion_mnist.HUB_ID and idx_dir is not None:
        return fashion_mnist.load_split(split, idx_dir, max_samples)
    path = Path(local_path or source).expanduser()
    try:
        if path.is_dir():
            if _is_saved_dataset(path):
                loaded = datasets.load_from_disk(str(path))
                if isinstance(loaded, datasets.DatasetDict):
                    if split not in loaded:
                        raise ValueError(f"data set at {str(path)!r} has splits {list(loaded)}, not {split!r}")
                    return loaded[split]
                return loaded
            return datasets.load_dataset("imagefolder", data_dir=str(path), split=split, cache_dir=cache_dir)
        if local_path is not None:
            raise FileNotFoundError(f"dataset_path {local_path!r} is not a directory")
        unreachable = None if datasets.config.HF_HUB_OFFLINE else hub_unreachable(source)
        if unreachable is None:
            return datasets.load_dataset(source, split=split, cache_dir=cache_dir)
        with _offline_mode():
            try:
                return datasets.load_dataset(source, split=split, cache_dir=cache_dir)
            except Exception as e:
                raise DatasetUnavailableError(_unavailable_message(source, split, unreachable)) from e
    except DatasetUnavailableError:
        raise
    except (ValueError, FileNotFoundError) as e:
        if path.is_dir() or local_path is not None:
            raise
        raise DatasetUnavailableError(_unavailable_message(source, split, e)) from e
    except Exception as e:  # datasets raises ConnectionError, HfHubHTTPError, DatasetNotFoundError, ...
        raise DatasetUnavailableError(_unavailable_message(source, split, e)) from e


def _unavailable_message(source: str, split: str, error: BaseException) -> str:
    offline = os.environ.get("HF_DATASETS_OFFLINE") or os.environ.get("HF_HUB_OFFLINE")
    detail = " ".join(f"{type(error).__name__}: {error}".split())[:300]
    return (f"could not load data set {source!r} (split {split!r}): {detail}. "
            f"It is not in the datasets cache{' and offline mode is on' if offline else ' and the Hub is unreachable'}. "
            f"Download it once with network access (python -c \"import datasets; datasets.load_dataset('{source}')\"), "
            f"or pass --dataset-path to a local save_to_disk copy, or --dataset PATH to an image folder; "
            f"without network, set HF_HUB_OFFLINE=1 to use the cache without asking the Hub; "
            f"`timm-lc train` without --config trains the embedded demo offline.")


def _find_columns(ds, image_column: Optional[str], label_column: Optional[str]) -> Tuple[str, str]:
    import datasets
    features = ds.features
    if image_column is None:
        image_column = next((k for k, f in features.items() if isinstance(f, datasets.Image)), None)
    if label_column is None:
        label_column = next((k for k, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    for kind, col in (("image", image_column), ("label", label_column)):
        if col is None or col not in features:
            raise ValueError(f"data set has columns {list(features)}; expected an {kind} column "
                             f"{'(' + repr(col) + ')' if col else ''}: pass --{kind}-column")
    return image_column, label_column


def _num_classes(ds, label_column: str) -> int:
    import datasets
    feature = ds.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        return feature.num_classes
    return int(max(ds[label_column])) + 1


class ImageDataset(Dataset):
    """A ``datasets`` split as ``(image tensor, label)``; images converted to ``mode`` (RGB: TinyImageNet
    has greyscale images; L: Fashion-MNIST).

    Item ``i`` (evaluation) or ``(epoch, i, repeat)`` (training: augmentation seeded by
    (seed, epoch, i, repeat)).
    """

    def __init__(self, source, transform: Callable, image_column: str, label_column: str, seed: int = 0,
                 mode: str = "RGB"):
        self.source = source
        self.mode = mode
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.seed = seed

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item) -> Tuple[Tensor, int]:
        key = item if isinstance(item, tuple) else (None, item, 0)
        epoch, index, repeat = (tuple(key) + (0,))[:3]
        row = self.source[int(index)]
        image = row[self.image_column]
        if hasattr(image, "mode") and image.mode != self.mode:
            image = image.convert(self.mode)
        if epoch is None:  # evaluation: a random transform (a canvas placement) is fixed per image
            with seeded(derive_seed(EVAL_SEED, index)):
                return self.transform(image), int(row[self.label_column])
        with seeded(derive_seed(self.seed, epoch, index, repeat)):
            return self.transform(image), int(row[self.label_column])


class RepeatedViews(Dataset):
    """The translation baseline: item ``(epoch, i)`` -> ``(n views (n, C, H, W), label)``."""

    def __init__(self, base: Dataset, repeats: int):
        self.base, self.repeats = base, repeats

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item) -> Tuple[Tensor, int]:
        epoch, index = item if isinstance(item, tuple) else (0, item)
        views = [self.base[(epoch, index, r)] for r in range(self.repeats)]
        return torch.stack([v[0] for v in views]), views[0][1]


def collate_views(batch: Sequence[Tuple[Tensor, int]]) -> Tuple[Tensor, Tensor]:
    """Concatenates each image's views into one batch: (B, n, C, H, W) -> (B * n, C, H, W)."""
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    n = images.shape[1]
    return images.flatten(0, 1), labels.repeat_interleave(n)


class EpochSampler(Sampler):
    """A shuffling sampler whose order is a function of (seed, epoch) only; yields ``(epoch, index)``.

    Deterministic and identical on every process (Accelerate shards its batches), so exact resume
    needs only the epoch and the number of batches already consumed.
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True):
        self.num_samples, self.seed, self.shuffle = num_samples, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch whose order (and ``(epoch, index)`` keys) the next iteration yields.

        Args:
            epoch: the epoch index.
        """
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
            order = torch.randperm(self.num_samples, generator=gen).tolist()
        else:
            order = range(self.num_samples)
        epoch = self.epoch
        return iter([(epoch, i) for i in order])


@dataclass
class DataBundle:
    """The train and eval data sets of a run plus what the model needs to know about them."""
    name: str  # the data set's id (hub id, path or "demo")
    train: Optional[Dataset]
    eval: Dataset
    num_classes: int
    in_chans: int
    img_size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]


def _small_transforms(img_size: int, spec: DatasetSpec, translate: int, hflip: bool, mean, std):
    """The reference's small-image protocol (module docstring); stored images are resized to the
    spec's stored size first (a no-op for the real data sets)."""
    from torchvision import transforms as T
    from timm.data.transforms import MaybeToTensor
    stored = int(round(img_size / spec.crop_pct))
    head = [T.Resize(stored), T.CenterCrop(img_size)]  # the centre crop zero-pads smaller images
    if stored > img_size:  # TinyImageNet: centre 48 + 2p, then a random 48 crop
        train = [T.Resize(stored), T.CenterCrop(img_size + 2 * translate), T.RandomCrop(img_size)]
    elif translate:
        fill = tuple(int(round(255 * m)) for m in mean) if spec.fill_mean else 0
        train = head + [T.RandomCrop(img_size, padding=translate, fill=fill)]
    else:
        train = list(head)
    if hflip:
        train.append(T.RandomHorizontalFlip())
    tail = [MaybeToTensor(), T.Normalize(mean, std)]
    return T.Compose(train + tail), T.Compose(head + tail)


def _imagenet_transforms(img_size: int, crop_pct: float, hflip: bool, mean, std):
    from timm.data import create_transform
    train = create_transform(img_size, is_training=True, hflip=0.5 if hflip else 0.0, color_jitter=None,
                             mean=mean, std=std)
    test = create_transform(img_size, is_training=False, crop_pct=crop_pct, mean=mean, std=std)
    return train, test


HOLDOUT_SEED = 0  # the held-out validation images are the same for every seed and variant


def holdout_split(num_images: int, fraction: float) -> Tuple[List[int], List[int]]:
    """(kept, held out) indices: a fixed random ``fraction`` of ``num_images`` held out, each list ascending.

    The permutation is seeded by ``HOLDOUT_SEED``, not the training seed, so every run holds out the same images.

    Args:
        num_images: size of the training split.
        fraction: share of the images to hold out (at least one image).

    Returns:
        ``(kept, held)``: the training and held-out indices, each sorted.

    Raises:
        ValueError: if holding out ``fraction`` leaves no image to train on.
    """
    held = max(1, round(num_images * fraction))
    if held >= num_images:
        raise ValueError(f"val_fraction {fraction} of {num_images} training images leaves none to train on")
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(HOLDOUT_SEED)).tolist()
    return sorted(order[held:]), sorted(order[:held])


def _demo_data(cfg: TrainConfig, with_train: bool) -> DataBundle:
    size = cfg.img_size or cfg.canvas_size
    if size != cfg.canvas_size:
        raise ValueError(f"demo data set: img_size ({size}) must equal canvas_size ({cfg.canvas_size})")
    kept = held = None
    if cfg.val_fraction:
        kept, held = holdout_split(len(DigitsCanvas("train", cfg.canvas_size, max_samples=cfg.max_train_samples)),
                                   cfg.val_fraction)
    train = DigitsCanvas("train", cfg.canvas_size, cfg.translate, seed=cfg.seed, max_samples=cfg.max_train_samples,
                         indices=kept) if with_train else None
    if held is None:
        test = DigitsCanvas("test", cfg.canvas_size, cfg.test_shift, seed=cfg.seed, max_samples=cfg.max_eval_samples)
    else:  # the held-out training images, placed as test images are (fixed, within test_shift)
        test = DigitsCanvas("train", cfg.canvas_size, cfg.test_shift, seed=cfg.seed, max_samples=cfg.max_train_samples,
                            indices=held[:cfg.max_eval_samples], fixed_placement=True)
    return DataBundle("demo", train, test, 10, 1, cfg.canvas_size, DIGITS_MEAN, DIGITS_STD)


def _canvas_transforms(cfg: TrainConfig, mean, std):
    """Each image resized to ``object_size`` and placed on a black ``canvas_size`` canvas (``canvas``)."""
    from torchvision import transforms as T
    from timm.data.transforms import MaybeToTensor
    head, tail = [T.Resize((cfg.object_size, cfg.object_size)), MaybeToTensor()], [T.Normalize(mean, std)]
    train = head + [PlaceOnCanvas(cfg.canvas_size, cfg.translate)] + ([T.RandomHorizontalFlip()] if cfg.hflip else [])
    return T.Compose(train + tail), T.Compose(head + [PlaceOnCanvas(cfg.canvas_size, cfg.test_shift)] + tail)


def build_data(cfg: TrainConfig, with_train: bool = True) -> DataBundle:
    """The train/eval data sets named by the config (``with_train=False``: eval only, train is None).

    With ``val_fraction`` the evaluation set is that fraction of the training images, held out
    (the test split is not read); with ``object_size`` every image is placed on a canvas
    (``canvas``).

    Args:
        cfg: the resolved run configuration (data set, splits, sample limits, augmentation, seed).
        with_train: whether to build the training set; False for evaluation only.

    Returns:
        A ``DataBundle`` with the data sets, class and channel counts, input size and normalisation.

    Raises:
        DatasetUnavailableError: if the data set is neither cached nor reachable.
        FileNotFoundError: if ``cfg.dataset_path`` is not a directory.
        ValueError: if ``img_size`` differs from ``canvas_size`` for canvas placements, a split or an
            image/label column is missing, or ``val_fraction`` leaves no training image.
    """
    if cfg.dataset == "demo":
        return _demo_data(cfg, with_train)
    spec = resolve_spec(cfg.dataset)
    source = spec.hub_id if spec else cfg.dataset
    train_src = None
    if with_train or cfg.val_fraction:
        train_src = load_hf_split(source, cfg.train_split, cfg.data_dir, cfg.dataset_path, cfg.max_train_samples)
        if cfg.max_train_samples is not None:
            train_src = train_src.select(range(min(cfg.max_train_samples, len(train_src))))
    if cfg.val_fraction:
        kept, held = holdout_split(len(train_src), cfg.val_fraction)
        train_src, eval_src = train_src.select(kept), train_src.select(held)
    else:
        eval_split = cfg.eval_split or (spec.eval_split if spec else "test")
        eval_src = load_hf_split(source, eval_split, cfg.data_dir, cfg.dataset_path, cfg.max_eval_samples)
    if cfg.max_eval_samples is not None:
        eval_src = eval_src.select(range(min(cfg.max_eval_samples, len(eval_src))))
    image_col, label_col = _find_columns(eval_src, cfg.image_column or (spec.image_column if spec else None),
                                         cfg.label_column or (spec.label_column if spec else None))
    num_classes = spec.num_classes if spec else _num_classes(train_src if train_src is not None else eval_src,
                                                               label_col)
    mean, std = (spec.mean, spec.std) if spec else (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)
    img_size = cfg.img_size or (spec.img_size if spec else 224)
    if cfg.object_size:
        if cfg.img_size and cfg.img_size != cfg.canvas_size:
            raise ValueError(f"object_size placements: img_size ({cfg.img_size}) must equal canvas_size "
                             f"({cfg.canvas_size})")
        img_size = cfg.canvas_size
        train_tf, test_tf = _canvas_transforms(cfg, mean, std)
    elif spec is None or spec.style == "imagenet":
        train_tf, test_tf = _imagenet_transforms(img_size, spec.crop_pct if spec else 0.875, cfg.hflip, mean, std)
    else:
        train_tf, test_tf = _small_transforms(img_size, spec, cfg.translate, cfg.hflip, mean, std)
    in_chans = spec.in_chans if spec else 3
    mode = "L" if in_chans == 1 else "RGB"
    train = ImageDataset(train_src, train_tf, image_col, label_col, seed=cfg.seed, mode=mode) if with_train else None
    test = ImageDataset(eval_src, test_tf, image_col, label_col, seed=cfg.seed, mode=mode)
    return DataBundle(source, train, test, num_classes, in_chans, img_size, mean, std)


def build_train_loader(bundle: DataBundle, cfg: TrainConfig) -> Tuple[DataLoader, EpochSampler]:
    """The shuffled, seeded training loader (drop_last) and its sampler; call ``sampler.set_epoch``.

    Args:
        bundle: the run's data; its ``train`` set is used.
        cfg: the run configuration (``batch_size`` images per batch, each as ``repeats`` views;
            ``num_workers``, ``seed``).

    Returns:
        ``(loader, sampler)``: batches of ``batch_size * repeats`` images with their labels, and the
        ``EpochSampler`` that orders them.

    Raises:
        ValueError: if the training set has fewer images than ``batch_size``.
    """
    dataset = RepeatedViews(bundle.train, cfg.repeats)
    sampler = EpochSampler(len(dataset), seed=cfg.seed)
    if len(dataset) < cfg.batch_size:
        raise ValueError(f"training set has {len(dataset)} images, fewer than batch_size {cfg.batch_size}")
    # own generators: creating a loader iterator then never draws from the global RNG (exact resume)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True,
                        num_workers=cfg.num_workers, collate_fn=collate_views,
                        generator=torch.Generator().manual_seed(cfg.seed))
    return loader, sampler


def build_eval_loader(bundle: DataBundle, cfg: TrainConfig) -> DataLoader:
    """The evaluation loader, in data set order.

    Args:
        bundle: the run's data; its ``eval`` set is used.
        cfg: the run configuration (``eval_batch_size``, else twice ``batch_size``; ``num_workers``).

    Returns:
        An unshuffled ``DataLoader`` of ``(images, labels)`` batches.
    """
    return DataLoader(bundle.eval, batch_size=cfg.eval_batch_size or 2 * cfg.batch_size, shuffle=False,
                      num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(cfg.seed))
