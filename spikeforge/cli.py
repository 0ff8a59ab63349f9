"""The ``spikeforge`` command.

Each sub-command lives in the module that owns the feature; this file only knows their names, so
``spikeforge --help`` stays fast (nothing heavy is imported until a command runs). A command module
provides ``configure_parser(parser)`` and ``run(args) -> int``. Every command runs under
:func:`spikeforge.errors.run_cli`: an error is one line on stderr and a non-zero exit status, ``--debug`` (or
``SPIKEFORGE_DEBUG=1``) shows its traceback.
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


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("spikeforge")
    except (ImportError, PackageNotFoundError):  # a source tree that is not installed
        return "unknown"


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``only``, just that command's module is imported (the others get a bare entry)."""
    parser = argparse.ArgumentParser(prog="spikeforge", description="spiking neural networks on PyTorch")
    parser.add_argument("--version", action="version", version=f"spikeforge {_version()}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (also after the command; or SPIKEFORGE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.set_defaults(_module=module_name, _command=name)
        if only is None or only == name:
            module = importlib.import_module(module_name)
            configure = getattr(module, f"configure_{name}_parser", None) or module.configure_parser
            configure(command_parser)
    return parser


def _main(argv: list[str]) -> int:
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser(only=chosen if chosen in COMMANDS else "")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args._argv = argv[argv.index(args.command) + 1:]  # the command's own flags (for "continue with ..." hints)
    module = importlib.import_module(args._module)
    run = getattr(module, f"run_{args._command}", None) or module.run
    return int(run(args) or 0)


def main(argv: list[str] | None = None) -> int:
    from .errors import run_cli

    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    prog = f"spikeforge {chosen}" if chosen in COMMANDS else "spikeforge"
    return run_cli(_main, argv, prog=prog)


if __name__ == "__main__":
    sys.exit(main())
