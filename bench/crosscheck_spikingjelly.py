"""Cross-check spikeforge neurons against SpikingJelly 2.0 on a full grid of options (run where both import).

    /path/to/peer-venv/bin/python bench/crosscheck_spikingjelly.py

Grid: {IF, LIF, PLIF} x v_reset {0, -0.3, None} x detach_reset x decay_input x tau {2, 3.7} x every surrogate
both libraries share x step mode {'s', 'm'}; inputs include dyadic values that land exactly on the threshold.
Prints the worst spike mismatch count and the largest |difference| of v_seq, x.grad and PLIF w.grad.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spikingjelly.activation_based import functional as sj_functional  # noqa: E402
from spikingjelly.activation_based import neuron as sj_neuron  # noqa: E402
from spikingjelly.activation_based import surrogate as sj_surrogate  # noqa: E402

from spikeforge import functional, neuron, surrogate  # noqa: E402

SURROGATES = ["Sigmoid", "ATan", "PiecewiseQuadratic", "PiecewiseExp", "SoftSign", "SuperSpike", "Erf", "Rect",
              "PiecewiseLeakyReLU"]


def build(lib_neuron, lib_surrogate, kind, sg_name, v_reset, detach, decay_input, tau, step_mode):
    sg = getattr(lib_surrogate, sg_name)()
    common = dict(v_reset=v_reset, detach_reset=detach, surrogate_function=sg, step_mode=step_mode,
                  store_v_seq=step_mode == "m")
    if kind == "IF":
        return lib_neuron.IFNode(**common)
    if kind == "LIF":
        return lib_neuron.LIFNode(tau=tau, decay_input=decay_input, **common)
    return lib_neuron.ParametricLIFNode(init_tau=tau, decay_input=decay_input, **common)


def run(node, x, w_loss, step_mode, reset):
    x = x.clone().requires_grad_(True)
    if step_mode == "m":
        spikes = node(x)
    else:
        spikes = torch.stack([node(x[t]) for t in range(x.shape[0])])
    (spikes * w_loss).sum().backward()
    v_seq = getattr(node, "v_seq", None) if step_mode == "m" else None
    w_grad = node.w.grad.clone() if hasattr(node, "w") else None
    out = spikes.detach(), v_seq, x.grad, w_grad, node.v.detach().clone()
    reset(node)
    return out


def main():
    torch.manual_seed(0)
    worst = {"spikes": 0, "v_seq": 0.0, "x_grad": 0.0, "w_grad": 0.0, "v_last": 0.0, "x_grad_rel": 0.0}
    n_cases = 0
    grid = itertools.product(["IF", "LIF", "PLIF"], SURROGATES, [0.0, -0.3, None], [False, True], [True, False],
                             [2.0, 3.7], ["m", "s"])
    for kind, sg_name, v_reset, detach, decay_input, tau, step_mode in grid:
        if kind == "IF" and (decay_input is False or tau != 2.0):
            continue
        for kind_of_input in ("uniform", "dyadic"):
            if kind_of_input == "uniform":
                x = torch.empty(12, 4, 33).uniform_(-1.0, 3.0)
            else:
                x = torch.randint(-2, 9, (12, 4, 33)).float() * 0.25
            w_loss = torch.randn_like(x)
            ours = run(build(neuron, surrogate, kind, sg_name, v_reset, detach, decay_input, tau, step_mode),
                       x, w_loss, step_mode, functional.reset_net)
            theirs = run(build(sj_neuron, sj_surrogate, kind, sg_name, v_reset, detach, decay_input, tau, step_mode),
                         x, w_loss, step_mode, sj_functional.reset_net)
            n_cases += 1
            worst["spikes"] = max(worst["spikes"], int((ours[0] != theirs[0]).sum()))
            if ours[1] is not None:
                worst["v_seq"] = max(worst["v_seq"], float((ours[1] - theirs[1].detach()).abs().max()))
            grad_diff = (ours[2] - theirs[2]).abs()
            worst["x_grad"] = max(worst["x_grad"], float(grad_diff.max()))
            worst["x_grad_rel"] = max(worst["x_grad_rel"], float((grad_diff / theirs[2].abs().clamp(min=1.0)).max()))
            worst["v_last"] = max(worst["v_last"], float((ours[4] - theirs[4]).abs().max()))
            if ours[3] is not None:
                worst["w_grad"] = max(worst["w_grad"], float((ours[3] - theirs[3]).abs().max()
                                                            / max(1.0, float(theirs[3].abs()))))
    print(f"{n_cases} cases (neuron x surrogate x v_reset x detach_reset x decay_input x tau x step mode x input)")
    print(f"worst spike mismatches in a case: {worst['spikes']}")
    for key in ("v_seq", "v_last", "x_grad"):
        print(f"max |{key} difference|: {worst[key]:.3g}")
    print(f"max x_grad difference relative to max(1, |value|): {worst['x_grad_rel']:.3g}")
    print(f"max relative PLIF w.grad difference: {worst['w_grad']:.3g}")


if __name__ == "__main__":
    main()
