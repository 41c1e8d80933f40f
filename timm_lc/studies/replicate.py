"""``timm-lc replicate``: the paper's comparison at small scale, several seeds, on real data.

Two studies, one set of variants: ``conv`` (the same net with ordinary convolutions), ``lc``
(locally connected, no sharing), ``lc_translations`` (the reference's n-repetition baseline: n
independently translated copies of each image per batch), ``lc_instant_1`` / ``lc_instant_10`` /
``lc_instant_100`` (the reference's instant sharing over ``residue`` pools, borders included,
every 1 / 10 / 100 optimiser steps: the setting behind the paper's numbers) and ``lc_hebb_10``
(the Hebbian sleep, whose limit instant sharing is, over the same pools every 10 steps). Every
variant has the same architecture and budget; the test set is i.i.d. (training and test images
placed by the same law).

* ``fashion-mnist``: Fashion-MNIST's real photographs downscaled to 14x14 on a 24x24 canvas,
  within +-4 px of the centre (``lc_resnet_tiny``'s widths), first ``--train-samples`` training
  images, the standard 10,000 test images: a geometry where plain LC falls clearly below conv.
  Its selection runs (``--tune``) train half the epochs, to fit the grid into a CPU budget.
* ``digits``: the embedded scikit-learn digits on a 16x16 canvas (``lc_resnet_tiny``), placed
  within +-``translate`` px of the centre in training *and* test: the CI-sized check.

Without ``--tune`` every variant trains with the study's AdamW lr. With ``--tune`` (the
reference launcher's protocol) each variant first picks its optimiser (AdamW or SGD with
momentum 0.9), learning rate and, for sharing variants, pooled optimiser state on a grid, by
accuracy on 10% of the training images held out (seed 0; a choice at the edge of the lr grid
extends it), then trains every seed at its choice and is tested on the test split.

Writes ``<name>.json`` (``{"dataset", "command", "setup", "train_samples", "image_size", "runs":
[{"variant", "seed", "test_acc" (percent), "optimizer", "lr", "pool_optimizer_state", ...}],
"summary", "ordering", "gap_closed"}``, with ``--tune`` also ``"selection": [{"variant",
"optimizer", "lr", "pool_optimizer_state", "val_acc", ...}]`` and ``"choices"``), ``<name>.md`` and
``<name>.png`` to ``--output`` (digits: ``replication.*``; Fashion-MNIST: ``fashion_mnist.*``); run
directories go under ``--runs-dir``. ``--smoke`` writes everything under ``--runs-dir``, never
over committed results. ``--jobs N`` trains N runs at a time, each on its share of the CPU
threads. With ``--publish``, the best sharing run and the best plain LC run get model cards and
``hub/manifest.json`` entries, ready for ``timm-lc push``.
"""
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .._io import write_text_atomic

__all__ = ["STUDIES", "VARIANTS", "SHARING_VARIANTS", "Setting", "study_setup", "variant_config", "run_study",
           "tuning_grid", "tune_study", "summarise", "ordering_checks", "gap_closed", "write_results",
           "publish_checkpoints"]

# Each variant is a set of TrainConfig keys over the common setup; nothing else differs between them.
_INSTANT = dict(sleep=True, sleep_mode="instant", sleep_pools="residue")
VARIANTS: Dict[str, Dict[str, Any]] = {
    "conv": dict(sleep=False),  # + the study's model with locally_connected=False
    "lc": dict(sleep=False),
    "lc_translations": dict(sleep=False),  # + the study's repeats and translation
    "lc_instant_1": dict(_INSTANT, sleep_every=1),
    "lc_instant_10": dict(_INSTANT, sleep_every=10),
    "lc_instant_100": dict(_INSTANT, sleep_every=100),
    "lc_hebb_10": dict(sleep=True, sleep_mode="hebbian", sleep_pools="residue", sleep_every=10),
}
SHARING_VARIANTS = ("lc_instant_1", "lc_instant_10", "lc_instant_100", "lc_hebb_10")
# the paper's expected ordering, best first (docs/method.md)
EXPECTED_ORDER = ("conv", "lc_instant_1", "lc_instant_10", "lc_instant_100", "lc_translations", "lc")

