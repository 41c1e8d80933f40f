"""The sleep-convergence command and the sharing benchmark section, on tiny settings."""

from timm_lc.layers import LocallyConnected2d
from timm_lc_cli import sleep_convergence
from timm_lc.sharing import convergence


def test_sleep_convergence_command_writes_a_png_and_tracks_theory(tmp_path, capsys):
    out = tmp_path / "plots" / "conv.png"
    assert sleep_convergence.main(["--in-channels", "2", "8", "--iterations", "20", "--output", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in out.parent.iterdir() if p.name != "conv.png"]  # no temporary left behind
    run = convergence.measure(8, iterations=20, batch_size=128, gamma=1e-5, seed=0, lr=None)
    assert abs(run["measured"][9] / run["expected"][9] - 1) < 0.5


def test_bench_section_measures_a_layer_and_reads_model_shapes():
    from timm_lc.studies.bench import sharing
    cost = sharing.sleep_iteration(LocallyConnected2d(4, 4, 3, (8, 8), padding=1), quick=True)
    assert cost["iteration"] > 0 and cost["floor"] > 0 and cost["solver"] in ("iterate", "compose")
    shapes = sharing.model_geometries("lc_resnet20")
    weights = sum(count * cout * (cin // groups)
                  * k[0] * k[1] * ((size[0] + pads[2] + pads[3] - k[0]) // s[0] + 1)
                  * ((size[1] + pads[0] + pads[1] - k[1]) // s[1] + 1)
                  for (cin, cout, k, size, s, pads, dil, groups, bias), count in shapes.items())
    assert round(weights / 1e6, 1) == 40.8  # docs/method.md section 1: LC ResNet-20 at 32x32
