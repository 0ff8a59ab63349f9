"""The ``spikeforge`` command.

Each sub-command lives in the module that owns the feature; this file only knows their names, so
``spikeforge --help`` stays fast (nothing heavy is imported until a command runs). A command module
provides ``configure_parser(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("spikeforge.examples.demo", "train a spiking MLP on the bundled MNIST and write spike plots"),
    "classify": ("spikeforge.models.cli", "classify images with a zoo model (top-k ImageNet classes)"),
    "profile": ("spikeforge.models.cli", "count a zoo model's parameters and multiply-accumulates"),
    "energy": ("spikeforge.energy.cli", "write the energy card (MAC/AC estimate per layer) of a network on real data"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, just that command's module is imported (the others get a bare entry)."""
    parser = argparse.ArgumentParser(prog="spikeforge", description="spiking neural networks on PyTorch")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.set_defaults(_module=module_name, _command=name)
        if only is None or only == name:
            module = importlib.import_module(module_name)
            configure = getattr(module, f"configure_{name}_parser", None) or module.configure_parser
            configure(command_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser(only=chosen if chosen in COMMANDS else "")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(args._module)
    run = getattr(module, f"run_{args._command}", None) or module.run
    return int(run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