PUBLISH_ORG = "timm-lc"


@dataclass(frozen=True)
class Study:
    """One study's data, architecture and default budget."""
    results_name: str
    description: str
    model: str  # sharing variants use its ``_hebb`` twin (same architecture, carries sleep settings)
    model_kwargs: Dict[str, Any]
    data: Dict[str, Any]  # TrainConfig keys of the data (every variant)
    translations: Dict[str, Any]  # TrainConfig keys of lc_translations only
    epochs: int
    lr: float
    batch_size: int
    train_samples: Optional[int]
    image_size: int
    publish_tag: Optional[str] = None
    defaults: Dict[str, Any] = field(default_factory=dict)
    tune_epochs: Optional[int] = None  # the selection runs' budget (None: the study's epochs)


STUDIES: Dict[str, Study] = {
    "fashion-mnist": Study(
        results_name="fashion_mnist",
        description=("Fashion-MNIST (real greyscale photographs of clothing, 10 classes) downscaled to 14x14 on a "
                     "24x24 canvas, placed within +-{translate} px of the centre in training and test (i.i.d.); "
                     "first {train_samples} training images, standard 10,000-image test split"),
        model="lc_resnet_tiny", model_kwargs={},
        data=dict(dataset="fashion-mnist", object_size=14, canvas_size=24, img_size=24, translate=4, test_shift=4,
                  hflip=False),
        translations=dict(repeats=4), epochs=20, lr=1e-2, batch_size=64, train_samples=4000, image_size=24,
        tune_epochs=8),
    "digits": Study(
        results_name="replication",
        description=("scikit-learn digits (1,797 real 8x8 handwritten digits, embedded) on a 16x16 canvas, "
                     "placed within +-{translate} px of the centre in training and test (i.i.d.)"),
        model="lc_resnet_tiny", model_kwargs={},
        data=dict(dataset="demo", canvas_size=16, translate=2, test_shift=2),
        translations=dict(repeats=4), epochs=20, lr=0.01, batch_size=64, train_samples=None, image_size=16,
        publish_tag="digits_replication"),
}


@dataclass(frozen=True)
class Setting:
    """One point of the tuning grid: optimiser (timm name), learning rate, pooled optimiser state."""
    optimizer: str
    lr: float
    pool_optimizer_state: bool = False

    def to_dict(self) -> Dict[str, Any]:
        """The setting as a JSON-ready dict.

        Returns:
            ``{"optimizer", "lr", "pool_optimizer_state"}``, the keys of a selection record.
        """
        return {"optimizer": self.optimizer, "lr": self.lr, "pool_optimizer_state": self.pool_optimizer_state}


# the tuning grid: AdamW (the reference's) and SGD with momentum 0.9 (timm's "momentum"), 3 lrs each,
# a factor ~3 apart; a choice at either end of its optimiser's list is extended by the same factor
TUNE_LRS = {"adamw": (3e-3, 1e-2, 3e-2), "momentum": (0.03, 0.1, 0.3)}
TUNE_FACTOR = 3.0
TUNE_EXTENSIONS = 2  # at most this many extensions per variant
VAL_FRACTION = 0.1  # held out of the training images for selection, as the reference's launcher


