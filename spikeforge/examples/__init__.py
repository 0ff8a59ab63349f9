"""Runnable examples: ``python -m spikeforge.examples.<name> --help``.

* ``lif_fc_mnist``: one LIF layer on Poisson-coded MNIST (SpikingJelly's flags and outputs);
* ``conv_fashion_mnist``: a convolutional SNN on Fashion-MNIST with direct input coding;
* ``demo``: the ``spikeforge demo`` command, a one-minute offline run of ``lif_fc_mnist``.
"""
