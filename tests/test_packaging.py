"""One import package: a wheel installs only ``nutshell``, and nutshell works from a folder that has its
own ``backends/``, ``spec.py`` and ``conformance/`` (the folder a backend author works in)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERIC = ("backends", "spec", "conformance")
SOURCE_IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "reports", "*.egg-info", "__pycache__",
                                       ".pytest_cache", ".ruff_cache", ".hypothesis", ".tox")
# What ``import nutshell`` must not load: the backends' libraries, and the registry itself until it is used.
HEAVY = ("torch", "onnx", "onnxruntime", "tensorflow", "cupy")
CONV = ("import numpy as np, nutshell\n"
        "x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)\n"
        "y = nutshell.load('torch').run('conv2d', {'x': x, 'w': np.ones((1, 1, 3, 3), np.float32)})['y']\n"
        "assert y.shape == (1, 1, 3, 3) and y[0, 0, 0, 0] == 54.0, y\n")


def _run(argv: list[str], cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _wheel(tmp: Path) -> Path:
    """A wheel built from a copy of the working tree (pip builds in the tree, so not in the repository's)."""
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=SOURCE_IGNORE)
    r = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
              str(src)], cwd=tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    return next((tmp / "dist").glob("nutshell-*.whl"))


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> tuple[Path, Path]:
    """(the wheel, the python of a new virtual environment holding only that wheel). The libraries nutshell
    needs (numpy, torch, …) come from this environment's site-packages through a plain path entry, which
    does not run its .pth files, so the editable install of the repository is not seen there."""
    tmp = tmp_path_factory.mktemp("wheel")
    whl = _wheel(tmp)
    venv = tmp / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp).returncode == 0
    py = venv / "bin" / "python"
    r = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", str(whl)], cwd=tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp).stdout.strip())
    (site / "zz_dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return whl, py


def test_the_wheel_holds_one_top_level_package(fresh_venv):
    whl, _ = fresh_venv
    with zipfile.ZipFile(whl) as z:
        tops = {name.split("/")[0] for name in z.namelist()}
        names = set(z.namelist())
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert len(dist_info) == 1 and tops - dist_info == {"nutshell"}, tops
    assert {"nutshell/spec/concepts.yaml", "nutshell/spec/schema.json", "nutshell/conformance/spec.nutshell",
            "nutshell/backends/torch_impl/__init__.py", "nutshell/conformance/results.schema.json",
            "nutshell/conformance/templates/report.html.j2", "nutshell/conformance/templates/report.css"} <= names


def test_in_a_fresh_venv_only_nutshell_imports(fresh_venv, tmp_path):
    _, py = fresh_venv
    for name in GENERIC:
        r = _run([str(py), "-c", f"import {name}"], cwd=tmp_path)
        assert r.returncode != 0 and f"No module named '{name}'" in r.stderr, (name, r.stderr)
    r = _run([str(py), "-c", CONV + "import nutshell.spec as s; print(nutshell.__file__, s.__file__)"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert all(str(py.parents[1]) in path for path in r.stdout.split()), r.stdout


def _users_folder(tmp: Path) -> Path:
    """A backend author's repository: their own backends/, spec.py and conformance/, and a test of theirs."""
    (tmp / "backends").mkdir()
    (tmp / "backends" / "__init__.py").write_text("MINE = True\n")
    (tmp / "conformance").mkdir()
    (tmp / "conformance" / "__init__.py").write_text("MINE = True\n")
    (tmp / "spec.py").write_text("MINE = True\n")
    (tmp / "test_mine.py").write_text(
        "import backends, conformance, spec\n\n\n"
        "def test_nutshell_beside_my_modules():\n"
        + "".join(f"    {line}\n" for line in CONV.splitlines())
        + "    assert backends.MINE and conformance.MINE and spec.MINE\n")
    return tmp


def _nutshell_bin() -> str:
    return str(Path(sys.executable).with_name("nutshell"))


def test_a_folder_with_its_own_backends_spec_and_conformance(tmp_path):
    """The folder's modules shadow any top-level name nutshell might use; nutshell must not use one."""
    folder = _users_folder(tmp_path)
    env = dict(os.environ, PYTHONPATH="")
    r = _run([sys.executable, "-c", CONV], cwd=folder, env=env)
    assert r.returncode == 0, r.stderr
    r = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_mine.py"], cwd=folder, env=env)
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr
    for command in ([sys.executable, "-m", "nutshell.cli"], [_nutshell_bin()]):
        r = _run([*command, "list", "-b", "torch"], cwd=folder, env=env)
        assert r.returncode == 0 and "conv2d" in r.stdout, r.stdout + r.stderr
    r = _run([sys.executable, "-m", "nutshell.cli", "run", "-b", "torch", "-k", "relu and float32 and not vjp"],
             cwd=folder, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "torch" in r.stdout and (folder / "reports" / "results.json").is_file()


def test_no_module_is_imported_under_a_second_name(tmp_path):
    """A conformance run from the repository root imports nutshell's folders only by their nutshell.* names:
    pytest would otherwise import conformance/__init__.py as ``conformance`` and put the root on sys.path."""
    probe = tmp_path / "probe.py"
    probe.write_text("import sys\n\n\ndef pytest_sessionfinish(session):\n"
                     f"    bad = sorted(m for m in sys.modules if m.split('.')[0] in {GENERIC!r})\n"
                     f"    open({str(tmp_path / 'seen.txt')!r}, 'w').write(' '.join(bad))\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    r = _run([sys.executable, "-m", "pytest", "conformance", "-p", "probe", "-p", "no:cacheprovider", "-q",
              "--backend", "torch", "-k", "relu and grid and float32 and not vjp", "--results",
              str(tmp_path / "r.json")], cwd=ROOT, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "seen.txt").read_text() == ""
    for name in GENERIC:
        r = _run([sys.executable, "-c", f"import {name}"], cwd=ROOT)
        assert r.returncode != 0 and "nutshell installs one import package" in r.stderr, r.stderr


def test_import_nutshell_is_light(fresh_venv, tmp_path):
    """``import nutshell`` loads no backend library and not the registry; the error classes come with it, and
    ``nutshell.names()`` and ``nutshell.Backend`` load the registry (nutshell.backends, nutshell.spec) but still
    no backend library."""
    _, py = fresh_venv
    probe = ("import sys\n"
             "def loaded(names):\n"
             "    return sorted(n for n in names if n in sys.modules)\n"
             "import nutshell\n"
             f"assert not loaded({(*HEAVY, 'nutshell.backends')!r}), loaded({(*HEAVY, 'nutshell.backends')!r})\n"
             "from nutshell import ShapeError\n"
             "assert issubclass(ShapeError, nutshell.NutshellError) and ShapeError is nutshell.errors.ShapeError\n"
             f"assert not loaded({(*HEAVY, 'nutshell.backends')!r}), loaded({(*HEAVY, 'nutshell.backends')!r})\n"
             "assert {'torch', 'onnx', 'cupy'} <= set(nutshell.names()), nutshell.names()\n"
             "assert nutshell.Backend.__module__ == 'nutshell.backends.base', nutshell.Backend\n"
             f"assert not loaded({HEAVY!r}), loaded({HEAVY!r})\n")
    r = _run([str(py), "-c", probe], cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_the_suite_runs_from_a_checkout_with_nutshell_installed_as_a_wheel(fresh_venv, tmp_path):
    """tox's case: nutshell installed as a wheel (not editable) and ``pytest conformance --backend torch`` run
    from the checkout. The checkout's conformance/ is not the package the plugin came from, yet it must be
    collected as a plain folder: imported as ``conformance``, its guard raises at collection."""
    whl, py = fresh_venv
    checkout = whl.parents[1] / "src"  # the copy of the working tree the wheel was built from
    # like the ``pytest`` script tox runs: sys.path starts at the script's folder, not at the checkout, whose
    # nutshell/ (without spec/, backends/, conformance/ beside it) would shadow the installed package
    script = tmp_path / "pytest_script.py"
    script.write_text("import sys\n\nimport pytest\n\nsys.exit(pytest.main())\n")
    probe = tmp_path / "probe.py"
    probe.write_text("import sys\n\n\ndef pytest_sessionfinish(session):\n"
                     "    import nutshell.conformance.plugin as plugin\n"
                     f"    bad = sorted(m for m in sys.modules if m.split('.')[0] in {GENERIC!r})\n"
                     f"    open({str(tmp_path / 'seen.txt')!r}, 'w').write(plugin.__file__ + '\\n' + ' '.join(bad))\n")
    r = _run([str(py), str(script), "conformance", "-p", "probe", "-p", "no:cacheprovider", "-q", "--backend", "torch",
              "-k", "relu and grid and float32 and not vjp", "--results", str(tmp_path / "r.json")],
             cwd=checkout, env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert r.returncode == 0 and "2 passed" in r.stdout, r.stdout + r.stderr
    plugin_file, bad = (tmp_path / "seen.txt").read_text().split("\n")
    assert plugin_file.startswith(str(py.parents[1])) and bad == "", (plugin_file, bad)