def _milestones(epochs: int) -> List[int]:
    """The lr decays (x0.25) at 1/2 and 3/4 of the epochs, as the reference's 100/150 of 200; none for 1 epoch."""
    return sorted(m for m in {epochs // 2, (3 * epochs) // 4} if 0 < m < epochs)


def study_setup(study: str = "digits", epochs: Optional[int] = None, lr: Optional[float] = None,
                batch_size: Optional[int] = None, train_samples: Optional[int] = None,
                max_steps: Optional[int] = None, repeats: Optional[int] = None,
                eval_samples: Optional[int] = None) -> Dict[str, Any]:
    """The TrainConfig keys shared by every variant of ``study`` (the budget: same epochs, batch, lr
    schedule), with ``_``-prefixed keys that only some variants read.

    Args:
        study: a key of ``STUDIES``.
        epochs: training epochs (None: the study's); the lr decays at 1/2 and 3/4 of them.
        lr: the AdamW learning rate (None: the study's).
        batch_size: batch size (None: the study's).
        train_samples: how many training images to use (None: the study's limit, if any).
        max_steps: stop every run after this many optimiser steps (None: no limit).
        repeats: the number of translated copies per image of ``lc_translations`` (None: the study's).
        eval_samples: how many test images to evaluate on (None: all).

    Returns:
        The dict of TrainConfig keys, plus ``_study`` (the study's name) and ``_translations`` (the
        keys ``lc_translations`` adds).

    Raises:
        ValueError: if ``study`` is unknown, or ``epochs``, the batch size or ``repeats`` is not a positive integer.
    """
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; expected one of {', '.join(STUDIES)}")
    spec = STUDIES[study]
    epochs = spec.epochs if epochs is None else epochs
    batch_size = spec.batch_size if batch_size is None else batch_size
    translations = dict(spec.translations, **({} if repeats is None else {"repeats": repeats}))
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("repeats", translations["repeats"])):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}: expected a positive integer, got {value!r}")
    milestones = _milestones(epochs)
    return dict(
        spec.data, epochs=epochs, max_steps=max_steps, batch_size=batch_size, opt="adamw",
        lr=spec.lr if lr is None else lr, weight_decay=1e-4, sched="multistep", decay_milestones=milestones,
        decay_rate=0.25, max_train_samples=spec.train_samples if train_samples is None else train_samples,
        max_eval_samples=eval_samples,
        progress=False, plots=True, log_every=20, checkpoint_every=10 ** 9, eval_every=10 ** 9, keep_checkpoints=1,
        _study=study, _translations=translations)


def variant_config(variant: str, seed: int, setup: Dict[str, Any], runs_dir: Path,
                   setting: Optional[Setting] = None, selection: bool = False):
    """The TrainConfig of one (variant, seed) run, at ``setting`` (default: the study's AdamW lr).

    Args:
        variant: a key of ``VARIANTS``.
        seed: the run's seed.
        setup: the study's common keys, from ``study_setup``.
        runs_dir: the directory the run's directory goes under (``<variant>/<run>``).
        setting: the optimiser, lr and pooled optimiser state to train at (None: the study's AdamW lr).
        selection: train on 90% of the training images and evaluate on the other 10% (tuning), with the
            study's shorter selection budget when it has one and ``max_steps`` is unset.

    Returns:
        The validated ``TrainConfig``, set to overwrite its output directory.

    Raises:
        ValueError: if ``variant`` is unknown, or the resulting config is invalid.
    """
    from timm_lc_settings.train import config_from_dict
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    spec = STUDIES[setup["_study"]]
    values = {k: v for k, v in setup.items() if not k.startswith("_")}
    values.update(VARIANTS[variant])
    values["model"] = spec.model + ("_hebb" if variant in SHARING_VARIANTS else "")
    values["model_kwargs"] = dict(spec.model_kwargs, **({"locally_connected": False} if variant == "conv" else {}))
    if variant == "lc_translations":
        values.update(setup["_translations"])
    run = f"seed{seed}"
    if setting is not None:
        values.update(opt=setting.optimizer, lr=setting.lr)
        if variant in SHARING_VARIANTS:
            values["sleep_pool_optimizer_state"] = setting.pool_optimizer_state
        run = f"{setting.optimizer}-lr{setting.lr:g}{'-pooled' if setting.pool_optimizer_state else ''}-{run}"
    if selection:
        values["val_fraction"] = VAL_FRACTION
        if spec.tune_epochs is not None and values["max_steps"] is None:
            values.update(epochs=spec.tune_epochs, decay_milestones=_milestones(spec.tune_epochs))
        run = f"select-{run}"
    values.update(seed=seed, name=f"{spec.results_name}-{variant}-{run}",
                  output_dir=str(runs_dir / variant / run), overwrite=True)
    return config_from_dict(values, source=f"replication variant {variant!r}")


