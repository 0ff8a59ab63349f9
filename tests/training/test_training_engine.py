"""The engine: exact resume, AMP, clipping, per-batch reset and its warning, data forms, checkpoint contents."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from spikeforge import functional, layer, neuron, surrogate
from spikeforge.training import (
    CrossEntropyLoss,
    MSERateLoss,
    TensorBatches,
    Trainer,
    WarmupCosine,
    fit_classifier,
    load_checkpoint,
    read_metrics,
)
from spikeforge.training.tutorial_nets import LIFFCNet


def _without_speed(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.endswith("_speed")}


def _data():
    gen = torch.Generator().manual_seed(123)
    x = torch.randint(0, 256, (192, 1, 28, 28), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (192,), generator=gen)
    return (x[:128], y[:128]), (x[128:], y[128:])


def _poisson_trainer(out_dir, interrupt_at=None, schedule=False, **kwargs):
    """LIFFCNet on random images, Poisson-coded (every batch draws from torch's RNG)."""
    torch.manual_seed(0)
    net = LIFFCNet(tau=2.0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    calls = {"n": 0}

    def forward(model, images):
        calls["n"] += 1
        if interrupt_at is not None and calls["n"] == interrupt_at:
            raise KeyboardInterrupt
        return model.firing_rate(images, 6)

    trainer = Trainer(net, optimizer, forward=forward, batch_size=32, out_dir=out_dir, progress=False,
                      tensorboard=False, log=lambda s: None,
                      schedule=WarmupCosine(optimizer, total_steps=12, warmup_steps=2) if schedule else None,
                      **kwargs)
    return net, trainer


def test_resume_after_epoch_one_gives_the_same_epoch_two_and_parameters(tmp_path):
    net_a, trainer = _poisson_trainer(tmp_path / "a", schedule=True)
    straight = trainer.fit(*_data(), epochs=3)
    _, trainer = _poisson_trainer(tmp_path / "b", schedule=True)
    trainer.fit(*_data(), epochs=1)  # the run stops after epoch 0 ...
    torch.manual_seed(999)  # ... and a new process starts with another RNG state
    net_b, trainer = _poisson_trainer(tmp_path / "b", schedule=True)
    resumed = trainer.fit(*_data(), epochs=3, resume=tmp_path / "b" / "checkpoint_latest.pth")
    assert [r["epoch"] for r in resumed] == [1, 2]
    assert [_without_speed(r) for r in resumed] == [_without_speed(r) for r in straight[1:]]
    for key, value in net_a.state_dict().items():
        assert torch.equal(value, net_b.state_dict()[key]), key
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(trainer.schedule.lr_at(12)[0])
    assert [r["epoch"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")] == [0, 1, 2]  # one curve


def test_ctrl_c_mid_epoch_resumes_on_the_same_curve(tmp_path):
    _, trainer = _poisson_trainer(tmp_path / "a")
    straight = trainer.fit(*_data(), epochs=3)
    _, trainer = _poisson_trainer(tmp_path / "b", interrupt_at=6 + 3)  # 4 train + 2 test calls per epoch
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(*_data(), epochs=3)
    latest = tmp_path / "b" / "checkpoint_latest.pth"
    assert load_checkpoint(latest)["epoch"] == 0
    _, trainer = _poisson_trainer(tmp_path / "b")
    resumed = trainer.fit(*_data(), epochs=3, resume=latest)
    assert [_without_speed(r) for r in resumed] == [_without_speed(r) for r in straight[1:]]


def test_ctrl_c_in_the_first_epoch_leaves_a_resumable_checkpoint(tmp_path):
    _, trainer = _poisson_trainer(tmp_path, interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(*_data(), epochs=2)
    assert load_checkpoint(tmp_path / "checkpoint_latest.pth")["epoch"] == -1
    _, trainer = _poisson_trainer(tmp_path)
    resumed = trainer.fit(*_data(), epochs=2, resume=tmp_path / "checkpoint_latest.pth")
    _, trainer = _poisson_trainer(tmp_path / "ref")
    assert [_without_speed(r) for r in resumed] == [_without_speed(r) for r in trainer.fit(*_data(), epochs=2)]


def test_checkpoint_is_plain_data_with_args_as_a_dict(tmp_path):
    import argparse

    args = argparse.Namespace(lr=0.01, T=6, out_dir=tmp_path)
    _, trainer = _poisson_trainer(tmp_path, args=args)
    history = trainer.fit(*_data(), epochs=2)
    state = load_checkpoint(tmp_path / "checkpoint_latest.pth")  # weights_only=True inside
    assert state["args"] == {"lr": 0.01, "T": 6, "out_dir": str(tmp_path)}
    assert state["epoch"] == 1 and state["world_size"] == 1 and state["global_step"] == 8
    assert set(state["net"]) == {"layer.1.weight"}
    best = max(range(2), key=lambda e: history[e]["test_acc"])
    assert load_checkpoint(tmp_path / "checkpoint_max.pth")["epoch"] == best
    assert (tmp_path / "args.txt").read_text().startswith("Namespace(lr=0.01")


def test_bf16_autocast_on_cpu_trains(tmp_path):
    seen = {}

    def forward(model, images):
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        seen["dtype"] = model.layer[1](images.float().flatten(1)[:1] / 255).dtype
        return model.firing_rate(images, 4)

    torch.manual_seed(0)
    net = LIFFCNet(tau=2.0, dense=True)
    trainer = Trainer(net, torch.optim.Adam(net.parameters(), lr=1e-2), forward=forward, amp=True, batch_size=32,
                      progress=False, log=lambda s: None)
    assert trainer.amp.dtype == torch.bfloat16 and trainer.amp.scaler is None
    record = trainer.fit(*_data(), epochs=1)[0]
    assert seen == {"autocast": True, "dtype": torch.bfloat16}
    assert torch.isfinite(torch.tensor(record["train_loss"])) and 0 <= record["test_acc"] <= 1


def test_gradient_clipping_bounds_the_step():
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    before = [p.detach().clone() for p in net.parameters()]
    x, y = torch.randn(16, 4) * 100, torch.randint(0, 3, (16,))
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=1.0), CrossEntropyLoss(), batch_size=16,
                      clip_grad_norm=0.01, progress=False, log=lambda s: None)
    trainer.fit((x, y), epochs=1)
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(net.parameters(), before)])
    assert step.norm().item() == pytest.approx(0.01, rel=1e-4)  # lr 1 x clipped norm


def _lif_net():
    net = torch.nn.Sequential(layer.Linear(5, 3), neuron.LIFNode(surrogate_function=surrogate.ATan()))
    functional.set_step_mode(net, "m")
    return net


def _seq_forward(model, x):
    return model(x.unsqueeze(0).expand(3, *x.shape)).mean(0)


def test_state_is_reset_every_batch_and_a_carried_state_warns_once():
    torch.manual_seed(0)
    x, y = torch.rand(32, 5) * 3, torch.randint(0, 3, (32,))
    net = _lif_net()
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), forward=_seq_forward, batch_size=8,
                      progress=False, log=lambda s: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer.fit((x, y), (x, y), epochs=2)  # the engine resets: no warning
    assert net[1].v == 0.0

    _seq_forward(net, x[:8])  # state left over from a forward outside the engine
    with pytest.warns(RuntimeWarning, match=r"neuron state 1\.v was carried over") as caught:
        trainer.fit((x, y), epochs=3)
    assert len([w for w in caught if "carried over" in str(w.message)]) == 1

    net = _lif_net()

    def detached_forward(model, x):  # state carried on purpose, cut from the previous batch's graph
        functional.detach_net(model)
        return _seq_forward(model, x)

    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), forward=detached_forward, batch_size=8,
                      reset=False, progress=False, log=lambda s: None)
    with pytest.warns(RuntimeWarning, match="reset_net") as caught:
        trainer.fit((x[:24], y[:24]), epochs=2)  # 6 batches, every one after the first carries state
    assert len([w for w in caught if "carried over" in str(w.message)]) == 1
    assert isinstance(net[1].v, torch.Tensor)


