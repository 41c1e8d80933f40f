"""``timm-lc replicate``: the paper's comparison at small scale, several seeds, on real data.

Two studies, one set of variants: ``conv`` (the same net with ordinary convolutions), ``lc``
(locally connected, no sharing), ``lc_translations`` (the reference's n-repetition baseline: n
independently translated copies of each image per batch), ``lc_instant_1`` / ``lc_instant_10`` /
``lc_instant_100`` (the reference's instant sharing over ``residue`` pools, borders included,
every 1 / 10 / 100 optimiser steps: the setting behind the paper's numbers) and ``lc_hebb_10``
(the Hebbian sleep, whose limit instant sharing is, over the same pools every 10 steps). Every
variant has the same architecture, budget and optimiser; the test set is i.i.d.

* ``fashion-mnist``: Fashion-MNIST (real 28x28 photographs), zero-padded to 32x32 so the paper's
  CIFAR ResNet-20 geometry applies (``lc_resnet20``, 1 input channel, stages 32/16/8 px;
  widths narrowed to fit a CPU budget), trained on the first ``--train-samples`` training images,
  tested on the standard 10,000 test images; flips on, no translation except ``lc_translations``
  (the reference's CIFAR protocol).
* ``digits``: the embedded scikit-learn digits on a 16x16 canvas (``lc_resnet_tiny``), placed
  within +-``translate`` px of the centre in training *and* test (i.i.d.): the CI-sized check.

Writes ``<name>.json`` (``{"dataset", "command", "setup", "train_samples", "image_size", "runs":
[{"variant", "seed", "test_acc" (percent), ...}], "summary", "ordering", "gap_closed"}``),
``<name>.md`` and ``<name>.png`` to ``--output`` (digits: ``replication.*``; Fashion-MNIST:
``fashion_mnist.*``); run directories go under ``--runs-dir``. ``--smoke`` writes everything
under ``--runs-dir``, never over committed results. ``--jobs N`` trains N runs at a time, each on
its share of the CPU threads. With ``--publish``, the best sharing run and the best plain LC run
get model cards and ``hub/manifest.json`` entries, ready for ``timm-lc push``.
"""
import math
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .._io import write_text_atomic

__all__ = ["STUDIES", "VARIANTS", "SHARING_VARIANTS", "study_setup", "variant_config", "run_study", "summarise",
           "ordering_checks", "gap_closed", "write_results", "publish_checkpoints"]

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


STUDIES: Dict[str, Study] = {
    "fashion-mnist": Study(
        results_name="fashion_mnist",
        description=("Fashion-MNIST (real 28x28 greyscale photographs, 10 classes) zero-padded to 32x32; "
                     "first {train_samples} training images, standard 10,000-image test split (i.i.d.)"),
        model="lc_resnet20", model_kwargs={"channels": [8, 16, 32], "stem_width": 8},
        data=dict(dataset="fashion-mnist", translate=0, hflip=True),
        translations=dict(repeats=2, translate=2), epochs=2, lr=1e-3, batch_size=64, train_samples=10000,
        image_size=32),
    "digits": Study(
        results_name="replication",
        description=("scikit-learn digits (1,797 real 8x8 handwritten digits, embedded) on a 16x16 canvas, "
                     "placed within +-{translate} px of the centre in training and test (i.i.d.)"),
        model="lc_resnet_tiny", model_kwargs={},
        data=dict(dataset="demo", canvas_size=16, translate=2, test_shift=2),
        translations=dict(repeats=4), epochs=20, lr=0.01, batch_size=64, train_samples=None, image_size=16,
        publish_tag="digits_replication"),
}


