"""lif_fc_mnist, spikeforge against SpikingJelly 2.0: one epoch each, same flags, one process.

Run with an interpreter where both are importable (this script puts the repository on sys.path)::

    /path/to/peer-venv/bin/python bench/lif_fc_mnist.py

Flags (both): -T 100 -b 64 -opt adam -lr 1e-3 -tau 2.0, one training epoch over the 60,000 MNIST
images (drop_last, shuffled) and one test pass over the 10,000, both fed from the same in-memory
tensors (so SpikingJelly pays no DataLoader cost here). SpikingJelly runs its example's loop: T
single-step calls of PoissonEncoder and the Flatten-Linear-LIFNode network per batch.
spikeforge runs its example's loop: all T steps encoded at once, fused with the linear layer, and the
LIF layer in multi-step mode. Prints train/test images/s of each, the ratio, and epoch-1 test accuracy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def one_epoch(name, net, firing_rate, reset, train, test, batch_size, lr, seed, limit):
    with torch.no_grad():  # warm-up: compiles (or loads) the numba kernels outside the timed region
        firing_rate(train[0][:batch_size])
        reset()
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    train_x, train_y = train
    test_x, test_y = test
    n = len(train_y) if limit is None else min(limit, len(train_y))
    net.train()
    order = torch.randperm(len(train_y))[:n]
    seen = correct = 0
    start = time.perf_counter()
    for i in range(0, n - n % batch_size, batch_size):
        idx = order[i:i + batch_size]
        images, labels = train_x[idx], train_y[idx]
        optimizer.zero_grad()
        out_fr = firing_rate(images)
        loss = F.mse_loss(out_fr, F.one_hot(labels, 10).float())
        loss.backward()
        optimizer.step()
        reset()
        seen += len(labels)
        correct += int((out_fr.argmax(1) == labels).sum())
    train_time = time.perf_counter() - start
    net.eval()
    test_correct = 0
    m = len(test_y) if limit is None else min(limit, len(test_y))
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, m, batch_size):
            out_fr = firing_rate(test_x[i:i + batch_size])
            reset()
            test_correct += int((out_fr.argmax(1) == test_y[i:i + batch_size]).sum())
    test_time = time.perf_counter() - start
    result = {"name": name, "train_speed": seen / train_time, "test_speed": m / test_time,
              "train_acc": correct / seen, "test_acc": test_correct / m, "train_time": train_time}
    print(f"{name:>12}: train {result['train_speed']:8.0f} images/s ({train_time:6.1f} s), "
          f"test {result['test_speed']:8.0f} images/s, train_acc {result['train_acc']:.4f}, "
          f"epoch-1 test_acc {result['test_acc']:.4f}", flush=True)
    return result


def spikeforge_run(args, train_u8, test_u8):
    from spikeforge import functional
    from spikeforge.fused_encoding import has_fast_kernels
    from spikeforge.training.tutorial_nets import LIFFCNet

    net = LIFFCNet(tau=args.tau)
    if not has_fast_kernels():
        print("note: numba missing, spikeforge runs its dense path")
    return one_epoch("spikeforge", net, lambda x: net.firing_rate(x, args.T), lambda: functional.reset_net(net),
                     train_u8, test_u8, args.b, args.lr, args.seed, args.limit)


def spikingjelly_run(args, train_f, test_f):
    from spikingjelly.activation_based import encoding, functional, layer, neuron, surrogate

    net = torch.nn.Sequential(
        layer.Flatten(),
        layer.Linear(28 * 28, 10, bias=False),
        neuron.LIFNode(tau=args.tau, surrogate_function=surrogate.ATan()),
    )
    encoder = encoding.PoissonEncoder()

    def firing_rate(images):  # the loop of SpikingJelly's lif_fc_mnist example
        out_fr = 0.0
        for _ in range(args.T):
            out_fr += net(encoder(images))
        return out_fr / args.T

    return one_epoch("spikingjelly", net, firing_rate, lambda: functional.reset_net(net), train_f, test_f,
                     args.b, args.lr, args.seed, args.limit)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-T", type=int, default=100)
    parser.add_argument("-b", type=int, default=64)
    parser.add_argument("-lr", type=float, default=1e-3)
    parser.add_argument("-tau", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="images per split (default: all)")
    parser.add_argument("--skip-spikingjelly", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch/numba threads for both (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        from spikeforge.training import set_threads

        set_threads(args.threads)

    from spikeforge.datasets import MNIST

    train_u8, test_u8 = MNIST(train=True).as_tensors(), MNIST(train=False).as_tensors()
    train_f = (train_u8[0].float() / 255, train_u8[1])
    test_f = (test_u8[0].float() / 255, test_u8[1])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; flags -T {args.T} -b {args.b} "
          f"-opt adam -lr {args.lr} -tau {args.tau}; one epoch each", flush=True)
    ours = spikeforge_run(args, train_u8, test_u8)
    if args.skip_spikingjelly:
        return 0
    theirs = spikingjelly_run(args, train_f, test_f)
    print(f"train speed ratio spikeforge / spikingjelly: {ours['train_speed'] / theirs['train_speed']:.1f}x; "
          f"test speed ratio: {ours['test_speed'] / theirs['test_speed']:.1f}x")
    print(f"epoch-1 test accuracy: spikeforge {ours['test_acc']:.2%}, spikingjelly {theirs['test_acc']:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