def test_dataloader_input_and_set_epoch():
    epochs = []

    class Sampler(torch.utils.data.Sampler):
        def __init__(self, n):
            self.n = n

        def set_epoch(self, epoch):
            epochs.append(epoch)

        def __iter__(self):
            return iter(range(self.n))

        def __len__(self):
            return self.n

    torch.manual_seed(0)
    x, y = torch.randn(40, 4), torch.randint(0, 2, (40,))
    loader = DataLoader(TensorDataset(x, y), batch_size=10, sampler=Sampler(40))
    net = torch.nn.Linear(4, 2)
    history = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.1), CrossEntropyLoss(), progress=False,
                      log=lambda s: None).fit(loader, loader, epochs=3)
    assert epochs == [0, 1, 2] and [r["epoch"] for r in history] == [0, 1, 2]
    assert history[0]["test_acc"] * 40 == round(history[0]["test_acc"] * 40)


def test_tensor_batches_shard_a_global_batch_over_ranks():
    x = torch.arange(50)
    one = list(TensorBatches((x, x), batch_size=12, shuffle=True, drop_last=True, rank=0, world_size=1, seed=3))
    shards = [list(TensorBatches((x, x), batch_size=4, shuffle=True, drop_last=True, rank=r, world_size=3, seed=3))
              for r in range(3)]
    assert len(one) == 4 and all(len(s) == 4 for s in shards)
    for k, (batch, _) in enumerate(one):
        assert torch.equal(torch.cat([shards[r][k][0] for r in range(3)]), batch)
    # evaluation order (no shuffle, no drop): the last global batch is split as far as it goes
    tails = [list(TensorBatches((x,) * 2, 4, rank=r, world_size=3)) for r in range(3)]
    assert [len(t) for t in tails] == [5, 4, 4]  # 50 = 4 x 12 + 2: the last 2 go to rank 0
    assert torch.equal(torch.sort(torch.cat([b[0] for t in tails for b in t])).values, x)
    epoch0 = [b[0] for b in TensorBatches((x, x), 10, shuffle=True, seed=3)]
    batches = TensorBatches((x, x), 10, shuffle=True, seed=3)
    batches.set_epoch(1)
    assert not torch.equal(torch.cat(epoch0), torch.cat([b[0] for b in batches]))


def test_fit_classifier_keeps_the_earlier_api(tmp_path):
    torch.manual_seed(0)
    net = LIFFCNet(tau=2.0)
    history = fit_classifier(net=net, forward=lambda images: net.firing_rate(images, 4),
                             optimizer=torch.optim.Adam(net.parameters(), lr=1e-2), train_data=_data()[0],
                             test_data=_data()[1], batch_size=32, epochs=1, out_dir=tmp_path, progress=False,
                             tensorboard=False, log=lambda s: None)
    assert [r["epoch"] for r in history] == [0] and isinstance(MSERateLoss()(torch.zeros(1, 10),
                                                                              torch.zeros(1, dtype=torch.long)),
                                                                torch.Tensor)
    assert (tmp_path / "checkpoint_latest.pth").is_file()