def _init_worker(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def _epoch_losses(run_dir: str) -> List[float]:
    """Mean training loss of each epoch, from the run's metrics (the convergence record)."""
    from ..run_dir import METRICS_NAME, read_metrics
    by_epoch: Dict[int, List[float]] = {}
    for record in read_metrics(Path(run_dir) / METRICS_NAME):
        if record.get("event") == "train":
            by_epoch.setdefault(int(record["epoch"]), []).append(float(record["loss"]))
    return [statistics.fmean(by_epoch[e]) for e in sorted(by_epoch)]


def _train_one(cfg) -> Dict[str, Any]:
    from ..train.loop import train
    start = time.perf_counter()
    final = train(cfg)
    return {"test_acc": float(final["test_acc"]), "test_loss": final.get("test_loss"),
            "train_acc": final.get("train_acc"), "snr": final.get("snr"), "steps": final["step"],
            "num_sleeps": final.get("num_sleeps", 0), "sleep_time_s": final.get("sleep_time", 0.0),
            "optimizer": cfg.opt, "lr": cfg.lr, "pool_optimizer_state": bool(cfg.sleep_pool_optimizer_state),
            "epoch_train_loss": _epoch_losses(cfg.output_dir),
            "wall_time_s": time.perf_counter() - start, "run_dir": cfg.output_dir}


def _run_configs(configs: Sequence[Any], labels: Sequence[str], jobs: int, log) -> List[Dict[str, Any]]:
    """Trains every config, ``jobs`` at a time; returns their records in the given order."""
    records: List[Optional[Dict[str, Any]]] = [None] * len(configs)

    def done(i: int, result: Dict[str, Any]) -> None:
        records[i] = result
        finished = sum(r is not None for r in records)
        log(f"[{finished}/{len(configs)}] {labels[i]}: {'val' if configs[i].val_fraction else 'test'}_acc "
            f"{result['test_acc']:.2f}% ({result['wall_time_s']:.0f} s)")

    if jobs == 1:
        for i, cfg in enumerate(configs):
            done(i, _train_one(cfg))
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads,)) as pool:
            futures = {pool.submit(_train_one, cfg): i for i, cfg in enumerate(configs)}
            for future in as_completed(futures):
                done(futures[future], future.result())
    return [r for r in records if r is not None]


def run_study(variants: Sequence[str], seeds: Sequence[int], setup: Dict[str, Any], runs_dir: Path,
              jobs: int = 1, log=print, choices: Optional[Dict[str, Setting]] = None) -> List[Dict[str, Any]]:
    """Trains every (variant, seed), at ``choices[variant]`` if given.

    Args:
        variants: the variants to train (keys of ``VARIANTS``).
        seeds: the seeds; every variant trains once per seed.
        setup: the study's common keys, from ``study_setup``.
        runs_dir: the directory the run directories go under.
        jobs: how many runs train at a time (more than 1: in spawned processes sharing the CPU threads).
        log: called with a progress line as each run finishes.
        choices: the setting of each variant (from ``tune_study``); a variant not in it trains at the study's lr.

    Returns:
        One record per run, seed by seed and variant by variant: ``variant``, ``seed``, ``test_acc``
        (percent), the optimiser settings, training-loss record, wall time and run directory.
    """
    plan = [(v, s) for s in seeds for v in variants]
    choices = choices or {}
    configs = [variant_config(v, s, setup, runs_dir, setting=choices.get(v)) for v, s in plan]
    results = _run_configs(configs, [f"{v} seed {s}" for v, s in plan], jobs, log)
    return [{"variant": v, "seed": s, **r} for (v, s), r in zip(plan, results)]


