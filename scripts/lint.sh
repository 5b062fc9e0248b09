#!/usr/bin/env bash
# Static checks: ruff on everything; container_payload must stay Python 3.8 and stdlib + torch/numpy/h5py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

"$PYTHON" -m ruff check hostctl container_payload tests scripts
# vermin reports the minimum version each file needs; fail on anything newer than 3.8.
"$PYTHON" -c "import sys, vermin; sys.exit(vermin.main())" \
    --no-tips --violations --eval-annotations -t=3.8- container_payload tests/fake_nndct
# The payload runs in the Vitis AI env: only the standard library, torch, numpy and h5py are there (and the
# image's own pytorch_nndct and xir, imported where present).
"$PYTHON" - <<'PY'
import ast, pathlib, sys
allowed = {"torch", "numpy", "h5py", "container_payload"} | set(sys.stdlib_module_names)
bad = []
for path in pathlib.Path("container_payload").rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
        bad += [f"{path}:{node.lineno}: imports {n}" for n in names
                if n.split(".")[0] not in allowed and n.split(".")[0] not in ("pytorch_nndct", "xir")]
if bad:
    sys.exit("container_payload may import only the standard library, torch, numpy and h5py:\n" + "\n".join(bad))
PY
# The outside world is touched in few places: docker only in hostctl/runtime/docker/, rich only in hostctl/ui.py,
# typer only in hostctl/cli/.
"$PYTHON" - <<'PY'
import ast, pathlib, sys
owners = {"docker": "hostctl/runtime/docker/", "rich": "hostctl/ui.py", "typer": "hostctl/cli/"}
bad = []
for path in pathlib.Path("hostctl").rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
        for name in names:
            owner = owners.get(name.split(".")[0])
            if owner and not path.as_posix().startswith(owner):
                bad.append(f"{path}:{node.lineno}: imports {name}, which only {owner} may import")
if bad:
    sys.exit("\n".join(bad))
PY
echo "lint: ok"
