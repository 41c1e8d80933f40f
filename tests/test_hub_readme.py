"""hub/README.md lists exactly the checkpoints of hub/manifest.json."""
import re
from pathlib import Path

from timm_lc.hub import load_manifest

HUB = Path(__file__).resolve().parents[1] / "hub"


def test_readme_lists_every_published_checkpoint():
    manifest = load_manifest(HUB / "manifest.json")
    readme = (HUB / "README.md").read_text()
    listed = set(re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|", readme, flags=re.M))
    assert listed == {(e["model"], e["repo_id"]) for e in manifest["checkpoints"]}
    for entry in manifest["checkpoints"]:
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{entry['model']}`"))
        assert f"{entry['num_params']:,}" in row and f"{entry['metrics']['test_acc']:.1f}%" in row
        assert "x".join(map(str, entry["input_size"])) in row
