"""What the `pixelis` command writes where: stdout carries the result only, stderr only what we
print ourselves (no library warnings, no third-party bars), progress bars only on a terminal's
stderr, and a reader that goes away (``| head -c 10``) ends the command quietly. Real
subprocesses throughout; a pseudo-terminal stands in for a person watching."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import shlex
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pixelis_ros.cli import EXIT_BROKEN_PIPE

COMMAND = [sys.executable, "-m", "pixelis_ros.cli"]
BAR_MARKS = ("\r", "it/s", "episode/s", "frame/s", "%|")
"""What tqdm output contains and a result never does."""


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=timeout)


def run_on_terminal(*args: str, timeout: float = 300) -> tuple[int, str, str]:
    """Run with stderr on a pseudo-terminal (100 columns) and stdout on a pipe: (status, stdout, terminal)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([*COMMAND, *args], stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen, end = [], time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            if select.select([master], [], [], 1.0)[0]:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                seen.append(data)
            elif proc.poll() is not None:
                break
        out = proc.communicate(timeout=max(1.0, end - time.monotonic()))[0]
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out.decode(), b"".join(seen).decode(errors="replace")


def no_bar(text: str) -> bool:
    return not any(mark in text for mark in BAR_MARKS)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("out") / "small.png"
    img = np.full((120, 160, 3), 235, np.uint8)
    cv2.putText(img, "EXIT 4", (10, 70), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2)
    cv2.imwrite(str(path), img)
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    video = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(12):
        frame = np.full((240, 320, 3), 240, np.uint8)
        cv2.putText(frame, str(i), (100, 140), cv2.FONT_HERSHEY_SIMPLEX, 2.5, (0, 0, 0), 5)
        video.write(frame)
    video.release()
    return path


# --- a reader that went away ------------------------------------------------------------------------

@pytest.mark.parametrize("json_flag", [["--json"], []], ids=["json", "human"])
def test_closed_stdout_ends_quietly_with_status_141(image, json_flag):
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte, as after `| head -c 10`
    try:
        proc = subprocess.run([*COMMAND, "tools", "zoom", "--image", str(image), "--bbox", "10,10,90,90", *json_flag],
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (EXIT_BROKEN_PIPE, "")


def test_head_of_a_json_result_has_no_traceback(image):
    command = shlex.join([*COMMAND, "tools", "zoom", "--image", str(image), "--bbox", "10,10,90,90", "--json"])
    shell = subprocess.run(command + " | head -c 10", shell=True, capture_output=True, text=True, timeout=120)
    assert shell.returncode == 0 and shell.stdout == '{"bbox_2d"' and "Traceback" not in shell.stderr


# --- nothing on stderr but ours ---------------------------------------------------------------------

def test_lora_adapters_wrap_and_load_without_library_warnings(tmp_path, tiny_models):
    """peft reads a deprecated transformers property when it wraps a model (test-time RL, LoRA
    SFT, ``--adapter``): the FutureWarning it triggers must not reach the user. (A torch run of
    the bundled model writing nothing to stderr is checked in test_bundled_model.py.)"""
    pytest.importorskip("peft")
    model, adapter = tiny_models["qwen3_vl"], tmp_path / "adapter"
    code = (f"from pixelis_ros.policy.hf import load_hf_policy\n"
            f"policy = load_hf_policy({str(model)!r})\npolicy.add_adapter()\npolicy.save_adapter({str(adapter)!r})\n"
            f"load_hf_policy({str(model)!r}, adapter={str(adapter)!r})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == ""


def test_model_build_refuses_a_non_empty_out_without_force(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "model"
    out.mkdir()
    (out / "adapter_config.json").write_text("{}")  # left from something else: it would change what loads
    build = ("model", "build", "--arch", "qwen3_vl", "--preset", "tiny", "--out", str(out))
    refused = run(*build, "--json")
    assert refused.returncode == 2 and refused.stderr == ""
    assert "--force" in json.loads(refused.stdout)["error"] and (out / "adapter_config.json").is_file()
    human = run(*build)
    assert human.returncode == 2 and human.stdout == ""
    assert human.stderr.startswith("pixelis: error: --out ") and "not empty" in human.stderr
    forced = run(*build, "--force", "--json")
    assert forced.returncode == 0 and forced.stderr == ""  # no "Loading weights" bar from the load check either
    assert json.loads(forced.stdout)["out"] == str(out)
    assert not (out / "adapter_config.json").exists() and (out / "config.json").is_file()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert "is a file" in json.loads(run("model", "build", "--arch", "qwen3_vl", "--preset", "tiny", "--out",
                                         str(a_file), "--json").stdout)["error"]


def test_empty_or_missing_out_folder_is_fine(tmp_path):
    from pixelis_ros.cli.model import clear_out

    (tmp_path / "m").mkdir()
    clear_out(tmp_path / "m", force=False)
    clear_out(tmp_path / "new", force=False)
    assert (tmp_path / "m").is_dir() and not (tmp_path / "new").exists()


# --- progress bars ----------------------------------------------------------------------------------

def test_json_run_has_no_bar_on_stdout_or_stderr(tmp_path):
    proc = run("sim", "export", "--suite", "smoke", "--episodes", "2", "--workers", "1", "--out", str(tmp_path),
               "--json")
    assert proc.returncode == 0 and proc.stderr == ""
    assert len(proc.stdout.splitlines()) == 1 and json.loads(proc.stdout)["episodes"] == 2


def test_bar_shows_on_a_terminal_stderr_only(tmp_path):
    status, out, terminal = run_on_terminal("sim", "export", "--suite", "smoke", "--episodes", "2", "--workers", "1",
                                            "--out", str(tmp_path))
    assert status == 0 and "export smoke" in terminal and "2/2" in terminal
    assert no_bar(out) and "episodes: 2" in out


def test_json_or_quiet_turns_the_bar_off_even_on_a_terminal(tmp_path, clip):
    status, out, terminal = run_on_terminal("sim", "export", "--suite", "smoke", "--episodes", "2", "--workers", "1",
                                            "--out", str(tmp_path), "--json")
    assert (status, terminal) == (0, "") and json.loads(out)["episodes"] == 2
    scan = ("tools", "temporal", "--video", str(clip), "--predicate", "text", "--value", "7")
    status, out, terminal = run_on_terminal(*scan)
    assert status == 0 and "temporal: reading frames" in terminal and "12/12" in terminal and no_bar(out)
    status, out, terminal = run_on_terminal(*scan, "--quiet")
    assert (status, terminal) == (0, "") and "spans: [[0.7, 0.8]]" in out


def test_a_forced_bar_goes_to_stderr():
    code = "from pixelis_ros.progress import progress\nfor _ in progress(range(3), desc='forced', enabled=True): pass"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout == ""
    assert "forced" in proc.stderr and "3/3" in proc.stderr
