"""Fault injection: a new user's first hour, each mistake run as the user runs it, in a process of its own.

Every case asserts the exit status, that the message is one line naming the argument or file (never a
traceback), and, where an earlier run lies in the folder, that its files are byte-identical afterwards (also
after Ctrl-C, sent once the new run has started and before its first checkpoint).

``python -m spikeforge ...`` costs seconds of ``import torch`` per process, too much for some 25 cases on two
cores; so most cases run as ``python -m`` children of a fork server (``runner.py``: torch imported once, each
job forked and run with ``runpy`` as ``-m`` runs it, with its own environment, argv, output files and signals).
A few run as plain ``sys.executable -m`` subprocesses, to cover interpreter start-up too. All start together;
they use the reference neuron kernel and ``--dense`` (no numba compilation), tiny data and small T.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).resolve().with_name("runner.py")
ENV = {**os.environ, "SPIKEFORGE_BACKEND": "reference", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
       "SPIKEFORGE_DEBUG": "", "PYTHONWARNINGS": "ignore"}
# the fork server starts importing torch now, while this process does the same (two cores, half the wait)
_SERVER = subprocess.Popen([PY, str(RUNNER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV,
                           cwd=REPO)

import torch  # noqa: E402

from spikeforge.errors import UserError  # noqa: E402
from spikeforge.training import load_checkpoint, save_checkpoint  # noqa: E402

LIF = "spikeforge.examples.lif_fc_mnist"
SF = "spikeforge"
RUN_ARGS = ["-T", "2", "-b", "16", "-epochs", "1", "--train-limit", "64", "--test-limit", "32", "--dense",
            "--no-progress", "--no-plots"]
RUN_NAME = "T2_b16_adam_lr0.001"
# the interrupted runs train on all 60,000 images: Ctrl-C comes long before the end of their first epoch
LONG_RUN = ["-T", "2", "-b", "16", "-epochs", "3", "--test-limit", "32", "--dense", "--no-progress", "--no-plots"]


# ----------------------------------------------------------------------------------------------- helpers
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class _Job:
    """One forked ``python -m`` run: its pid, output files and exit-status file."""

    def __init__(self, pid: int, paths: dict[str, Path]):
        self.pid, self.paths = pid, paths

    def stdout(self) -> str:
        return self.paths["out"].read_text() if self.paths["out"].exists() else ""

    def done(self) -> bool:
        return self.paths["rc"].exists()

    def result(self, timeout: float = 240) -> subprocess.CompletedProcess:
        deadline = time.monotonic() + timeout
        while not self.done():
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                raise AssertionError(f"job {self.pid} did not finish in {timeout} s:\n{self.stdout()[-2000:]}")
            time.sleep(0.05)
        return subprocess.CompletedProcess([], int(self.paths["rc"].read_text()), self.stdout(),
                                           self.paths["err"].read_text())


class _Runner:
    """The fork server (``runner.py``); :meth:`start` runs ``python -m module argv...`` as a forked child."""

    def __init__(self, folder: Path, process: subprocess.Popen):
        self.folder, self.count, self.lock = folder, 0, threading.Lock()
        self.process, self.ready = process, False

    def start(self, module: str, argv, **options) -> _Job:
        with self.lock:
            if not self.ready:
                assert self.process.stdout.readline().strip() == "ready"
                self.ready = True
            self.count += 1
            paths = {k: self.folder / f"job{self.count}.{k}" for k in ("out", "err", "rc")}
            job = {"module": module, "argv": [str(a) for a in argv], "env": ENV, "cwd": str(REPO),
                   **{k: str(v) for k, v in paths.items()}, **options}
            self.process.stdin.write(json.dumps(job) + "\n")
            self.process.stdin.flush()
            return _Job(int(self.process.stdout.readline()), paths)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)


class _Subprocess:
    """A plain ``sys.executable -m module argv...`` run (interpreter start-up included)."""

    def __init__(self, module: str, argv):
        self.command = [PY, "-m", module, *map(str, argv)]
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        env=ENV, cwd=REPO)

    def result(self, timeout: float = 240):
        out, err = self.process.communicate(timeout=timeout)
        return subprocess.CompletedProcess(self.command, self.process.returncode, out, err)


class _Interrupted:
    """A job that gets SIGINT (Ctrl-C) once ``ready(stdout)`` holds (checked from a thread)."""

    def __init__(self, job: _Job, ready, timeout: float = 240):
        self.job, self.failure = job, None

        def watch():
            deadline = time.monotonic() + timeout
            while not ready(job.stdout()):
                if job.done() or time.monotonic() > deadline:
                    self.failure = f"the run never got ready:\n{job.stdout()[-2000:]}"
                    return
                time.sleep(0.05)
            time.sleep(0.3)  # well inside the first epoch
            os.kill(job.pid, signal.SIGINT)

        self.thread = threading.Thread(target=watch, daemon=True)
        self.thread.start()

    def result(self, timeout: float = 240):
        done = self.job.result(timeout)
        self.thread.join(timeout=5)
        assert self.failure is None, self.failure + done.stderr[-2000:]
        return done


def _one_error_line(done, *names: str, code: int = 2) -> str:
    """The failed command's single error line (asserted: exit status, one line, no traceback, names)."""
    text = done.stdout + done.stderr
    assert done.returncode == code, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, done.stderr
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def cases(root):
    """Every case, started at once: ``cases[name]`` is ``(job, context)``; ``job.result()`` waits for it."""
    runner = _Runner(root, _SERVER)
    finished = runner.start(LIF, RUN_ARGS + ["-out-dir", root / "finished"])  # the run the others start from
    jobs = {  # plain subprocesses (interpreter start-up included)
        "version": (_Subprocess(SF, ["--version"]), None),
        "demo_T0": (_Subprocess("spikeforge.examples.demo", ["-T", "0"]), None),
    }
    readonly = root / "readonly"
    readonly.mkdir()
    readonly.chmod(0o555)
    jobs["readonly"] = (runner.start(LIF, RUN_ARGS + ["-out-dir", readonly / "logs"], read_only_root=True),
                        readonly)

    # files
    good = root / "good.pt"
    torch.save({"w": torch.zeros(1000)}, good)
    data = good.read_bytes()
    (root / "truncated.pt").write_bytes(data[: len(data) // 2])
    (root / "empty.pt").write_bytes(b"")
    (root / "text.pt").write_text("this is not a checkpoint\n")
    torch.save({"model": _Evil(root / "PWNED")}, root / "evil.pt")
    # a training checkpoint of another network (Linear(100, 10) instead of Linear(784, 10))
    state = {"net": {"layer.1.weight": torch.zeros(10, 100)}, "optimizer": {"state": {}, "param_groups": []},
             "epoch": 0, "max_test_acc": 0.5, "rng": {}}
    other = save_checkpoint(state, root / "other_shape" / "checkpoint_latest.pth").parent
    from PIL import Image

    image = root / "image.png"
    Image.new("RGB", (64, 64), (120, 30, 200)).save(image)

    def add(name, module, argv, context=None):
        jobs[name] = (runner.start(module, argv), context)

    # refused before any work
    for name in ("truncated", "empty", "text", "evil"):
        add(f"weights_{name}", SF, ["classify", image, "--weights", root / f"{name}.pt"])
    add("img_size_7", SF, ["classify", image, "--random-weights", "--img-size", "7"])
    add("img_size_0", SF, ["classify", image, "--random-weights", "--img-size", "0"])
    add("device_cuda", SF, ["classify", image, "--random-weights", "--device", "cuda"])
    add("train_limit_negative", LIF, ["--train-limit", "-5", "-out-dir", root / "unused"])
    add("lr_nan", LIF, ["-lr", "nan", "-out-dir", root / "unused"])
    add("device_bogus", LIF, ["-device", "bogus", "-out-dir", root / "unused"])
    add("demo_help", "spikeforge.examples.demo", ["--help"])
    add("debug", SF, ["--debug", "demo", "-T", "0"])
    add("resume_other_shape", LIF, RUN_ARGS + ["-resume", other / "checkpoint_latest.pth"],
        context=(other, _snapshot(other)))

    # the cases that start from the finished run, each on a copy of it
    done = finished.result()
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert load_checkpoint(root / "finished" / RUN_NAME / "checkpoint_latest.pth")["epoch"] == 0

    def copy(name: str) -> tuple[Path, tuple[Path, dict[str, bytes]]]:
        out = root / name
        shutil.copytree(root / "finished", out)
        return out, (out, _snapshot(out / RUN_NAME))

    out, context = copy("interrupt_new")
    jobs["interrupt_new"] = (_Interrupted(runner.start(LIF, LONG_RUN + ["-out-dir", out]),
                                          lambda _, out=out: (out / f"{RUN_NAME}-2" / "checkpoint_latest.pth")
                                          .is_file()), context)
    out, context = copy("interrupt_overwrite")
    jobs["interrupt_overwrite"] = (_Interrupted(runner.start(LIF, LONG_RUN + ["-out-dir", out, "--overwrite"]),
                                                lambda text: "holds files of an earlier run" in text), context)
    out, context = copy("interrupt_resume")
    jobs["interrupt_resume"] = (_Interrupted(runner.start(LIF, LONG_RUN + ["-resume", out / RUN_NAME /
                                                                           "checkpoint_latest.pth"]),
                                             lambda text: "resumed from" in text), context)
    out, context = copy("interrupt_demo")
    demo = ["demo", "--out-dir", out, "-T", "2", "--batch-size", "16", "--test-limit", "32", "--no-progress"]
    jobs["interrupt_demo"] = (_Interrupted(runner.start(SF, demo),
                                           lambda _, out=out: (out / f"{RUN_NAME}-2" / "checkpoint_latest.pth")
                                           .is_file()), context)
    out, context = copy("second_run")
    add("second_run", LIF, RUN_ARGS + ["-out-dir", out], context=context)
    out, context = copy("overwrite_done")
    add("overwrite_done", LIF, RUN_ARGS + ["-out-dir", out, "--overwrite", "--seed", "7"], context=context)
    out, context = copy("demo_resume")
    add("demo_resume", SF, ["demo", "--out-dir", out, "-T", "2", "--batch-size", "16", "--epochs", "1",
                            "--test-limit", "32", "--no-progress", "--resume"], context=context)
    out, context = copy("train_limit_0")
    add("train_limit_0", LIF, ["-T", "2", "-b", "16", "--train-limit", "0", "-out-dir", out], context=context)
    out, context = copy("resume_evil")
    shutil.copy(root / "evil.pt", out / RUN_NAME / "evil.pth")
    add("resume_evil", LIF, RUN_ARGS + ["-resume", out / RUN_NAME / "evil.pth"],
        context=(out, _snapshot(out / RUN_NAME)))
    yield jobs
    for job, _ in jobs.values():
        try:
            job.result(timeout=60)
        except Exception:  # noqa: BLE001 - already reported by its test
            pass
    runner.close()
    readonly.chmod(0o755)


def _result(cases, name):
    job, context = cases[name]
    return job.result(), context


# ------------------------------------------------------------------- 3. ann2snn: an untraceable model
def test_converter_names_the_untraceable_source_line(cases):
    # in this process (a library call, not a command); first, so it runs while the commands are under way
    from spikeforge import ann2snn

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.relu = torch.nn.Linear(4, 4), torch.nn.ReLU()

        def forward(self, x):
            x = self.fc(x)
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                x = x * 2
            return self.relu(x)

    with pytest.raises(UserError) as info:
        ann2snn.Converter([torch.randn(2, 4)], progress=False)(Branchy())
    message = str(info.value)
    assert isinstance(info.value, torch.fx.proxy.TraceError)
    assert f"{__file__}:" in message and "if x.sum() > 0:" in message
    assert "torch.fx.wrap" in message and "\n" not in message


# ---------------------------------------------------------------------------- 1. runs never overwrite a run
def test_second_run_gets_a_new_folder_and_leaves_the_first_untouched(cases):
    done, (out, snap) = _result(cases, "second_run")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert _snapshot(out / RUN_NAME) == snap
    assert f"{RUN_NAME}-2" in done.stdout
    assert load_checkpoint(out / f"{RUN_NAME}-2" / "checkpoint_latest.pth")["epoch"] == 0


def test_a_finished_overwrite_replaces_the_earlier_run_whole(cases):
    done, (out, snap) = _result(cases, "overwrite_done")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = out / RUN_NAME
    assert sorted(p.name for p in out.iterdir()) == [RUN_NAME]
    assert set(_snapshot(run)) == set(snap)
    assert "seed=7" in (run / "args.txt").read_text() and (run / "args.txt").read_bytes() != snap["args.txt"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert load_checkpoint(run / "checkpoint_max.pth")["args"]["seed"] == 7


def test_engine_replaces_only_the_earlier_runs_own_files(tmp_path):
    # in a folder given on purpose: untouched until the first epoch is saved, then the earlier run's known
    # outputs go (checkpoint_max.pth of the earlier run would otherwise sit next to this run's checkpoints)
    from spikeforge.training import Trainer, new_run_dir

    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("args.txt", "checkpoint_max.pth", "spikes.png", "metrics.jsonl", "notes.txt"):
        (folder / name).write_text(f"earlier {name}")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    calls = {"n": 0}

    def forward(model, x):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return model(x)

    data = (torch.randn(16, 1, 2, 2), torch.randint(0, 3, (16,)))
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), torch.nn.functional.cross_entropy,
                      forward=forward, batch_size=4, out_dir=folder, args={"a": 1}, progress=False,
                      tensorboard=False, log=lambda _: None)
    before = _snapshot(folder)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(data, None, epochs=1)
    assert _snapshot(folder) == before and trainer.last_checkpoint is None
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), torch.nn.functional.cross_entropy,
                      batch_size=4, out_dir=folder, args={"a": 1}, progress=False, tensorboard=False,
                      log=lambda _: None)
    trainer.fit(data, None, epochs=1)  # no test data: no checkpoint_max.pth of its own
    assert sorted(p.name for p in folder.iterdir()) == ["args.txt", "checkpoint_latest.pth", "metrics.jsonl",
                                                        "notes.txt"]
    assert (folder / "notes.txt").read_text() == "earlier notes.txt"
    assert (folder / "args.txt").read_text().startswith("{'a': 1}")
    # new_run_dir: the name, then -2, -3 ...: each taken at once, even while still empty; an empty folder of
    # the user's is used
    assert new_run_dir(folder) == tmp_path / "run-2"
    assert new_run_dir(folder) == tmp_path / "run-3"
    (tmp_path / "mine").mkdir()
    assert new_run_dir(tmp_path / "mine") == tmp_path / "mine"