def tuning_grid(variant: str) -> List[Setting]:
    """The settings a variant is selected from: each optimiser at its lrs, pooled state on and off when it shares.

    Args:
        variant: the variant's name.

    Returns:
        The ``Setting`` of each grid point (pooled state only varies for ``SHARING_VARIANTS``).
    """
    pooled = (False, True) if variant in SHARING_VARIANTS else (False,)
    return [Setting(opt, lr, pool) for opt, lrs in TUNE_LRS.items() for lr in lrs for pool in pooled]


def _edge_extension(best: Setting, tried: Sequence[Setting]) -> Optional[Setting]:
    """The next lr beyond ``best`` when it is the lowest or highest tried for its optimiser and pooling."""
    lrs = sorted(s.lr for s in tried if (s.optimizer, s.pool_optimizer_state) ==
                 (best.optimizer, best.pool_optimizer_state))
    if best.lr == lrs[-1]:
        return Setting(best.optimizer, best.lr * TUNE_FACTOR, best.pool_optimizer_state)
    if best.lr == lrs[0]:
        return Setting(best.optimizer, best.lr / TUNE_FACTOR, best.pool_optimizer_state)
    return None


def tune_study(variants: Sequence[str], setup: Dict[str, Any], runs_dir: Path, jobs: int = 1,
               log=print) -> Tuple[List[Dict[str, Any]], Dict[str, Setting]]:
    """Selects each variant's setting on the held-out 10% (seed 0); returns (every selection record, choices).

    The grid (``tuning_grid``) runs first for all variants; while a variant's best setting lies at
    the edge of its lr range the range is extended (``TUNE_EXTENSIONS`` times at most).

    Args:
        variants: the variants to tune.
        setup: the study's common keys, from ``study_setup``.
        runs_dir: the selection runs go under its ``selection`` subdirectory.
        jobs: how many runs train at a time.
        log: called with a progress line as each run finishes.

    Returns:
        A tuple of the selection records (``variant``, the setting's keys, ``val_acc``, ``train_acc``,
        ``epoch_train_loss``, ``wall_time_s``), in run order, and each variant's chosen ``Setting``
        (highest validation accuracy).
    """
    selection: List[Dict[str, Any]] = []

    def evaluate(pairs: Sequence[Tuple[str, Setting]]) -> None:
        configs = [variant_config(v, 0, setup, runs_dir / "selection", setting=st, selection=True) for v, st in pairs]
        labels = [f"select {v} {st.optimizer} lr {st.lr:g}{' pooled' if st.pool_optimizer_state else ''}"
                  for v, st in pairs]
        for (v, st), r in zip(pairs, _run_configs(configs, labels, jobs, log)):
            selection.append({"variant": v, **st.to_dict(), "val_acc": r["test_acc"], "train_acc": r["train_acc"],
                              "epoch_train_loss": r["epoch_train_loss"], "wall_time_s": r["wall_time_s"]})

    def best(variant: str) -> Tuple[Setting, List[Setting]]:
        rows = [r for r in selection if r["variant"] == variant]
        top = max(rows, key=lambda r: r["val_acc"])
        tried = [Setting(r["optimizer"], r["lr"], r["pool_optimizer_state"]) for r in rows]
        return Setting(top["optimizer"], top["lr"], top["pool_optimizer_state"]), tried

    evaluate([(v, st) for v in variants for st in tuning_grid(v)])
    for _ in range(TUNE_EXTENSIONS):
        extra = [(v, ext) for v in variants for ext in [_edge_extension(*best(v))] if ext is not None]
        if not extra:
            break
        evaluate(extra)
    return selection, {v: best(v)[0] for v in variants}


