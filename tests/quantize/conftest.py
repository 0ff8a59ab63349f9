import pytest


@pytest.fixture(autouse=True)
def _reference_neuron_kernel(monkeypatch):
    # the plain-PyTorch neuron kernel: these tests check models and quantisation, not the fused kernels (tested
    # against it in tests/kernels), and it needs no JIT compilation
    monkeypatch.setenv("SPIKEFORGE_BACKEND", "reference")
