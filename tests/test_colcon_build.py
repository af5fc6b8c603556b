"""colcon builds the package as ROS users build it (DESIGN §3, §6): ``colcon build`` and
``colcon build --symlink-install`` in a throwaway workspace holding a copy of the package, then
the installed ``pixelis`` script is run after ``source install/setup.bash``.

The venv also holds an editable install of this repository, so a broken workspace install could
quietly fall back to it; the tests therefore check where ``pixelis_ros`` and its metadata are
imported from, and that a symlink install (and only it) sees a module added to ``src`` later.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "pixelis_ros"
VENV_BIN = Path(sys.executable).parent
COLCON = VENV_BIN / "colcon"
PYDIR = f"python{sys.version_info.major}.{sys.version_info.minor}"
SUBCOMMANDS = ("tools", "run", "demo", "bench")

pytestmark = [
    pytest.mark.skipif(not COLCON.is_file(), reason=f"colcon is not installed in this venv ({COLCON} absent); "
                       "install the 'dev' extra (colcon-common-extensions, colcon-ros)"),
    pytest.mark.skipif(importlib.util.find_spec("colcon_ros") is None,
                       reason="colcon-ros is not installed in this venv: colcon would not treat the package as ament_python"),
]

MODES = {"copy": [], "symlink": ["--symlink-install"]}


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLCON_")}
    env.pop("PYTHONPATH", None)  # only what install/setup.bash puts there
    env["PYTHONNOUSERSITE"] = "1"
    env["COLCON_HOME"] = str(tmp_path / "colcon_home")  # no user defaults.yaml (it could add --symlink-install)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])  # the script's python needs numpy/cv2
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _show(proc: subprocess.CompletedProcess) -> str:
    return f"command: {proc.args}\nexit status: {proc.returncode}\n--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """tmp_path/ws with src/pixelis_ros holding a copy of the package (so nothing is built in the repo)."""
    ws = tmp_path / "ws"
    src = ws / "src" / PACKAGE
    src.mkdir(parents=True)
    for name in ("package.xml", "setup.py", "setup.cfg"):
        shutil.copy2(REPO / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("resource", PACKAGE, "launch", "config"):
        if (REPO / folder).is_dir():
            shutil.copytree(REPO / folder, src / folder, ignore=ignore)
    return ws


def test_colcon_identifies_ament_python(workspace: Path, tmp_path: Path):
    proc = _run([str(COLCON), "list", "--base-paths", "src"], workspace, _env(tmp_path), timeout=120)
    assert proc.returncode == 0, _show(proc)
    assert f"{PACKAGE}\tsrc/{PACKAGE}\t(ros.ament_python)" in proc.stdout, _show(proc)


@pytest.mark.parametrize("mode", list(MODES))
def test_colcon_build_installs_runnable_package(mode: str, workspace: Path, tmp_path: Path):
    env = _env(tmp_path)
    build = _run([str(COLCON), "build", "--base-paths", "src", *MODES[mode],
                  "--event-handlers", "console_cohesion+", "desktop_notification-", "terminal_title-"], workspace, env)
    assert build.returncode == 0, _show(build)

    prefix = workspace / "install" / PACKAGE
    share = prefix / "share" / PACKAGE / "package.xml"
    assert share.is_file(), f"{share} missing\n{_show(build)}"
    assert share.read_text() == (REPO / "package.xml").read_text()
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE
    assert marker.is_file(), f"ament index marker {marker} missing\n{_show(build)}"
    for folder in ("launch", "config"):  # installed beside package.xml, as ROS launch files expect
        for source in sorted(p for p in (REPO / folder).glob("*") if p.is_file()):
            installed = prefix / "share" / PACKAGE / folder / source.name
            assert installed.is_file(), f"{installed} missing\n{_show(build)}"
            assert installed.read_bytes() == source.read_bytes()
    for node in ("agent_node", "sim_node"):  # what `ros2 run pixelis_ros <node>` and the launch files start
        assert (prefix / "lib" / PACKAGE / node).is_file(), f"{node} script missing\n{_show(build)}"
    script = prefix / "lib" / PACKAGE / "pixelis"
    assert script.is_file(), f"console script {script} missing (setup.cfg script_dir/install_scripts)\n{_show(build)}"
    assert os.access(script, os.X_OK), f"{script} is not executable"
    shebang = script.read_text().splitlines()[0]
    assert shebang.startswith("#!"), shebang
    interpreter = shebang[2:].strip()

    # A module added to src after the build: a symlink install sees it, a copying install does not.
    (workspace / "src" / PACKAGE / PACKAGE / "_colcon_probe.py").write_text("VALUE = 'live'\n")
    probe = ("import importlib.metadata as m, importlib.util as u, pixelis_ros;"
             "print('FILE', pixelis_ros.__file__);"
             "print('DIST', m.distribution('pixelis-ros').locate_file(''));"
             "print('PROBE', u.find_spec('pixelis_ros._colcon_probe') is not None)")
    shell = (f"source install/setup.bash && install/{PACKAGE}/lib/{PACKAGE}/pixelis --help"
             f" && echo '--- probe ---' && '{interpreter}' -c \"{probe}\"")
    proc = _run(["bash", "-c", shell], workspace, env, timeout=120)
    assert proc.returncode == 0, _show(proc)
    usage, _, probed = proc.stdout.partition("--- probe ---")
    assert "usage: pixelis" in usage, _show(proc)
    for sub in SUBCOMMANDS:
        assert sub in usage, f"subcommand {sub!r} not in the usage\n{_show(proc)}"
    found = dict(line.split(" ", 1) for line in probed.strip().splitlines())

    site = prefix / "lib" / PYDIR / "site-packages"
    src_pkg = (workspace / "src" / PACKAGE / PACKAGE).resolve()
    imported = Path(found["FILE"])
    dist = Path(found["DIST"])
    if mode == "copy":
        # Real files copied into install/: the source tree is not used at run time.
        assert imported == site / PACKAGE / "__init__.py", _show(proc)
        assert not (site / PACKAGE).is_symlink() and not (site / PACKAGE / "cli" / "__init__.py").is_symlink()
        assert dist == site, f"metadata found outside install/ (the venv's own install?)\n{_show(proc)}"
        assert any(site.glob(f"{PACKAGE}-0.1.0*.egg-info")), sorted(p.name for p in site.iterdir())
        assert found["PROBE"] == "False", f"a copying install must not see later changes to src\n{_show(proc)}"
    else:
        # setuptools develop: site-packages holds only an egg-link to build/pixelis_ros, whose
        # package folder is a symlink to src; the metadata lives in build/ (found through setup.bash).
        build_dir = workspace / "build" / PACKAGE
        assert not (site / PACKAGE).exists(), f"symlink install copied the package into {site}"
        egg_link = site / "pixelis-ros.egg-link"
        assert egg_link.is_file(), f"{egg_link} missing; site-packages holds {sorted(p.name for p in site.iterdir())}"
        assert Path(egg_link.read_text().splitlines()[0]) == build_dir
        assert (build_dir / PACKAGE).is_symlink() and (build_dir / PACKAGE).resolve() == src_pkg
        assert imported == build_dir / PACKAGE / "__init__.py", _show(proc)
        assert imported.resolve() == src_pkg / "__init__.py", _show(proc)
        assert dist == build_dir and (build_dir / f"{PACKAGE}.egg-info").is_dir(), _show(proc)
        assert found["PROBE"] == "True", f"a symlink install must see a module added to src\n{_show(proc)}"
        assert share.is_symlink() and share.resolve() == (workspace / "src" / PACKAGE / "package.xml").resolve()
