"""``python -m <module> <args>`` without paying for ``import torch`` every time: a fork server for the fault tests.

Started once (``python tests/faults/runner.py``), it imports torch and the spikeforge command modules, then reads
one JSON job per line on stdin and forks a child per job. The child is a fresh ``python -m``: its own
environment, working folder, stdout/stderr files, ``sys.argv``, default signal handlers, and the module run with
``runpy.run_module(name, run_name="__main__", alter_sys=True)`` (what ``-m`` does), so the command's real
``__main__`` code path runs, including Ctrl-C handling. The server answers each job with the child's pid; the
child writes its exit status to the job's ``rc`` file when it ends (it is the server's child, so the caller
cannot wait for it).

``FAULTS_CPU_LOG=<file>`` appends each child's CPU seconds and command to that file (to keep the module's time
in check). The server never runs a torch operation itself, so no thread pool exists when it forks. It parses the bundled
MNIST files once (numpy), so the children skip that too.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import traceback

# the commands' dependencies, not the commands themselves (runpy warns about a -m module imported beforehand)
PRELOAD = ("torch", "numpy", "spikeforge", "spikeforge.cli", "spikeforge.errors", "spikeforge.training",
           "spikeforge.training.cli", "spikeforge.training.tutorial_nets", "spikeforge.models",
           "spikeforge.models.cli", "spikeforge.models.profile", "spikeforge.datasets", "spikeforge.ann2snn")


def _drop_dac_override() -> None:
    """Take CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH out of this process's capabilities: even root then obeys
    file permissions (the read-only-folder case)."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(None, use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    for field in ("effective", "permitted", "inheritable"):
        setattr(data[0], field, getattr(data[0], field) & ~((1 << 1) | (1 << 2)))
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def _child(job: dict) -> None:
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        for fd, name in ((1, "out"), (2, "err")):
            target = os.open(job[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.stdin = open(os.devnull)
        sys.stdout = open(1, "w", buffering=1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, closefd=False)
        sys.argv = [job["module"], *job["argv"]]
        if job.get("read_only_root") and os.geteuid() == 0:
            try:
                _drop_dac_override()
            except OSError as error:
                print(f"cannot drop CAP_DAC_OVERRIDE: {error}", file=sys.stderr)
                code = 99  # the caller skips the case: a folder cannot be made read-only for root here
                return
        try:
            runpy.run_module(job["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as done:
            if done.code is None or isinstance(done.code, int):
                code = done.code or 0
            else:
                print(done.code, file=sys.stderr)
                code = 1
        except KeyboardInterrupt:
            traceback.print_exc()
            code = 130
        except BaseException:  # noqa: BLE001 - what python -m would print
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            if os.environ.get("FAULTS_CPU_LOG"):
                t = os.times()
                with open(os.environ["FAULTS_CPU_LOG"], "a") as f:
                    f.write(f"{t.user + t.system:.2f} {job['module']} {' '.join(job['argv'][:3])}\n")
            with open(job["rc"] + ".tmp", "w") as f:
                f.write(str(code))
            os.replace(job["rc"] + ".tmp", job["rc"])
        finally:
            os._exit(code)


def main() -> None:
    for name in PRELOAD:
        __import__(name)
    from spikeforge.datasets import MNIST, read_idx

    for name in MNIST.files:  # parsed once (numpy only); the children find them in read_idx's cache
        read_idx(MNIST.default_root() / name)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped automatically
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("ready", flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(job)
        print(pid, flush=True)


if __name__ == "__main__":
    main()
