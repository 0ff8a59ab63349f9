"""conv_fashion_mnist, spikeforge against SpikingJelly 2.0: training images/s and epoch-1 accuracy, one process.

Run with an interpreter where both are importable (this script puts the repository on sys.path)::

    /path/to/peer-venv/bin/python bench/conv_fashion_mnist.py                      # SpikingJelly's flags, 1 epoch
    /path/to/peer-venv/bin/python bench/conv_fashion_mnist.py --limit 6400         # a shorter epoch
    /path/to/peer-venv/bin/python bench/conv_fashion_mnist.py --variants eager compile channels_last bf16

Both run SpikingJelly's conv_fashion_mnist network (SpikingJelly's ``CSNN`` from its layers and ``IFNode``, spikeforge's
``training.tutorial_nets.CSNN``, the same architecture, identical initial weights copied key for key) with the
example's flags: -T 4 -b 128 -opt sgd -lr 0.1 -momentum 0.9 -channels 128, MSE between the firing rate and the
one-hot label, ``functional.reset_net`` after every batch, the same shuffled order of the same in-memory
Fashion-MNIST tensors (so neither pays a DataLoader), one epoch (``--limit`` for fewer images), then one pass over
the 10,000 test images. Prints images/s of training and test, the ratio to SpikingJelly and epoch-1 test accuracy.

spikeforge variants (``--variants``): ``eager`` (what the example runs), ``compile`` (``torch.compile(net)``, the
neuron stays one custom op per call; the first batches compile and are excluded from the time like every warm-up),
``channels_last`` (the convolutions in NHWC), ``bf16`` (CPU autocast to bfloat16).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

WARMUP_BATCHES = 3


def run_epoch(name, net, reset, train, test, args, autocast=False, channels_last=False):
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    train_x, train_y = train
    test_x, test_y = test
    n = len(train_y) if args.limit is None else min(args.limit, len(train_y))
    n -= n % args.b
    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(train_y), generator=gen)[:n]
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)
    amp = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()

    def step(images, labels):
        optimizer.zero_grad()
        with amp:
            out_fr = net(images.contiguous(memory_format=memory_format))
            loss = F.mse_loss(out_fr.float(), F.one_hot(labels, 10).float())
        loss.backward()
        optimizer.step()
        reset()
        return out_fr

    net.train()
    seen = correct = 0
    timed_images = 0
    start = None
    for b, i in enumerate(range(0, n, args.b)):
        if b == WARMUP_BATCHES:
            start = time.perf_counter()  # compile / first-call costs stay out of the rate
        idx = order[i:i + args.b]
        out_fr = step(train_x[idx], train_y[idx])
        seen += len(idx)
        correct += int((out_fr.argmax(1) == train_y[idx]).sum())
        if start is not None:
            timed_images += len(idx)
    train_time = time.perf_counter() - start
    net.eval()
    test_correct = 0
    t0 = time.perf_counter()
    with torch.no_grad(), amp:
        for i in range(0, len(test_y), args.b):
            out_fr = net(test_x[i:i + args.b].contiguous(memory_format=memory_format))
            reset()
            test_correct += int((out_fr.argmax(1) == test_y[i:i + args.b]).sum())
    test_time = time.perf_counter() - t0
    result = {"train_speed": timed_images / train_time, "test_speed": len(test_y) / test_time,
              "train_acc": correct / seen, "test_acc": test_correct / len(test_y)}
    print(f"{name:>26}: train {result['train_speed']:7.1f} images/s, test {result['test_speed']:7.1f} images/s, "
          f"train_acc {result['train_acc']:.4f}, epoch-1 test_acc {result['test_acc']:.4f}", flush=True)
    return result


def spikingjelly_csnn(T: int, channels: int):
    """SpikingJelly's example ``CSNN`` written out with its layers (importing the example module pulls in
    torchvision, which the peer environment need not have in a working state)."""
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    class CSNN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.T = T
            self.conv_fc = torch.nn.Sequential(
                layer.Conv2d(1, channels, kernel_size=3, padding=1, bias=False),
                layer.BatchNorm2d(channels),
                neuron.IFNode(surrogate_function=surrogate.ATan()),
                layer.MaxPool2d(2, 2),
                layer.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
                layer.BatchNorm2d(channels),
                neuron.IFNode(surrogate_function=surrogate.ATan()),
                layer.MaxPool2d(2, 2),
                layer.Flatten(),
                layer.Linear(channels * 7 * 7, channels * 4 * 4, bias=False),
                neuron.IFNode(surrogate_function=surrogate.ATan()),
                layer.Linear(channels * 4 * 4, 10, bias=False),
                neuron.IFNode(surrogate_function=surrogate.ATan()),
            )
            functional.set_step_mode(self, step_mode="m")

        def forward(self, x):
            return self.conv_fc(x.unsqueeze(0).expand(self.T, -1, -1, -1, -1)).mean(0)

    return CSNN()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-T", type=int, default=4)
    parser.add_argument("-b", type=int, default=128)
    parser.add_argument("-lr", type=float, default=0.1)
    parser.add_argument("-channels", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="training images (default: all 60,000)")
    parser.add_argument("--variants", nargs="+", default=["eager", "compile"],
                        choices=["eager", "compile", "channels_last", "bf16"])
    parser.add_argument("--skip-spikingjelly", action="store_true")
    args = parser.parse_args(argv)

    from spikeforge import functional as sf_functional
    from spikeforge.datasets import FashionMNIST
    from spikeforge.training.tutorial_nets import CSNN

    def tensors(train):
        images, labels = FashionMNIST(train=train).as_tensors()
        return images.float().div_(255).reshape(-1, 1, 28, 28), labels

    train, test = tensors(True), tensors(False)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; flags -T {args.T} -b {args.b} -opt sgd "
          f"-lr {args.lr} -momentum 0.9 -channels {args.channels}; {args.limit or len(train[1])} training images",
          flush=True)
    torch.manual_seed(args.seed)
    init = CSNN(args.T, args.channels).state_dict()
    results = {}
    for variant in args.variants:
        net = CSNN(args.T, args.channels)
        net.load_state_dict(init)
        if variant == "channels_last":
            net = net.to(memory_format=torch.channels_last)
        model = torch.compile(net) if variant == "compile" else net
        results[variant] = run_epoch(f"spikeforge {variant}", model, lambda net=net: sf_functional.reset_net(net),
                                     train, test, args, autocast=variant == "bf16",
                                     channels_last=variant == "channels_last")
    if not args.skip_spikingjelly:
        from spikingjelly.activation_based import functional as sj_functional

        sj = spikingjelly_csnn(args.T, args.channels)
        sj.load_state_dict(init)  # same keys: conv_fc.{0,1,4,5,9,11}.*
        theirs = run_epoch("spikingjelly", sj, lambda: sj_functional.reset_net(sj), train, test, args)
        for variant, ours in results.items():
            print(f"spikeforge {variant} / spikingjelly: train {ours['train_speed'] / theirs['train_speed']:.2f}x, "
                  f"test {ours['test_speed'] / theirs['test_speed']:.2f}x; epoch-1 test accuracy "
                  f"{ours['test_acc']:.2%} vs {theirs['test_acc']:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
