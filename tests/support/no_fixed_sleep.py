"""Lint (`make lint`): no test sleeps a fixed time and then asserts; it waits for a condition with a deadline.

A `sleep(...)` call is flagged when it is not inside a loop (a loop that sleeps is polling something)
and an `assert` follows it in the same function. The programs tests run in a child process are modules
under tests/support/ (programs/, dags/, ...), checked like any file; Python kept in an upper-case string
constant (a fragment some test still writes into a file) is checked too. A sleep that
truly must stay (none today) is allowed by a `# fixed-sleep-ok: <why>` comment on its line.

    python tests/support/no_fixed_sleep.py [paths...]   (default: tests/)
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ALLOW = "fixed-sleep-ok:"
LOOPS = (ast.While, ast.For, ast.AsyncFor)
FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _is_sleep(node: ast.AST) -> bool:
    call = node.value if isinstance(node, ast.Await) else node
    if not isinstance(call, ast.Call):
        return False
    func = call.func
    return (isinstance(func, ast.Attribute) and func.attr == "sleep") or (isinstance(func, ast.Name)
                                                                         and func.id == "sleep")


def _fixed_sleeps(function: ast.AST) -> Iterator[ast.AST]:
    """Sleep calls of `function`'s own body (not nested functions) that no loop encloses."""
    def walk(node: ast.AST, in_loop: bool) -> Iterator[ast.AST]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (*FUNCTIONS, ast.Lambda)):
                continue
            if _is_sleep(child) and not in_loop:
                yield child
            yield from walk(child, in_loop or isinstance(child, LOOPS))
    yield from walk(function, False)


def _asserts_after(function: ast.AST, line: int) -> bool:
    return any(isinstance(node, ast.Assert) and node.lineno > line for node in ast.walk(function))


def check_source(source: str, where: str, line_offset: int = 0) -> list[str]:
    tree = ast.parse(source)
    lines = source.splitlines()
    problems = []
    for function in (n for n in ast.walk(tree) if isinstance(n, FUNCTIONS)):
        for sleep in _fixed_sleeps(function):
            if ALLOW in lines[sleep.lineno - 1] or not _asserts_after(function, sleep.lineno):
                continue
            problems.append(f"{where}:{sleep.lineno + line_offset}: {function.name}() sleeps a fixed time, then "
                            "asserts; wait for the condition with a deadline instead (tests/support/airflow_client."
                            f"wait_for), or mark the line '# {ALLOW} <why>'")
    problems += _embedded_scripts(tree, where)
    return problems


def _embedded_scripts(tree: ast.Module, where: str) -> list[str]:
    problems = []
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)):
            continue
        if not all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets):
            continue
        try:
            problems += check_source(node.value.value, where, line_offset=node.lineno - 1)
        except SyntaxError:
            continue  # not a Python script (a YAML or DAG template with placeholders)
    return problems


def main(paths: list[str]) -> int:
    files = [f for p in paths or ["tests"] for f in (sorted(Path(p).rglob("*.py")) if Path(p).is_dir() else [Path(p)])]
    problems = [problem for path in files for problem in check_source(path.read_text(), str(path))]
    print("\n".join(problems) or f"no fixed sleeps before assertions in {len(files)} test files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