def summarise(runs: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per variant (in run order): n, mean and sample std of test_acc (std 0 for one seed), mean time.

    Args:
        runs: the run records of ``run_study``.

    Returns:
        A dict from variant to ``{"n", "mean", "std", "min", "max", "wall_time_s"}``.
    """
    by_variant: Dict[str, List[Dict[str, Any]]] = {}
    for run in runs:
        by_variant.setdefault(run["variant"], []).append(run)
    summary = {}
    for variant, rows in by_variant.items():
        accs = [r["test_acc"] for r in rows]
        summary[variant] = {
            "n": len(accs), "mean": statistics.fmean(accs), "std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "min": min(accs), "max": max(accs),
            "wall_time_s": statistics.fmean(r["wall_time_s"] for r in rows)}
    return summary


def ordering_checks(summary: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Each adjacent pair of the paper's ordering present in ``summary``: holds (means) and margin in std.

    A pair ending in ``lc``, or a sharing variant before ``lc_translations``, must be strictly above; the others
    may tie.

    Args:
        summary: the per-variant summary of ``summarise``.

    Returns:
        One dict per pair: ``pair`` (e.g. ``"conv >= lc_instant_1"``), ``difference`` of the means,
        ``holds`` and ``within_noise`` (the difference is below the combined std).
    """
    present = [v for v in EXPECTED_ORDER if v in summary]
    checks = []
    for a, b in zip(present, present[1:]):
        sa, sb = summary[a], summary[b]
        diff = sa["mean"] - sb["mean"]
        strict = b == "lc" or a in SHARING_VARIANTS and b == "lc_translations"
        spread = math.sqrt(sa["std"] ** 2 + sb["std"] ** 2)
        checks.append({"pair": f"{a} {'>' if strict else '>='} {b}", "difference": diff,
                       "holds": diff > 0 if strict else diff >= 0,
                       "within_noise": spread > 0 and abs(diff) < spread})
    return checks


def gap_closed(summary: Dict[str, Dict[str, Any]]) -> Dict[str, float]:
    """Per variant, the share of the conv - LC gap it closes: (acc - lc) / (conv - lc), in mean accuracy.

    Args:
        summary: the per-variant summary of ``summarise``.

    Returns:
        A dict from each variant other than conv and lc to its share (1: as good as conv). Empty when
        conv or lc is missing, or there is no gap (conv not above lc): then there is nothing to close.
    """
    if "conv" not in summary or "lc" not in summary:
        return {}
    gap = summary["conv"]["mean"] - summary["lc"]["mean"]
    if gap <= 0:
        return {}
    return {v: (s["mean"] - summary["lc"]["mean"]) / gap for v, s in summary.items() if v not in ("conv", "lc")}


def _setting_text(setting: Dict[str, Any]) -> str:
    name = {"adamw": "AdamW", "momentum": "SGD-m"}.get(setting["optimizer"], setting["optimizer"])
    return f"{name} {setting['lr']:g}" + (" pooled" if setting.get("pool_optimizer_state") else "")


def _convergence(runs: Sequence[Dict[str, Any]]) -> str:
    """Mean relative change of the training loss over each run's last epoch, and the final train accuracy."""
    changes = [abs(r["epoch_train_loss"][-1] - r["epoch_train_loss"][-2]) / r["epoch_train_loss"][-2]
               for r in runs if len(r.get("epoch_train_loss") or []) >= 2]
    train = [r["train_acc"] for r in runs if r.get("train_acc") is not None]
    return (f"{100 * statistics.fmean(changes):.1f}%" if changes else "") + " | " + \
        (f"{statistics.fmean(train):.1f}" if train else "")


def _header(results: Dict[str, Any]) -> List[str]:
    setup = results["setup"]
    spec = STUDIES[setup["_study"]]
    tr = setup["_translations"]
    decays = [m for m in setup["decay_milestones"] if m < setup["epochs"]]
    schedule = f"x{setup['decay_rate']} after epochs {decays}" if decays else "constant lr"
    optimiser = ("optimiser, lr and pooled optimiser state chosen per variant on 10% of the training images "
                 "held out (seed 0; selection table below)" if results.get("choices") else
                 f"AdamW lr {setup['lr']}") + f", wd {setup['weight_decay']} ({schedule})"
    return [f"# Small-scale replication: {results['dataset']}", "", f"Command: `{results['command']}`", "",
            f"One architecture for every variant: `{spec.model}` ({results['image_size']}x{results['image_size']}, "
            f"1 channel; its `_hebb` twin for the sharing variants, convolutions for `conv`); "
            f"{setup['epochs']} epochs on {results['train_samples']} training images, batch {setup['batch_size']}, "
            f"{optimiser}; sharing over `residue` pools (borders included), instant or Hebbian "
            f"(100 iterations on 128 noise samples, gamma 1e-05, fan-in normalised step); "
            f"`lc_translations`: {tr['repeats']} copies per image"
            + (f" translated by up to {tr['translate']} px" if tr.get("translate") else "")
            + ". Test accuracy in percent, mean ± std over seeds.", ""]


def _markdown(results: Dict[str, Any]) -> str:
    choices = results.get("choices") or {}
    lines = _header(results) + [
        "| variant | setting | test accuracy (%) | seeds | min | max | gap closed | last-epoch loss change | "
        "train acc (%) | time per run (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for variant, s in results["summary"].items():
        closed = results["gap_closed"].get(variant)
        runs = [r for r in results["runs"] if r["variant"] == variant]
        setting = choices.get(variant) or runs[0]
        lines.append(f"| `{variant}` | {_setting_text(setting)} | {s['mean']:.1f} ± {s['std']:.1f} | {s['n']} | "
                     f"{s['min']:.1f} | {s['max']:.1f} | {'' if closed is None else f'{100 * closed:.0f}%'} | "
                     f"{_convergence(runs)} | {s['wall_time_s']:.0f} |")
    gap_note = ("`gap closed`: (variant - lc) / (conv - lc), in mean accuracy." if results["gap_closed"] else
                "`gap closed`: none, there is no gap to close here (conv is not above lc).")
    lines += ["", gap_note + " `last-epoch loss change`: relative change of the mean training loss from the "
              "second-last to the last epoch (convergence); `train acc`: running accuracy of the last epoch.", "",
              f"Total wall time: {results['wall_time_s'] / 60:.1f} min ({results['jobs']} run(s) at a time).", "",
              "The paper's ordering, pair by pair (`within noise`: the difference of the means is smaller "
              "than their combined std):", "", "| pair | difference (points) | holds | within noise |",
              "|---|---|---|---|"]
    for c in results["ordering"]:
        lines.append(f"| {c['pair']} | {c['difference']:+.1f} | {'yes' if c['holds'] else 'no'} | "
                     f"{'yes' if c['within_noise'] else 'no'} |")
    if results.get("selection"):
        spec = STUDIES[results["setup"]["_study"]]
        lines += ["", f"Selection (seed 0, {spec.tune_epochs or results['setup']['epochs']} epochs on 90% of the "
                  f"training images, validation accuracy on the held-out 10%, percent; **chosen**):", "",
                  "| variant | setting | val acc | last-epoch loss change | train acc |", "|---|---|---|---|---|"]
        for row in results["selection"]:
            chosen = choices.get(row["variant"]) == {k: row[k] for k in ("optimizer", "lr", "pool_optimizer_state")}
            val = f"**{row['val_acc']:.1f}**" if chosen else f"{row['val_acc']:.1f}"
            lines.append(f"| `{row['variant']}` | {_setting_text(row)} | {val} | {_convergence([row])} |")
    return "\n".join(lines) + "\n"


def write_results(results: Dict[str, Any], output: Path) -> Dict[str, Path]:
    """Writes ``<name>.json``, ``.md`` and ``.png`` into ``output`` (created if missing), each atomically.

    Args:
        results: the study's results (``setup``, ``runs``, ``summary``, ``ordering``, ``gap_closed``, ...).
        output: the directory to write into; ``<name>`` is the study's results name.

    Returns:
        The path of each file, keyed by extension (``json``, ``md``, ``png``).
    """
    import json
    name = STUDIES[results["setup"]["_study"]].results_name
    output.mkdir(parents=True, exist_ok=True)
    paths = {ext: output / f"{name}.{ext}" for ext in ("json", "md", "png")}
    write_text_atomic(paths["json"], json.dumps(results, indent=2) + "\n")
    write_text_atomic(paths["md"], _markdown(results))
    title = STUDIES[results["setup"]["_study"]].results_name.replace("_", " ") + ": i.i.d. test"
    from ..figures import plot_replication  # matplotlib and the run format: not needed to list the studies
    plot_replication(results, paths["png"], title, SHARING_VARIANTS)
    return paths


def publish_checkpoints(results: Dict[str, Any], manifest: Path, cards_dir: Path,
                        org: str = PUBLISH_ORG) -> List[Dict[str, Any]]:
    """Model cards and manifest entries for the best LC + sharing run and the best plain LC run.

    The best sharing variant is the one with the highest mean test accuracy; of each chosen
    variant the seed with the highest test accuracy is published. Cards go into the run
    directory (``README.md``) and ``cards_dir``; entries (revision None until pushed) into ``manifest``.

    Args:
        results: the study's results (``setup``, ``runs``, ``summary``).
        manifest: the path of the hub manifest to add the entries to.
        cards_dir: the directory the model cards are also written to (created if missing).
        org: the Hub organization of the repo ids.

    Returns:
        One dict per published run: ``variant``, ``seed``, ``test_acc``, ``model``, ``repo_id``, ``run_dir``,
        ``sha256`` and the ``push`` command that uploads it.

    Raises:
        ValueError: if the study has no publish tag (it publishes no checkpoints). The errors of ``read_run``
            (a run directory) and ``add_to_manifest`` (the manifest) pass through.
    """
    from timm_lc.hub import add_to_manifest, manifest_entry, render_model_card
    from timm_lc.run_dir import read_run
    spec = STUDIES[results["setup"]["_study"]]
    if spec.publish_tag is None:
        raise ValueError(f"study {results['setup']['_study']!r} has no published checkpoints")
    summary = results["summary"]
    sharing = [v for v in SHARING_VARIANTS if v in summary]
    chosen = []
    if sharing:
        chosen.append((max(sharing, key=lambda v: summary[v]["mean"]), f"{spec.model}_hebb"))
    if "lc" in summary:
        chosen.append(("lc", spec.model))
    published = []
    for variant, arch in chosen:
        run = max((r for r in results["runs"] if r["variant"] == variant), key=lambda r: r["test_acc"])
        model_name = f"{arch}.{spec.publish_tag}"
        repo_id = f"{org}/{model_name}"
        checked = read_run(run["run_dir"])  # read and checked once, for the card and the entry
        card = render_model_card(checked, repo_id)
        write_text_atomic(Path(run["run_dir"]) / "README.md", card)
        cards_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cards_dir / f"{model_name}.md", card)
        entry = manifest_entry(checked, repo_id, revision=None, model_name=model_name)
        add_to_manifest(entry, manifest)
        published.append({"variant": variant, "seed": run["seed"], "test_acc": run["test_acc"],
                          "model": model_name, "repo_id": repo_id, "run_dir": run["run_dir"],
                          "sha256": entry["sha256"],
                          "push": f"timm-lc push {run['run_dir']} --repo-id {repo_id} --model-name {model_name} "
                                  f"--manifest {manifest}"})
    return published