def test_ctrl_c_in_a_new_run_leaves_the_finished_run_untouched(cases):
    done, (out, snap) = _result(cases, "interrupt_new")
    assert done.returncode == 130, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert _snapshot(out / RUN_NAME) == snap
    new = out / f"{RUN_NAME}-2"  # the same run name: a folder of its own, resumable from its epoch -1 checkpoint
    assert load_checkpoint(new / "checkpoint_latest.pth")["epoch"] == -1
    hint = next(line for line in done.stderr.splitlines() if "continue with" in line)
    assert "-resume" in hint and str(new / "checkpoint_latest.pth") in hint


def test_ctrl_c_before_the_first_checkpoint_of_an_overwrite_changes_nothing(cases):
    done, (out, snap) = _result(cases, "interrupt_overwrite")
    assert done.returncode == 130, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert _snapshot(out / RUN_NAME) == snap
    assert sorted(p.name for p in out.iterdir()) == [RUN_NAME]
    assert "left as they were" in done.stdout or "nothing was changed" in done.stderr


def test_ctrl_c_before_the_first_checkpoint_of_a_resume_changes_nothing(cases):
    done, (out, snap) = _result(cases, "interrupt_resume")
    assert done.returncode == 130, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert _snapshot(out / RUN_NAME) == snap  # metrics.jsonl, args.txt, checkpoints: all byte-identical


