"""Every hint hostctl prints names options and commands that exist where the user will type them.

Hints come from the source: the hint argument of the error classes (hostctl/errors.py), `hint=` keywords,
`*_HINT` constants and `hint` variables, doctor's fix column and reporter warnings. Each `hostctl VERB ...` in a
hint must name a verb whose options include every `--option` written after it; every other `--option` must exist
on each command that can show that module's hints (COMMANDS below). Options of other programs (docker, pip, ...)
in backticks or parentheses are not ours and are skipped. No hint names the repository's scripts/ or tests/.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import typer.main

from hostctl.cli import app

ROOT = Path(__file__).resolve().parents[2]
ERRORS = {"HostctlError": 1, "UsageError": 1, "EnvironmentProblem": 1, "RunFailed": 1, "InputError": 2}
ALL = ("quantize", "prepare", "evaluate", "compile", "inspect", "demo", "doctor", "clean", "diff")
WITH_OUTPUT_DIR = ("quantize", "prepare", "evaluate", "compile", "inspect", "demo")
# Which commands can show a module's hints: where the user acts on them. A tuple: each option must exist on every
# one of them; a frozenset: on at least one (a module that holds the hints of several commands).
COMMANDS = {
    "hostctl/cli/__init__.py": (),  # only `{command} --help`, checked by its own test
    "hostctl/cli/common.py": ("quantize", "inspect"),
    "hostctl/cli/quantize.py": ("quantize",),
    "hostctl/pipeline.py": ("quantize",),
    "hostctl/validate.py": ("quantize",),
    "hostctl/options.py": ("quantize",),
    "hostctl/config.py": ("quantize", "compile"),
    "hostctl/runtime/__init__.py": ("quantize", "demo"),
    "hostctl/runtime/local.py": ("quantize",),
    "hostctl/runtime/docker/engine.py": ("quantize", "compile", "demo", "doctor", "clean"),
    "hostctl/runtime/docker/images.py": ("quantize", "compile", "demo"),
    "hostctl/runtime/docker/container.py": ("quantize",),
    "hostctl/runtime/docker/requirements.py": ("quantize",),
    "hostctl/runtime/docker/runtime.py": ("quantize", "compile"),
    "hostctl/runtime/docker/housekeeping.py": ("doctor", "clean"),
    "hostctl/staging.py": WITH_OUTPUT_DIR,
    "hostctl/staged_run.py": WITH_OUTPUT_DIR,
    "hostctl/errors.py": WITH_OUTPUT_DIR,
    "hostctl/compile.py": ("compile",),
    "hostctl/cli/compile.py": ("compile",),
    "hostctl/prepare.py": ("prepare",),
    "hostctl/cli/prepare.py": ("prepare",),
    "hostctl/evaluate.py": ("evaluate",),
    "hostctl/cli/evaluate.py": ("evaluate",),
    "hostctl/report.py": ("quantize", "evaluate"),
    "hostctl/layers.py": ("quantize",),  # evaluate shows read_layers' message alone, as a warning
    "hostctl/demo.py": ("demo",),
    "hostctl/cli/demo.py": ("demo",),
    "hostctl/doctor.py": ("doctor",),
    "hostctl/cli/doctor.py": ("doctor",),
    "hostctl/cli/clean.py": ("clean",),
    "hostctl/quantinfo_diff.py": ("diff",),
    "hostctl/cli/diff.py": ("diff",),
    # inspect.py's own hints, and those of the inspection that quantize --target runs first (--dpu-strict).
    "hostctl/inspect.py": frozenset({"inspect", "quantize"}),
    "hostctl/cli/inspect.py": ("inspect",),
}
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
VERB = re.compile(r"\bhostctl ([a-z]+)((?: +[^ ;,)`'\"]+)*)")
FOREIGN = re.compile(r"`(?!hostctl )[^`]*`|\((?:sudo |docker |pip |apt-get |python)[^)]*\)")


def _text(node: ast.AST) -> str | None:
    """A string literal, or an f-string's literal parts with {} for each value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        return None if left is None and right is None else (left or "") + (right or "")
    if isinstance(node, ast.IfExp):
        parts = [_text(node.body), _text(node.orelse)]
        return " | ".join(p for p in parts if p) or None
    return None


def _strings(node: ast.AST) -> list[str]:
    found = _text(node)
    if found is not None:
        return [found]
    return [s for child in ast.iter_child_nodes(node) for s in _strings(child)]


