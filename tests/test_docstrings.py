"""Every public function, class and method of the library carries a timm-style docstring: ``Args:``
where it takes arguments, ``Returns:`` (or ``Yields:``) where it returns a value, ``Raises:`` where it
raises. Public means named in its module's ``__all__``; a property needs only a docstring."""
import ast
import importlib
import inspect
import pkgutil
import textwrap

import pytest

import timm_lc
import timm_lc_settings


def _modules():
    names = []
    for package in (timm_lc, timm_lc_settings):
        names.append(package.__name__)
        names += [info.name for info in pkgutil.walk_packages(package.__path__, package.__name__ + ".")
                  if not info.name.endswith(".__main__")]
    return names


def _own_body_nodes(func: ast.AST):
    """The nodes of a function's body, not those of functions or classes defined inside it."""
    stack = list(ast.iter_child_nodes(func))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def _problems(func, qualname: str) -> list:
    if isinstance(func, property):
        return [] if func.__doc__ else [f"{qualname}: no docstring"]
    func = inspect.unwrap(func)
    doc = inspect.getdoc(func) or ""
    if not doc:
        return [f"{qualname}: no docstring"]
    node = ast.parse(textwrap.dedent(inspect.getsource(func))).body[0]
    args = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            if a.arg not in ("self", "cls")]
    if node.args.vararg:
        args.append(node.args.vararg.arg)
    if node.args.kwarg:
        args.append(node.args.kwarg.arg)
    body = list(_own_body_nodes(node))
    returns = any(isinstance(n, ast.Return) and n.value is not None for n in body)
    yields = any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in body)
    raises = any(isinstance(n, ast.Raise) and n.exc is not None for n in body)
    needs = {"Args:": bool(args), "Returns:": returns and not yields, "Yields:": yields, "Raises:": raises}
    return [f"{qualname}: no {section}" for section, needed in needs.items() if needed and section not in doc]


def _public_objects(module_name: str):
    module = importlib.import_module(module_name)
    for name in getattr(module, "__all__", []):
        obj = getattr(module, name)
        if getattr(obj, "__module__", None) != module_name:
            continue  # a re-export: checked where it is defined
        if inspect.isfunction(obj):
            yield f"{module_name}.{name}", obj
        elif inspect.isclass(obj):
            yield f"{module_name}.{name}", obj
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if inspect.isfunction(member) or isinstance(member, property):
                    yield f"{module_name}.{name}.{attr}", member


@pytest.mark.parametrize("module_name", _modules())
def test_public_api_has_timm_style_docstrings(module_name):
    problems = []
    for qualname, obj in _public_objects(module_name):
        if inspect.isclass(obj):
            if not obj.__doc__ or obj.__doc__.startswith(obj.__name__ + "("):  # a dataclass's generated one
                problems.append(f"{qualname}: no docstring")
            continue
        problems += _problems(obj, qualname)
    assert not problems, "\n".join(problems)


def test_the_check_sees_a_missing_section():
    def documented(x):
        """Double it.

        Args:
            x: a number.
        """
        if x is None:
            raise ValueError("x")
        return 2 * x

    assert _problems(documented, "documented") == ["documented: no Returns:", "documented: no Raises:"]