def test_demo_ctrl_c_names_a_resume_flag_the_demo_accepts(cases):
    done, (out, snap) = _result(cases, "interrupt_demo")
    assert done.returncode == 130, done.stderr[-2000:]
    assert _snapshot(out / RUN_NAME) == snap
    hint = next(line for line in done.stderr.splitlines() if "continue with" in line)
    assert "spikeforge demo" in hint and "--resume" in hint and f"{RUN_NAME}-2" in hint


def test_demo_resume_continues_the_latest_run_and_touches_nothing_when_done(cases):
    done, (out, snap) = _result(cases, "demo_resume")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "nothing to train" in done.stdout
    assert _snapshot(out / RUN_NAME) == snap and sorted(p.name for p in out.iterdir()) == [RUN_NAME]


# ----------------------------------------------------------------------- 3, 4, 5. one message, not a traceback
@pytest.mark.parametrize("name,words", [
    ("truncated", ["truncated or corrupt"]),
    ("empty", ["empty"]),
    ("text", ["not a file written by torch.save"]),
    ("evil", ["objects other than tensors and plain data", "could run code"]),
])
def test_classify_refuses_unusable_weights_files(cases, root, name, words):
    done, _ = _result(cases, f"weights_{name}")
    line = _one_error_line(done, "--weights", f"{name}.pt", *words)
    assert "weights_only" not in line
    assert not (root / "PWNED").exists()