def _name(node: ast.AST) -> str:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def hints_in(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            name = _name(node.func)
            carriers = [kw.value for kw in node.keywords if kw.arg in ("hint", "fix")]
            if name in ERRORS and len(node.args) > ERRORS[name]:
                carriers.append(node.args[ERRORS[name]])
            elif name == "Finding" and len(node.args) > 3:
                carriers.append(node.args[3])
            elif name in ("warn", "error") and isinstance(node.func, ast.Attribute):
                carriers += node.args
            found += [(node.lineno, s) for carrier in carriers for s in _strings(carrier)]
        elif isinstance(node, ast.Assign):
            targets = [_name(t) for t in node.targets]
            if any(t == "hint" or t.endswith("_HINT") for t in targets):
                found += [(node.lineno, s) for s in _strings(node.value)]
    return found


def options_of() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    return {name: {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | {"--help"}
            for name, command in group.commands.items()}


def problems_in(path: Path, text: str, options: dict[str, set[str]]) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    problems = []
    for match in VERB.finditer(text):
        verb, rest = match.groups()
        if verb not in options:
            if f"`{match.group(0)}" in text:  # prose ("hostctl never writes ...") is not a command
                problems.append(f"`hostctl {verb}` is not a command")
            continue
        problems += [f"`hostctl {verb}` has no {opt}" for opt in OPTION.findall(rest) if opt not in options[verb]]
    # A user who installed hostctl has no clone: the repository's scripts and tests are not theirs to run.
    problems += [f"names {where}, which only a clone has" for where in re.findall(r"\b(?:scripts|tests)/\S+", text)]
    bare = FOREIGN.sub("", VERB.sub("", text))
    for opt in OPTION.findall(bare):
        if rel not in COMMANDS:
            problems.append(f"names {opt}, but {rel} is not in COMMANDS: say which commands show its hints")
            continue
        commands = COMMANDS[rel]
        if isinstance(commands, frozenset):
            if not any(opt in options[command] for command in commands):
                problems.append(f"none of {', '.join(sorted(commands))} has {opt}")
            continue
        problems += [f"{command} has no {opt}" for command in commands if opt not in options[command]]
    return problems


def test_every_hint_names_options_that_exist():
    options = options_of()
    problems = []
    for path in sorted((ROOT / "hostctl").rglob("*.py")):
        for line, text in hints_in(path):
            problems += [f"{path.relative_to(ROOT)}:{line}: {p} ({text!r})"
                         for p in problems_in(path, text, options)]
    assert not problems, "\n".join(problems)


def test_the_modules_named_exist():
    assert all((ROOT / path).is_file() for path in COMMANDS)
    assert set(options_of()) == set(ALL)


@pytest.mark.parametrize(("text", "expected"), [
    ("Or run with --runtime local.", ["compile has no --runtime"]),
    ("Run `hostctl compile --runtime local`.", ["`hostctl compile` has no --runtime"]),
    ("Check `docker login` (docker run --privileged --rm tonistiigi/binfmt --install all).", []),
    ("Run `hostctl clean --output-dir DIR`.", []),
    ("`hostctl frobnicate`", ["`hostctl frobnicate` is not a command"]),
    ("Start Docker (scripts/docker-engine.sh start).", ["names scripts/docker-engine.sh, which only a clone has"]),
])
def test_the_checker_itself(text, expected):
    assert problems_in(ROOT / "hostctl/compile.py", text, options_of()) == expected


def test_an_engine_problem_offers_the_local_runtime_only_where_there_is_one(tmp_path, unet_inputs, capsys,
                                                                            monkeypatch):
    """quantize has --runtime local; compile, whose compiler lives in the image, does not."""
    from helpers import hostctl_inprocess, tiny_args

    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    args = tiny_args(unet_inputs, tmp_path / "out", "--quantizer", "portable")
    args[args.index("--runtime") + 1] = "docker"
    code, _, err = hostctl_inprocess(args, capsys)
    assert code == 3, err
    assert "sudo systemctl start docker" in err and "--runtime local" in err and "scripts/" not in err
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "Unet_int.xmodel").write_bytes(b"not really")
    code, _, err = hostctl_inprocess(["compile", "--input-dir", str(tmp_path / "results"), "--output-dir",
                                      str(tmp_path / "compiled")], capsys)
    assert code == 3, err
    assert "sudo systemctl start docker" in err and "--runtime" not in err and "scripts/" not in err
