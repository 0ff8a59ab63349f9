"""Each loss against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from spikeforge.training import CrossEntropyLoss, CrossEntropyRateLoss, MSERateLoss, make_loss
from spikeforge.training.losses import call_loss


def test_mse_rate_loss_against_one_hot_by_hand():
    rate = torch.tensor([[0.2, 0.8, 0.0], [0.5, 0.5, 1.0]])
    labels = torch.tensor([1, 0])
    # squared errors: (0.04, 0.04, 0) and (0.25, 0.25, 1.0); mean over 6 entries
    expected = (0.04 + 0.04 + 0.0 + 0.25 + 0.25 + 1.0) / 6
    assert MSERateLoss()(rate, labels).item() == pytest.approx(expected, rel=1e-6)
    # a wider one-hot adds zero targets for the missing columns
    assert MSERateLoss(num_classes=3)(rate, labels).item() == pytest.approx(expected, rel=1e-6)


def test_mse_rate_loss_on_a_spike_sequence_averages_over_time():
    spikes = torch.tensor([[[1.0, 0.0]], [[0.0, 0.0]], [[1.0, 1.0]], [[1.0, 0.0]]])  # [T=4, B=1, C=2]
    # rates (0.75, 0.25), label 0: ((0.25)^2 + (0.25)^2) / 2
    assert MSERateLoss(time_dim=0)(spikes, torch.tensor([0])).item() == pytest.approx(0.0625)


def _cross_entropy(scores, label):
    return math.log(sum(math.exp(s) for s in scores)) - scores[label]


def test_cross_entropy_on_logits_by_hand():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]])
    labels = torch.tensor([2, 1])
    expected = (_cross_entropy([1.0, 2.0, 3.0], 2) + _cross_entropy([0.5, -1.0, 0.0], 1)) / 2
    assert CrossEntropyLoss()(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_on_mean_membrane_over_time():
    v = torch.tensor([[[0.0, 2.0]], [[1.0, 0.0]]])  # [T=2, B=1, C=2] -> mean (0.5, 1.0)
    assert CrossEntropyLoss(time_dim=0)(v, torch.tensor([0])).item() == pytest.approx(
        _cross_entropy([0.5, 1.0], 0), rel=1e-6)


def test_cross_entropy_on_scaled_firing_rate():
    rate = torch.tensor([[0.1, 0.6]])
    loss = CrossEntropyRateLoss(scale=5.0)(rate, torch.tensor([1]))
    assert loss.item() == pytest.approx(_cross_entropy([0.5, 3.0], 1), rel=1e-6)


def test_losses_compute_in_float32_for_low_precision_outputs():
    rate = torch.tensor([[0.25, 0.75]], dtype=torch.bfloat16)
    loss = MSERateLoss()(rate, torch.tensor([1]))
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(0.0625)


def test_make_loss_by_name_and_the_inputs_hook():
    assert isinstance(make_loss("mse_rate"), MSERateLoss)
    assert isinstance(make_loss("ce", label_smoothing=0.1), CrossEntropyLoss)
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("hinge")

    class Distill:  # a loss that also needs the batch's inputs
        uses_inputs = True

        def __call__(self, output, labels, inputs):
            return (output.sum() + inputs.sum()) * 0 + inputs.shape[0]

    assert call_loss(Distill(), torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), torch.ones(3, 4)).item() == 3
