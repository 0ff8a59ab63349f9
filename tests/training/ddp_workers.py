"""Code run inside the spawned processes of test_training_ddp.py (kept free of pytest so children start fast).

Every worker joins a gloo group through the same environment variables torchrun sets, runs a scenario and
saves what the test compares into ``results/rank{r}.pt`` (written by the test harness, not by the engine).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch

from spikeforge import functional, layer, neuron, surrogate
from spikeforge.training import MSERateLoss, Trainer, distributed, read_metrics
from spikeforge.training.tutorial_nets import LIFFCNet


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def direct_net(bn: bool) -> torch.nn.Module:
    """Linear [- BatchNorm1d] - LIF - Linear - LIF on T repeated copies of the input: no randomness."""
    torch.manual_seed(0)
    layers = [layer.Linear(20, 16)]
    if bn:
        layers.append(layer.BatchNorm1d(16))
    layers += [neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()), layer.Linear(16, 4),
               neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan())]
    net = torch.nn.Sequential(*layers)
    functional.set_step_mode(net, "m")
    functional.set_backend(net, "reference")  # plain torch: no kernel compilation in the children
    return net


def direct_forward(model, x):
    return model(x.unsqueeze(0).expand(4, *x.shape)).mean(0)


def direct_data():
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(64, 20, generator=gen) * 1.5
    y = torch.randint(0, 4, (64,), generator=gen)
    return (x[:48], y[:48]), (x[48:], y[48:])


def train_direct(bn: bool, sync_bn: bool, batch_size: int, out_dir=None) -> tuple[dict, list[dict]]:
    net = direct_net(bn)
    trainer = Trainer(net, torch.optim.SGD(net.parameters(), lr=0.5), MSERateLoss(), forward=direct_forward,
                      batch_size=batch_size, sync_bn=sync_bn, out_dir=out_dir, progress=False, log=lambda s: None)
    train, test = direct_data()
    history = trainer.fit(train, test, epochs=2)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}, history


def poisson_data():
    gen = torch.Generator().manual_seed(11)
    x = torch.randint(0, 256, (160, 1, 28, 28), dtype=torch.uint8, generator=gen)
    y = torch.randint(0, 10, (160,), generator=gen)
    return (x[:128], y[:128]), (x[128:], y[128:])


def poisson_trainer(out_dir) -> tuple[torch.nn.Module, Trainer]:
    torch.manual_seed(0)
    net = LIFFCNet(tau=2.0, dense=True)  # Poisson spikes drawn by torch, plain-torch LIF kernel
    functional.set_backend(net, "reference")
    trainer = Trainer(net, torch.optim.Adam(net.parameters(), lr=1e-2),
                      forward=lambda model, images: model.firing_rate(images, 4), batch_size=16, out_dir=out_dir,
                      progress=False, tensorboard=False, log=lambda s: None)
    return net, trainer


def scenario_equivalence(rank: int, tmp: Path) -> dict:
    out = {}
    for bn in (False, True):
        out[f"bn={bn}"] = train_direct(bn, sync_bn=bn, batch_size=8)
    # neuron state is not a DDP buffer and is never broadcast: each rank keeps the membranes of its own samples
    net = direct_net(False)
    ddp = distributed.wrap_ddp(net, "cpu")
    x = torch.full((3, 20), 0.3 + 0.4 * rank)
    ddp(x.unsqueeze(0).expand(4, *x.shape))
    out["buffers"] = [name for name, _ in ddp.named_buffers()]
    out["v"] = net[1].v.detach().clone()
    functional.reset_net(net)
    return out


def scenario_resume(rank: int, tmp: Path) -> dict:
    # rank 1 is pointed at folders of its own: they must stay absent, as only rank 0 writes
    def folder(name):
        return tmp / (name if rank == 0 else f"{name}_rank1")

    net, trainer = poisson_trainer(folder("straight"))
    straight = trainer.fit(*poisson_data(), epochs=3)
    straight_params = {k: v.clone() for k, v in net.state_dict().items()}

    net, trainer = poisson_trainer(folder("interrupted"))
    trainer.fit(*poisson_data(), epochs=1)
    distributed.barrier()  # rank 0 has written the checkpoint
    torch.manual_seed(1234 + rank)  # a restarted process: nothing left of the first run's RNG
    net, trainer = poisson_trainer(folder("interrupted"))
    resumed = trainer.fit(*poisson_data(), epochs=3, resume=tmp / "interrupted" / "checkpoint_latest.pth")
    return {"straight": straight, "resumed": resumed, "straight_params": straight_params,
            "resumed_params": {k: v.clone() for k, v in net.state_dict().items()},
            "file_records": read_metrics(tmp / "interrupted" / "metrics.jsonl") if rank == 0 else None}


def scenario_all(rank: int, tmp: Path) -> dict:
    """Both scenarios in one pair of processes (each spawn costs a torch import)."""
    return {"equivalence": scenario_equivalence(rank, tmp), "resume": scenario_resume(rank, tmp)}


SCENARIOS = {"equivalence": scenario_equivalence, "resume": scenario_resume, "all": scenario_all}


def worker(rank: int, world_size: int, port: int, scenario: str, tmp: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    tmp = Path(tmp)
    distributed.init_distributed("cpu")
    try:
        result = SCENARIOS[scenario](rank, tmp)
        results = tmp / "results"
        results.mkdir(exist_ok=True)
        torch.save(result, results / f"rank{rank}.pt")
    finally:
        distributed.cleanup()


def spawn(scenario: str, tmp: Path, world_size: int = 2) -> list[dict]:
    """Run ``scenario`` on ``world_size`` spawned CPU processes; their results in rank order."""
    import torch.multiprocessing as mp

    mp.start_processes(worker, args=(world_size, free_port(), scenario, str(tmp)), nprocs=world_size,
                       start_method="spawn")
    return [torch.load(tmp / "results" / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
