"""The benchmarks' allocator setting (glibc ``mallopt``: every block over 64 KiB mmapped, trimmed on free) makes
each large allocation page-fault; it belongs in the memory-probe child processes only, never where anything is
timed (an earlier bench/neurons.py called it before every timing and inflated the ratios)."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
# the only functions allowed to call it: the child-process entry points that measure memory and time nothing
PROBE_ENTRIES = {"neurons.py": {"_probe_main"}, "memory.py": {"measure_one"}}


def _callers(path: Path, name: str) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for func in ast.walk(tree):
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(func):
                if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == name:
                    found.add(func.name)
    return found


def test_only_memory_probe_entry_points_set_the_allocator():
    for path in sorted(BENCH.glob("*.py")):
        text = path.read_text()
        callers = _callers(path, "_limit_malloc_caching") | _callers(path, "mallopt")
        callers.discard("_limit_malloc_caching")  # the helper itself calls mallopt
        assert callers <= PROBE_ENTRIES.get(path.name, set()), (path.name, callers)
        if "mallopt" in text and path.name != "neurons.py":
            pytest.fail(f"{path.name} calls mallopt itself; use neurons._limit_malloc_caching in a probe child")
    for entry in ("_probe_main", "measure_one"):
        body = next(n for p in BENCH.glob("*.py") for n in ast.walk(ast.parse(p.read_text()))
                    if isinstance(n, ast.FunctionDef) and n.name == entry)
        timed = {getattr(c.func, "id", getattr(c.func, "attr", None))
                 for c in ast.walk(body) if isinstance(c, ast.Call)}
        assert not timed & {"perf_counter", "_median_ms", "time_case", "conv_time", "timing"}, (entry, timed)


def test_neuron_timing_run_never_sets_the_allocator(monkeypatch, capsys):
    pytest.importorskip("numba")
    spec = importlib.util.spec_from_file_location("bench_neurons_under_test", BENCH / "neurons.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_neurons_under_test", module)
    spec.loader.exec_module(module)
    calls = []
    monkeypatch.setattr(module, "_limit_malloc_caching", lambda: calls.append(1) or False)
    monkeypatch.setattr(module, "COPY_BYTES", 1 << 20)
    module.main(["--no-peers", "--cases", "2x2x64", "--surrogates", "ATan", "--repeats", "1", "--min-seconds", "0"])
    out = capsys.readouterr().out
    assert "default allocator" in out and "sf-fused" in out
    assert calls == []
