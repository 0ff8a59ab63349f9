"""numba's on-disk cache across processes, and Ctrl-C during a compile.

Every test runs fresh Python processes with their own ``NUMBA_CACHE_DIR``, so nothing depends on (or writes to)
the cache next to the package. The cache is judged by numba's own statistics (``dispatcher.stats.cache_hits``
/ ``cache_misses``) and by the files it leaves, never by time; the first-call times are printed only
(``pytest -s``).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from spikeforge.kernels.cpu import numba_installed

pytestmark = [
    pytest.mark.skipif(not numba_installed(), reason="numba is not installed (spikeforge[fast])"),
    pytest.mark.skipif(os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"), reason="NUMBA_DISABLE_JIT is set"),
]

ROOT = Path(__file__).resolve().parents[2]

# One process's first fused calls: a multi-step LIF forward + backward, the conversion IF neuron and the fused
# Poisson encoder (forward + weight gradient). Prints numba's cache statistics of every kernel it used.
FIRST_CALLS = textwrap.dedent("""
    import json, time
    import torch
    from spikeforge import fused_encoding, neuron
    from spikeforge.kernels import encoding
    from spikeforge.kernels import _cpu_jit, cpu
    from spikeforge.neuron import ConversionIFNode

    torch.manual_seed(0)
    start = time.perf_counter()
    x = torch.randn(8, 4, 16, requires_grad=True)
    neuron.LIFNode(step_mode="m", backend="cpu")(x).sum().backward()
    lif_seconds = time.perf_counter() - start
    assert cpu._state["error"] is None, cpu._state["error"]
    with torch.no_grad():
        ConversionIFNode(1.0, step_mode="m", backend="cpu")(torch.randn(4, 2, 8))
    weight = torch.randn(5, 12, requires_grad=True)
    fused_encoding.poisson_linear(torch.rand(3, 12), weight, 4, seed=1).sum().backward()
    kernels = {"forward": _cpu_jit.forward, "backward": _cpu_jit.backward, "conversion_if": _cpu_jit.conversion_if,
               "compact": encoding._compact, "fire": encoding._fire_kernel,
               "poisson_forward": encoding._forward_kernel,
               "poisson_weight_grad": encoding._weight_grad_kernel}
    stats = {name: [sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values())]
             for name, k in kernels.items()}
    print(json.dumps({"stats": stats, "lif_seconds": lif_seconds}))
""")


def _env(cache_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPIKEFORGE_")}
    env["NUMBA_CACHE_DIR"] = str(cache_dir)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _run(code: str, cache_dir: Path, cwd: Path, timeout: float = 240) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], env=_env(cache_dir), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _cache_files(cache_dir: Path) -> dict:
    return {str(p.relative_to(cache_dir)): p.stat().st_size for p in cache_dir.rglob("*") if p.is_file()}


def test_a_second_process_loads_every_kernel_from_the_cache(tmp_path):
    cache = tmp_path / "numba-cache"
    first = _run(FIRST_CALLS, cache, tmp_path)
    for name, (hits, misses) in first["stats"].items():
        assert misses > 0 and hits == 0, (name, first["stats"])  # an empty cache: every kernel was compiled
    files = _cache_files(cache)
    assert any(f.endswith(".nbi") for f in files) and any(f.endswith(".nbc") for f in files), files

    second = _run(FIRST_CALLS, cache, tmp_path)
    for name, (hits, misses) in second["stats"].items():
        assert hits > 0 and misses == 0, (name, second["stats"])  # loaded from disk, nothing compiled
    assert _cache_files(cache) == files  # no new entries: the index keys are the same in every process
    print(f"\nfirst LIF forward+backward: {first['lif_seconds']:.2f} s in the first process, "
          f"{second['lif_seconds']:.2f} s in the second")


# Patches the hook llvmlite calls (a ctypes callback, from inside LLVM) when an object file has been emitted, so
# that Ctrl-C arrives exactly there: the place where the KeyboardInterrupt used to be printed as "Exception
# ignored on calling ctypes callback function" and the compile, and the program, went on.
INTERRUPT_IN_CALLBACK = textwrap.dedent("""
    import signal
    import torch
    from numba.core import codegen
    from spikeforge import neuron

    signal.signal(signal.SIGINT, signal.default_int_handler)
    original = codegen.JITCodeLibrary._object_compiled_hook.__func__
    calls = []

    def hook(cls, ll_module, buf):
        calls.append(1)
        if len(calls) == 1:
            signal.raise_signal(signal.SIGINT)
        return original(cls, ll_module, buf)

    codegen.JITCodeLibrary._object_compiled_hook = classmethod(hook)
    x = torch.randn(8, 4, 16, requires_grad=True)
    neuron.LIFNode(step_mode="m", backend="cpu")(x).sum().backward()
    print("finished", len(calls))
