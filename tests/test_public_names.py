"""Every ``__all__`` in the library names only what its module binds: ``from module import *`` works for
each module and brings exactly the listed names (the command-line modules are left out)."""
import importlib
import pkgutil

import pytest

import timm_lc


def _library_modules():
    names = ["timm_lc"]
    for info in pkgutil.walk_packages(timm_lc.__path__, "timm_lc."):
        if info.name.startswith("timm_lc.commands") or info.name == "timm_lc.cli" or info.name.endswith(".__main__"):
            continue
        names.append(info.name)
    return names


MODULES = _library_modules()


def test_the_walk_sees_the_whole_library():
    assert {"timm_lc.layers.locally_connected", "timm_lc.sharing.instant", "timm_lc.train.loop",
            "timm_lc.studies.replicate", "timm_lc.hub.push"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_star_import_gives_exactly_the_names_in_all(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    if exported is None:
        return
    assert len(set(exported)) == len(exported), f"{name}.__all__ lists a name twice"
    assert all(isinstance(n, str) for n in exported), f"{name}.__all__ holds a non-string"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names {missing}, which {name} does not define"
    namespace = {}
    exec(f"from {name} import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(exported)
