"""Size measures of a package, as issue tracking uses them: lines, long functions, branches.

Usage: ``python tools/code_metrics.py [opero]``. Branches count ``if``/``for``/``while``/
``try``/``except``/``with`` statements, conditional expressions, comprehension ``if``s and
each extra operand of a boolean operator, in one function (nested functions apart).
"""

from __future__ import annotations

import ast
import pathlib
import re
import sys

_BRANCHES = (
    ast.If, ast.For, ast.AsyncFor, ast.While, ast.Try, ast.ExceptHandler, ast.With, ast.AsyncWith, ast.IfExp,
)  # fmt: skip


def _branches(func: ast.AST) -> int:
    count = 0
    stack = list(ast.iter_child_nodes(func))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, _BRANCHES):
            count += 1
        elif isinstance(node, ast.BoolOp):
            count += len(node.values) - 1
        elif isinstance(node, ast.comprehension):
            count += len(node.ifs)
        stack.extend(ast.iter_child_nodes(node))
    return count


def measure(root: pathlib.Path) -> dict[str, object]:
    """Measure every ``.py`` file below ``root``."""
    lines = anys = 0
    funcs: list[tuple[int, int, str]] = []
    classes: list[tuple[int, str]] = []
    modules: list[tuple[int, str]] = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        n = len(text.splitlines())
        lines += n
        modules.append((n, str(path)))
        anys += len(re.findall(r"\bAny\b", text))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                funcs.append((size, _branches(node), f"{path}:{node.lineno} {node.name}"))
            elif isinstance(node, ast.ClassDef):
                classes.append(((node.end_lineno or node.lineno) - node.lineno + 1, f"{path}:{node.name}"))
    return {
        "lines": lines,
        "functions over 60 lines": sum(s > 60 for s, _, _ in funcs),
        "functions over 50 lines": sum(s > 50 for s, _, _ in funcs),
        "functions over 40 lines": sum(s > 40 for s, _, _ in funcs),
        "functions over 25 branches": sum(b > 25 for _, b, _ in funcs),
        "most branches": max(funcs, key=lambda f: f[1])[1:],
        "longest function": max(funcs)[::2],
        "largest class": max(classes),
        "largest module": max(modules),
        "Any per 1,000 lines": round(1000 * anys / lines, 1),
    }


if __name__ == "__main__":
    for key, value in measure(pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "opero")).items():
        print(f"{key:28} {value}")