def test_classify_refuses_image_sizes_the_model_cannot_take(cases):
    _one_error_line(_result(cases, "img_size_7")[0], "--img-size 7", "224")
    _one_error_line(_result(cases, "img_size_0")[0], "--img-size", "got 0")


def test_classify_refuses_a_device_this_machine_lacks(cases):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _one_error_line(_result(cases, "device_cuda")[0], "--device cuda", "CUDA is not available")


def test_train_limit_zero_is_refused_before_touching_the_run_folder(cases):
    done, (out, snap) = _result(cases, "train_limit_0")
    _one_error_line(done, "--train-limit", "got 0")
    assert _snapshot(out / RUN_NAME) == snap and sorted(p.name for p in out.iterdir()) == [RUN_NAME]


@pytest.mark.parametrize("name,words", [
    ("train_limit_negative", ["--train-limit", "got -5"]),  # [: -5] would train on 59,995 images
    ("lr_nan", ["-lr", "nan"]),
    ("device_bogus", ["-device", "bogus"]),
])
def test_lif_fc_mnist_refuses_bad_flags(cases, name, words):
    _one_error_line(_result(cases, name)[0], *words)


def test_resume_from_a_file_with_objects_says_what_it_is(cases):
    done, (out, snap) = _result(cases, "resume_evil")
    line = _one_error_line(done, "evil.pth", "objects other than tensors and plain data", "could run code")
    assert "weights_only" not in line and "truncated" not in line and "corrupt" not in line
    assert _snapshot(out / RUN_NAME) == snap