""")


def _assert_interrupted(proc: subprocess.CompletedProcess):
    assert proc.returncode != 0, (proc.returncode, proc.stdout, proc.stderr[-3000:])
    assert "finished" not in proc.stdout
    assert "KeyboardInterrupt" in proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr[-3000:]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_landing_in_an_llvm_callback_stops_the_compile(tmp_path):
    from numba.core import codegen

    if not hasattr(getattr(codegen, "JITCodeLibrary", None), "_object_compiled_hook"):
        pytest.skip("this numba has no JITCodeLibrary._object_compiled_hook to interrupt in")
    proc = subprocess.run([sys.executable, "-c", INTERRUPT_IN_CALLBACK], env=_env(tmp_path / "numba-cache"),
                          cwd=tmp_path, capture_output=True, text=True, timeout=240)
    _assert_interrupted(proc)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_real_sigint_during_a_fresh_compile_stops_the_process(tmp_path):
    """SIGINT ~1 s into the first compile (empty cache): the process exits non-zero, soon, with KeyboardInterrupt.

    Where the signal lands is up to the scheduler; the test above covers the one place that used to swallow it.
    """
    code = textwrap.dedent("""
        import signal, sys
        import torch
        import torch._dynamo  # imported by the first custom-op call otherwise; keep it out of the signal's way
        from spikeforge import neuron

        signal.signal(signal.SIGINT, signal.default_int_handler)  # a test runner may start us with SIGINT ignored
        x = torch.randn(8, 4, 16, requires_grad=True)
        print("compiling", flush=True)
        neuron.LIFNode(step_mode="m", backend="cpu")(x).sum().backward()
        print("finished", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], env=_env(tmp_path / "numba-cache"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "compiling"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    print(f"\nexited {time.monotonic() - sent:.2f} s after SIGINT with status {proc.returncode}")
    _assert_interrupted(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))


# The guard itself, where CPython swallows a KeyboardInterrupt: in a ctypes callback and in a weakref callback.
GUARD_CASES = textwrap.dedent("""
    import ctypes, json, signal, sys, time, weakref
    from spikeforge.kernels.cpu import interrupt_guard

    signal.signal(signal.SIGINT, signal.default_int_handler)

    @ctypes.CFUNCTYPE(None)
    def ctypes_callback():
        signal.raise_signal(signal.SIGINT)  # the handler runs inside the callback

    class Thing:
        pass

    def weakref_callback():
        thing = Thing()
        ref = weakref.ref(thing, lambda _: signal.raise_signal(signal.SIGINT))
        del thing

    def busy(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass

    results = {}
    for name, trigger in (("ctypes", ctypes_callback), ("weakref", weakref_callback)):
        for guarded in (False, True):
            for after in (1.0, 0.0):  # with work after the callback, and with the block ending right away
                start, outcome = time.monotonic(), "went on"
                try:
                    if guarded:
                        with interrupt_guard():
                            trigger()
                            busy(after)
                    else:
                        trigger()
                        busy(after)
                except KeyboardInterrupt:
                    outcome = "KeyboardInterrupt"
                restored = (signal.getsignal(signal.SIGINT) is signal.default_int_handler
                            and sys.unraisablehook is sys.__unraisablehook__)
                results[f"{name} guarded={guarded} after={after}"] = [outcome, time.monotonic() - start, restored]

    seen = []

    def custom(signum, frame):  # a handler that does not raise: called, and nothing raised for it
        seen.append(signum)

    signal.signal(signal.SIGINT, custom)
    with interrupt_guard():
        signal.raise_signal(signal.SIGINT)
        busy(0.05)
    results["custom handler"] = [seen == [signal.SIGINT], signal.getsignal(signal.SIGINT) is custom]
    print(json.dumps(results))
""")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_interrupt_guard_raises_what_a_callback_swallowed(tmp_path):
    proc = subprocess.run([sys.executable, "-c", GUARD_CASES], env=_env(tmp_path / "numba-cache"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for case, value in results.items():
        if case == "custom handler":
            assert value == [True, True]
            continue
        outcome, seconds, restored = value
        assert restored, case
        if "guarded=True" in case:
            assert outcome == "KeyboardInterrupt" and seconds < 0.9, (case, value)
        else:  # what CPython does without the guard: printed as "Exception ignored ..." and gone
            assert outcome == "went on", (case, value)
    # only the unguarded cases may have printed (4 of them)
    assert proc.stderr.count("Exception ignored") == 4, proc.stderr[-3000:]


def test_cached_njit_compiles_without_a_cache_where_no_directory_is_writable(monkeypatch, caplog):
    from numba.core import caching

    from spikeforge.kernels import _cpu_jit

    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)  # renamed in numba 0.6x
    if impl is None or not hasattr(impl, "_locator_classes"):
        pytest.skip("this numba keeps its cache locators elsewhere")
    monkeypatch.setattr(impl, "_locator_classes", [])  # as if every candidate directory were read-only
    monkeypatch.setattr(caching.config, "CACHE_LOCATOR_CLASSES", "", raising=False)
    monkeypatch.setattr(_cpu_jit, "_NO_CACHE_WARNED", [])
    with caplog.at_level(logging.WARNING, logger="spikeforge.kernels"):
        def add_one(x):
            return x + 1

        jitted = _cpu_jit.cached_njit()(add_one)
    assert jitted(41) == 42
    assert "NUMBA_CACHE_DIR" in caplog.text