def study_setup(study: str = "digits", epochs: Optional[int] = None, lr: Optional[float] = None,
                batch_size: Optional[int] = None, train_samples: Optional[int] = None,
                max_steps: Optional[int] = None, repeats: Optional[int] = None,
                eval_samples: Optional[int] = None) -> Dict[str, Any]:
    """The TrainConfig keys shared by every variant of ``study`` (the budget: same epochs, batch, lr
    schedule), with ``_``-prefixed keys that only some variants read."""
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; expected one of {', '.join(STUDIES)}")
    spec = STUDIES[study]
    epochs = spec.epochs if epochs is None else epochs
    translations = dict(spec.translations, **({} if repeats is None else {"repeats": repeats}))
    for key, value in (("epochs", epochs), ("batch_size", batch_size or spec.batch_size),
                       ("repeats", translations["repeats"])):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}: expected a positive integer, got {value!r}")
    milestones = sorted(m for m in {epochs // 2, (3 * epochs) // 4} if 0 < m < epochs)  # none for 1 epoch
    return dict(
        spec.data, epochs=epochs, max_steps=max_steps, batch_size=batch_size or spec.batch_size, opt="adamw",
        lr=spec.lr if lr is None else lr, weight_decay=1e-4, sched="multistep", decay_milestones=milestones,
        decay_rate=0.25, max_train_samples=spec.train_samples if train_samples is None else train_samples,
        max_eval_samples=eval_samples,
        progress=False, plots=True, log_every=20, checkpoint_every=10 ** 9, eval_every=10 ** 9, keep_checkpoints=1,
        _study=study, _translations=translations)


def variant_config(variant: str, seed: int, setup: Dict[str, Any], runs_dir: Path):
    """The TrainConfig of one (variant, seed) run."""
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
    values.update(seed=seed, name=f"{spec.results_name}-{variant}-seed{seed}",
                  output_dir=str(runs_dir / variant / f"seed{seed}"), overwrite=True)
    return config_from_dict(values, source=f"replication variant {variant!r}")


def _init_worker(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)


def _train_one(cfg) -> Dict[str, Any]:
    from ..train.loop import train
    start = time.perf_counter()
    final = train(cfg)
    return {"test_acc": float(final["test_acc"]), "test_loss": final.get("test_loss"),
            "train_acc": final.get("train_acc"), "snr": final.get("snr"), "steps": final["step"],
            "num_sleeps": final.get("num_sleeps", 0), "sleep_time_s": final.get("sleep_time", 0.0),
            "wall_time_s": time.perf_counter() - start, "run_dir": cfg.output_dir}


def run_study(variants: Sequence[str], seeds: Sequence[int], setup: Dict[str, Any], runs_dir: Path,
              jobs: int = 1, log=print) -> List[Dict[str, Any]]:
    """Trains every (variant, seed), ``jobs`` at a time; returns one record per run, in run order."""
    plan = [(v, s) for s in seeds for v in variants]
    configs = [variant_config(v, s, setup, runs_dir) for v, s in plan]
    records: List[Optional[Dict[str, Any]]] = [None] * len(plan)

    def done(i: int, result: Dict[str, Any]) -> None:
        variant, seed = plan[i]
        records[i] = {"variant": variant, "seed": seed, **result}
        finished = sum(r is not None for r in records)
        log(f"[{finished}/{len(plan)}] {variant} seed {seed}: test_acc {result['test_acc']:.2f}% "
            f"({result['wall_time_s']:.0f} s)")

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


def summarise(runs: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per variant (in run order): n, mean and sample std of test_acc (std 0 for one seed), mean time."""
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
    """Each adjacent pair of the paper's ordering present in ``summary``: holds (means) and margin in std."""
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

    Empty when there is no gap (conv not above lc): then there is nothing to close.
    """
    if "conv" not in summary or "lc" not in summary:
        return {}
    gap = summary["conv"]["mean"] - summary["lc"]["mean"]
    if gap <= 0:
        return {}
    return {v: (s["mean"] - summary["lc"]["mean"]) / gap for v, s in summary.items() if v not in ("conv", "lc")}


def _markdown(results: Dict[str, Any]) -> str:
    setup = results["setup"]
    spec = STUDIES[setup["_study"]]
    widths = spec.model_kwargs.get("channels")
    arch = f"`{spec.model}`" + (f" at widths {'/'.join(map(str, widths))}" if widths else "")
    tr = setup["_translations"]
    decays = [m for m in setup["decay_milestones"] if m < setup["epochs"]]
    schedule = f"x{setup['decay_rate']} after epochs {decays}" if decays else "constant lr"
    lines = [f"# Small-scale replication: {results['dataset']}", "",
             f"Command: `{results['command']}`", "",
             f"One architecture for every variant: {arch} ({results['image_size']}x{results['image_size']}, "
             f"1 channel; its `_hebb` twin for the sharing variants, convolutions for `conv`); "
             f"{setup['epochs']} epochs on {results['train_samples']} training images, batch {setup['batch_size']}, "
             f"AdamW lr {setup['lr']} wd {setup['weight_decay']} ({schedule}); sharing over `residue` pools (borders included), instant or Hebbian "
             f"(100 iterations on 128 noise samples, gamma 1e-05, fan-in normalised step); "
             f"`lc_translations`: {tr['repeats']} copies per image"
             + (f" translated by up to {tr['translate']} px" if tr.get("translate") else "")
             + ". Test accuracy in percent, mean ± std over seeds.", "",
             "| variant | test accuracy (%) | seeds | min | max | gap closed | time per run (s) |",
             "|---|---|---|---|---|---|---|"]
    for variant, s in results["summary"].items():
        closed = results["gap_closed"].get(variant)
        lines.append(f"| `{variant}` | {s['mean']:.1f} ± {s['std']:.1f} | {s['n']} | {s['min']:.1f} | "
                     f"{s['max']:.1f} | {'' if closed is None else f'{100 * closed:.0f}%'} | {s['wall_time_s']:.0f} |")
    gap_note = ("`gap closed`: (variant - lc) / (conv - lc), in mean accuracy." if results["gap_closed"] else
                "`gap closed`: none, there is no gap to close here (conv is not above lc).")
    lines += ["", gap_note, "",
              f"Total wall time: {results['wall_time_s'] / 60:.1f} min ({results['jobs']} run(s) at a time).", "",
              "The paper's ordering, pair by pair (`within noise`: the difference of the means is smaller "
              "than their combined std):", "", "| pair | difference (points) | holds | within noise |",
              "|---|---|---|---|"]
    for c in results["ordering"]:
        lines.append(f"| {c['pair']} | {c['difference']:+.1f} | {'yes' if c['holds'] else 'no'} | "
                     f"{'yes' if c['within_noise'] else 'no'} |")
    return "\n".join(lines) + "\n"


def write_results(results: Dict[str, Any], output: Path) -> Dict[str, Path]:
    """Writes ``<name>.json``, ``.md`` and ``.png`` into ``output`` (atomically); returns their paths."""
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