def test_resume_with_a_checkpoint_of_another_shape(cases):
    done, (folder, snap) = _result(cases, "resume_other_shape")
    _one_error_line(done, "checkpoint_latest.pth", "layer.1.weight", "(10, 100)", "(10, 784)")
    assert _snapshot(folder) == snap


def test_read_only_out_dir(cases):
    done, readonly = _result(cases, "readonly")
    if done.returncode == 99:
        pytest.skip(f"cannot make a folder read-only for root here: {done.stderr.strip()}")
    _one_error_line(done, "-out-dir", str(readonly / "logs"), "cannot write")
    assert list(readonly.iterdir()) == []


# ------------------------------------------------------------------------------------------------- 6. smaller
def test_demo_module_runs_and_names_the_flag_that_exists(cases):
    line = _one_error_line(_result(cases, "demo_T0")[0], "-T must be >= 1")
    assert "--T" not in line
    done = _result(cases, "demo_help")[0]
    assert done.returncode == 0 and "--resume" in done.stdout and "--overwrite" in done.stdout


def test_version(cases):
    done = _result(cases, "version")[0]
    assert done.returncode == 0 and done.stdout.startswith("spikeforge ")


def test_gitignore_has_the_demo_folder():
    ignored = (REPO / ".gitignore").read_text().split()
    assert "spikeforge-demo/" in ignored


def test_debug_shows_the_traceback(cases):
    done = _result(cases, "debug")[0]
    assert done.returncode != 0 and "Traceback" in done.stderr and "UsageError" in done.stderr


def test_library_entry_points_refuse_bad_arguments_by_name(tmp_path):
    # the same checks as the commands, as exceptions that are UserErrors (and the built-in types they were)
    from spikeforge.datasets import MNIST, DatasetFileError
    from spikeforge.models import create_model, load_weights
    from spikeforge.training.data import load_split_tensors

    not_a_folder = tmp_path / "mnist.gz"
    not_a_folder.write_bytes(b"x")
    with pytest.raises(DatasetFileError, match="is a file"):
        MNIST(root=not_a_folder)
    with pytest.raises(UserError, match="train_limit must be >= 1, got 0"):
        load_split_tensors("mnist", None, 0, None)
    with pytest.raises(ValueError, match="test_limit must be >= 1, got -5"):
        load_split_tensors("mnist", None, None, -5)
    with pytest.raises(UserError, match="create_model\\('snnmlp_t'\\).*no_such_arg"):
        create_model("snnmlp_t", no_such_arg=1)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match=f"{empty} is empty"):
        load_weights(torch.nn.Linear(2, 2), empty)
    from spikeforge import ann2snn

    with pytest.raises(UserError, match="device 'bogus'"):
        ann2snn.Converter([torch.zeros(1, 2)], device="bogus")
