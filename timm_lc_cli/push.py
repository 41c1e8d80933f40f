"""``timm-lc push RUN_DIR --repo-id ORG/NAME``: publish a run directory to the Hugging Face Hub."""
import argparse
import json
import sys
from typing import List, Optional

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``timm-lc push`` parser, built without torch (``--help`` and usage errors answer at once).

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog="timm-lc push", allow_abbrev=False,
        description="Upload a run directory (model.safetensors + config.json) with a generated model card "
                    "and its plots to the Hugging Face Hub, in a single commit.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory written by `timm-lc train`")
    parser.add_argument("--repo-id", required=True, metavar="ORG/NAME", help="Hub model repo (created if needed)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", default=None, metavar="R", help="branch to commit to (created if needed)")
    parser.add_argument("--token", default=None, metavar="T",
                        help="Hub token (default: HF_TOKEN or the token saved by `hf auth login`)")
    parser.add_argument("--commit-message", default="Upload timm-lc checkpoint")
    parser.add_argument("--license", help="license of the weights (default: apache-2.0, timm_lc.hub.DEFAULT_LICENSE)")
    parser.add_argument("--model-name", default=None, metavar="ARCH.TAG",
                        help="pretrained tag this checkpoint is registered as in timm_lc.models (for the manifest)")
    parser.add_argument("--manifest", default=None, metavar="PATH",
                        help="add the pushed checkpoint to this manifest (e.g. hub/manifest.json)")
    parser.add_argument("--max-retries", type=int, default=3, help="retries of Hub server errors (default 3)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Runs ``timm-lc push``.

    Args:
        argv: the command's arguments; None: ``sys.argv[1:]``.

    Returns:
        0 when pushed, 1 when the push failed (nothing committed), 2 for a usage error.
    """
    args = build_parser().parse_args(argv)
    from timm_lc.hub import DEFAULT_LICENSE, HubError, add_to_manifest, push_to_hub

    try:
        result = push_to_hub(
            args.run_dir, args.repo_id, private=args.private, revision=args.revision, token=args.token,
            commit_message=args.commit_message, license=args.license or DEFAULT_LICENSE, model_name=args.model_name,
            max_retries=args.max_retries,
        )
        if args.manifest:
            add_to_manifest(result.manifest_entry, args.manifest)
    except (HubError, ValueError, TypeError, FileNotFoundError) as err:
        print(f"timm-lc push: error: {err}", file=sys.stderr)
        return 1
    print(f"pushed {', '.join(result.files)} to {result.repo_id}@{result.revision} "
          f"(commit {result.commit_oid}): {result.commit_url}")
    if args.manifest:
        print(f"added to {args.manifest}: {json.dumps(result.manifest_entry)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
