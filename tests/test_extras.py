"""Optional dependencies come from one table (``pixelis_ros.extras``, read by setup.py): the runtime
extras stay slim, and a backend whose library is missing names the extra to install."""

from __future__ import annotations

import subprocess
import sys

from pixelis_ros.extras import EXTRAS, MissingDependency, install_hint, require

HEAVY = ("torch", "torchvision", "peft", "trl", "accelerate")


def names(extra: str) -> set[str]:
    return {req.split("=")[0].split(">")[0].split("<")[0] for req in EXTRAS[extra]}


def test_robot_extras_carry_no_training_stack():
    for extra in ("onnx", "ocr", "dds", "sim"):
        assert not names(extra) & set(HEAVY), extra
    assert {"onnxruntime", "transformers"} <= names("onnx")
    assert {"torch", "transformers", "peft"} <= names("torch")
    assert names("torch") <= names("training")  # a training workstation serves too


def test_setup_reads_the_same_table():
    import runpy
    from pathlib import Path

    setup_py = Path(__file__).resolve().parents[1] / "setup.py"
    out = subprocess.run([sys.executable, str(setup_py), "--version"], capture_output=True, text=True,
                         cwd=setup_py.parent, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert runpy.run_path(str(setup_py.parent / "pixelis_ros" / "extras.py"))["EXTRAS"] == EXTRAS


def test_missing_library_names_its_extra():
    assert install_hint("rapidocr") == "pip install 'pixelis_ros[ocr]'"
    assert install_hint("onnxruntime.capi") == "pip install 'pixelis_ros[onnx]'"
    try:
        require("pixelis_no_such_library", "the frobnicator")
    except MissingDependency as e:
        assert "the frobnicator needs pixelis_no_such_library" in str(e)
    else:
        raise AssertionError("require did not raise")


def test_torch_backend_without_torch_says_which_extra(tiny_models):
    # a robot that installed only the onnx extra: torch cannot be imported
    code = ("import sys; sys.modules['torch'] = None\n"
            "from pixelis_ros.policy.registry import load_policy\n"
            "from pixelis_ros.extras import MissingDependency\n"
            "try:\n"
            f"    load_policy('torch', {str(tiny_models['qwen2_5_vl'])!r})\n"
            "except MissingDependency as e:\n"
            "    print('MISSING', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "MISSING the torch backend needs torch" in out.stdout
    assert "pip install 'pixelis_ros[torch]'" in out.stdout
