"""``timm-lc replicate``: the paper's comparison at small scale on the embedded digits, several seeds.

Trains the paper's variants with one small ResNet (``lc_resnet_tiny`` at the demo's canvas
size, ``in_chans=1``) and one budget: ``conv`` (the same net with ordinary convolutions), ``lc``
(locally connected, no sharing), ``lc_translations`` (n randomly translated copies of each
image per batch), ``lc_share_1`` / ``lc_share_10`` / ``lc_share_100`` (Hebbian sleep-phase
sharing every 1 / 10 / 100 optimiser steps) and ``lc_instant_10`` (pool means every 10 steps).
Translation invariance matters: training digits move at most ``translate`` pixels from the
canvas centre, test digits up to ``test_shift`` pixels (anywhere on the canvas), so a net must
recognise digits at positions it never saw them in during training.

Writes ``replication.json`` (``{"dataset", "command", "setup", "runs": [{"variant", "seed",
"test_acc" (percent), ...}], "summary"}``), ``replication.md`` (mean +- std per variant) and
``replication.png`` to ``--output``; every run directory goes under ``--runs-dir``. With
``--publish``, the best LC + sharing run and the best plain LC run get model cards and
``hub/manifest.json`` entries, ready for ``timm-lc push``.
"""
import argparse
import math
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence
from .._io import atomic_path, write_text_atomic

__all__ = ["VARIANTS", "SHARING_VARIANTS", "DIAGNOSTIC_VARIANTS", "study_setup", "variant_config", "run_study", "summarise",
           "write_results", "publish_checkpoints", "main"]

# Each variant is a set of TrainConfig keys over the common setup; nothing else differs between them.
VARIANTS: Dict[str, Dict[str, Any]] = {
    "conv": dict(model="lc_resnet_tiny", model_kwargs={"locally_connected": False}, sleep=False),
    "lc": dict(model="lc_resnet_tiny", sleep=False),
    "lc_translations": dict(model="lc_resnet_tiny", sleep=False),  # + repeats (the --repeats option)
    "lc_share_1": dict(model="lc_resnet_tiny_hebb", sleep=True, sleep_mode="hebbian", sleep_every=1),
    "lc_share_10": dict(model="lc_resnet_tiny_hebb", sleep=True, sleep_mode="hebbian", sleep_every=10),
    "lc_share_100": dict(model="lc_resnet_tiny_hebb", sleep=True, sleep_mode="hebbian", sleep_every=100),
    "lc_instant_10": dict(model="lc_resnet_tiny_hebb", sleep=True, sleep_mode="instant", sleep_every=10),
    # diagnostic, not one of the paper's variants: pool means over *all* positions after every step,
    # i.e. the exact-convolution limit of sharing, to separate the pools' reach from the optimiser's
    "lc_instant_full_1": dict(model="lc_resnet_tiny_hebb", sleep=True, sleep_mode="instant", sleep_pools="full",
                              sleep_every=1),
}
SHARING_VARIANTS = ("lc_share_1", "lc_share_10", "lc_share_100", "lc_instant_10")
DIAGNOSTIC_VARIANTS = ("lc_instant_full_1",)
# the paper's expected ordering, best first (PAPER.md section 7)
EXPECTED_ORDER = ("conv", "lc_share_1", "lc_share_10", "lc_share_100", "lc_translations", "lc")

PUBLISH_ORG = "timm-lc"
PUBLISH_TAG = "digits_replication"
RESULTS_NAME = "replication"
DATASET_DESCRIPTION = ("scikit-learn digits (1,797 real 8x8 handwritten digits, embedded) on a {canvas}x{canvas} "
                       "canvas: train placements within +-{translate} px of the centre, test placements within "
                       "+-{test_shift} px")


def study_setup(epochs: int = 20, lr: float = 0.01, batch_size: int = 64, canvas_size: int = 16,
                translate: int = 2, test_shift: int = 4, repeats: int = 4, max_steps: Optional[int] = None,
                max_train_samples: Optional[int] = None) -> Dict[str, Any]:
    """The TrainConfig keys shared by every variant (the budget: same epochs, batch, lr schedule)."""
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("repeats", repeats)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{key}: expected a positive integer, got {value!r}")
    if test_shift < translate:
        raise ValueError(f"test_shift ({test_shift}) smaller than translate ({translate}): the test would not "
                         f"ask for more translation invariance than training provides")
    return dict(
        dataset="demo", canvas_size=canvas_size, translate=translate, test_shift=test_shift,
        epochs=epochs, max_steps=max_steps, batch_size=batch_size, opt="adamw", lr=lr, weight_decay=1e-4,
        sched="multistep", decay_milestones=[epochs // 2, (3 * epochs) // 4], decay_rate=0.25,
        max_train_samples=max_train_samples, progress=False, plots=True, log_every=20,
        checkpoint_every=10 ** 9, keep_checkpoints=1, _repeats=repeats)


def variant_config(variant: str, seed: int, setup: Dict[str, Any], runs_dir: Path):
    """The TrainConfig of one (variant, seed) run."""
    from .config import config_from_dict
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    values = {k: v for k, v in setup.items() if not k.startswith("_")}
    values.update(VARIANTS[variant])
    if variant == "lc_translations":
        values["repeats"] = setup["_repeats"]
    values.update(seed=seed, name=f"replication-{variant}-seed{seed}",
                  output_dir=str(runs_dir / variant / f"seed{seed}"), overwrite=True)
    return config_from_dict(values, source=f"replication variant {variant!r}")


def run_study(variants: Sequence[str], seeds: Sequence[int], setup: Dict[str, Any], runs_dir: Path,
              log=print) -> List[Dict[str, Any]]:
    """Trains every (variant, seed), sequentially; returns one record per run."""
    from .loop import train
    records = []
    total = len(variants) * len(seeds)
    for i, (seed, variant) in enumerate((s, v) for s in seeds for v in variants):
        cfg = variant_config(variant, seed, setup, runs_dir)
        start = time.perf_counter()
        final = train(cfg)
        record = {"variant": variant, "seed": seed, "test_acc": float(final["test_acc"]),
                  "test_loss": final.get("test_loss"), "train_acc": final.get("train_acc"),
                  "snr": final.get("snr"), "steps": final["step"], "num_sleeps": final.get("num_sleeps", 0),
                  "sleep_time_s": final.get("sleep_time", 0.0), "wall_time_s": time.perf_counter() - start,
                  "run_dir": cfg.output_dir}
        records.append(record)
        log(f"[{i + 1}/{total}] {variant} seed {seed}: test_acc {record['test_acc']:.2f}% "
            f"({record['wall_time_s']:.0f} s)")
    return records


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
        strict = b in ("lc",) or (a, b) == ("lc_share_100", "lc_translations")
        spread = math.sqrt(sa["std"] ** 2 + sb["std"] ** 2)
        checks.append({"pair": f"{a} {'>' if strict else '>='} {b}", "difference": diff,
                       "holds": diff > 0 if strict else diff >= 0,
                       "within_noise": spread > 0 and abs(diff) < spread})
    return checks


def _markdown(results: Dict[str, Any]) -> str:
    from timm_lc.models.lc_resnet import PAPER_SLEEP_CFG as sleep  # what the _hebb variants sleep with
    setup = results["setup"]
    lines = [f"# Small-scale replication: {results['dataset']}", "",
             f"Command: `{results['command']}`", "",
             f"One architecture for every variant: `lc_resnet_tiny` (stages 8/16/32, "
             f"{setup['canvas_size']}x{setup['canvas_size']}, 1 channel; its `_hebb` twin for the sharing variants, "
             f"convolutions for `conv`); {setup['epochs']} epochs, batch {setup['batch_size']}, AdamW lr "
             f"{setup['lr']} (x{setup['decay_rate']} at epochs {setup['decay_milestones']}); sleep phases: "
             f"{sleep['iterations']} iterations on {sleep['batch_size']} noise samples, gamma {sleep['gamma']}, "
             f"{sleep['pools']} pools; "
             f"`lc_translations`: {setup['_repeats']} translated copies per image. Test accuracy in percent, "
             f"mean ± std over seeds.", "",
             "| variant | test accuracy (%) | seeds | min | max | time per run (s) |", "|---|---|---|---|---|---|"]
    for variant, s in results["summary"].items():
        lines.append(f"| `{variant}` | {s['mean']:.1f} ± {s['std']:.1f} | {s['n']} | {s['min']:.1f} | "
                     f"{s['max']:.1f} | {s['wall_time_s']:.0f} |")
    lines += ["", f"Total wall time: {results['wall_time_s'] / 60:.1f} min.", "",
              "The paper's ordering, pair by pair (`within noise`: the difference of the means is smaller "
              "than their combined std):", "", "| pair | difference (points) | holds | within noise |",
              "|---|---|---|---|"]
    for c in results["ordering"]:
        lines.append(f"| {c['pair']} | {c['difference']:+.1f} | {'yes' if c['holds'] else 'no'} | "
                     f"{'yes' if c['within_noise'] else 'no'} |")
    return "\n".join(lines) + "\n"


def _plot(results: Dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    summary = results["summary"]
    variants = list(summary)
    fig, ax = plt.subplots(figsize=(1.2 * len(variants) + 2, 4))
    means = [summary[v]["mean"] for v in variants]
    stds = [summary[v]["std"] for v in variants]
    colours = ["tab:blue" if v == "conv" else "tab:green" if v in SHARING_VARIANTS
               else "tab:purple" if v in DIAGNOSTIC_VARIANTS else "tab:orange"
               for v in variants]
    ax.bar(range(len(variants)), means, yerr=stds, capsize=4, color=colours, alpha=0.7)
    for i, v in enumerate(variants):
        accs = [r["test_acc"] for r in results["runs"] if r["variant"] == v]
        ax.scatter([i] * len(accs), accs, color="black", s=10, zorder=3)
    ax.set_xticks(range(len(variants)), variants, rotation=30, ha="right")
    ax.axhline(10.0, color="grey", linestyle=":", linewidth=1, label="chance (10 classes)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"digits, train shift ±{results['setup']['translate']} px, "
                 f"test shift ±{results['setup']['test_shift']} px")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)


def write_results(results: Dict[str, Any], output: Path) -> Dict[str, Path]:
    """Writes ``replication.json``, ``.md`` and ``.png`` into ``output`` (atomically); returns their paths."""
    import json
    output.mkdir(parents=True, exist_ok=True)
    paths = {ext: output / f"{RESULTS_NAME}.{ext}" for ext in ("json", "md", "png")}
    write_text_atomic(paths["json"], json.dumps(results, indent=2) + "\n")
    write_text_atomic(paths["md"], _markdown(results))
    _plot(results, paths["png"])
    return paths


def publish_checkpoints(results: Dict[str, Any], manifest: Path, cards_dir: Path,
                        org: str = PUBLISH_ORG, tag: str = PUBLISH_TAG) -> List[Dict[str, Any]]:
    """Model cards and manifest entries for the best LC + sharing run and the best plain LC run.

    The best sharing variant is the one with the highest mean test accuracy; of each chosen
    variant the seed with the highest test accuracy is published. Cards go into the run
    directory (``README.md``) and ``cards_dir``; entries (revision None until pushed) into ``manifest``.
    """
    from timm_lc.hub import add_to_manifest, manifest_entry, render_model_card
    summary = results["summary"]
    sharing = [v for v in SHARING_VARIANTS if v in summary]
    chosen = []
    if sharing:
        chosen.append((max(sharing, key=lambda v: summary[v]["mean"]), "lc_resnet_tiny_hebb"))
    if "lc" in summary:
        chosen.append(("lc", "lc_resnet_tiny"))
    published = []
    for variant, arch in chosen:
        run = max((r for r in results["runs"] if r["variant"] == variant), key=lambda r: r["test_acc"])
        model_name = f"{arch}.{tag}"
        repo_id = f"{org}/{model_name}"
        card = render_model_card(run["run_dir"], repo_id)
        write_text_atomic(Path(run["run_dir"]) / "README.md", card)
        cards_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cards_dir / f"{model_name}.md", card)
        entry = manifest_entry(run["run_dir"], repo_id, revision=None, model_name=model_name)
        add_to_manifest(entry, manifest)
        published.append({"variant": variant, "seed": run["seed"], "test_acc": run["test_acc"],
                          "model": model_name, "repo_id": repo_id, "run_dir": run["run_dir"],
                          "sha256": entry["sha256"],
                          "push": f"timm-lc push {run['run_dir']} --repo-id {repo_id} --model-name {model_name} "
                                  f"--manifest {manifest}"})
    return published


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="timm-lc replicate", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (0, 1, ...)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), metavar="V",
                        help=f"variants to train, of: {', '.join(VARIANTS)}")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs (the budget of every variant)")
    parser.add_argument("--steps", type=int, default=None, help="stop every run after this many optimiser steps")
    parser.add_argument("--lr", type=float, default=0.01, help="AdamW learning rate (every variant)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--canvas-size", type=int, default=16, help="the digits' canvas (the model's input size)")
    parser.add_argument("--translate", type=int, default=2, help="training translation, max px from the centre")
    parser.add_argument("--test-shift", type=int, default=4, help="test translation, max px from the centre")
    parser.add_argument("--repeats", type=int, default=4, help="translated copies per image for lc_translations")
    parser.add_argument("--output", default="recipes/results", help="where replication.{json,md,png} go")
    parser.add_argument("--runs-dir", default="runs/replication", help="where the run directories go")
    parser.add_argument("--publish", action="store_true",
                        help="write model cards and manifest entries for the best LC + sharing and plain LC runs")
    parser.add_argument("--manifest", default="hub/manifest.json", help="manifest that --publish adds to")
    parser.add_argument("--smoke", action="store_true",
                        help="CI check: 1 seed, 10 steps, 256 training images (overrides --seeds/--steps)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        unknown = [v for v in args.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant(s) {', '.join(unknown)}; expected any of {', '.join(VARIANTS)}")
        if args.seeds < 1:
            raise ValueError(f"--seeds: expected a positive integer, got {args.seeds}")
        seeds, steps, samples, epochs = range(args.seeds), args.steps, None, args.epochs
        if args.smoke:
            seeds, steps, samples, epochs = range(1), 10, 256, 3
        setup = study_setup(epochs=epochs, lr=args.lr, batch_size=args.batch_size, canvas_size=args.canvas_size,
                            translate=args.translate, test_shift=args.test_shift, repeats=args.repeats,
                            max_steps=steps, max_train_samples=samples)
        variants = list(dict.fromkeys(args.variants))
        start = time.perf_counter()
        runs = run_study(variants, list(seeds), setup, Path(args.runs_dir))
        summary = summarise(runs)
        results = {
            "dataset": DATASET_DESCRIPTION.format(canvas=args.canvas_size, translate=args.translate,
                                                  test_shift=args.test_shift),
            "command": "timm-lc replicate " + shlex.join(argv),
            "setup": setup, "runs": runs, "summary": summary, "ordering": ordering_checks(summary),
            "wall_time_s": time.perf_counter() - start,
        }
        if args.publish:
            results["published"] = publish_checkpoints(results, Path(args.manifest), Path(args.output) / "cards")
        paths = write_results(results, Path(args.output))
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"timm-lc replicate: error: {e}", file=sys.stderr)
        return 2
    print(paths["md"].read_text(encoding="utf-8"))
    for item in results.get("published", []):
        print(f"publish {item['model']} ({item['variant']} seed {item['seed']}, {item['test_acc']:.1f}%): "
              f"{item['push']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
