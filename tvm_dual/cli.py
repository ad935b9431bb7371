"""The `tvm-dual` command: one subcommand per job, each a pair of functions (arguments, run).

Add a subcommand: write `add_arguments(parser)` and `run(args, command) -> int` (in the module
that owns the logic), and add a Subcommand entry to SUBCOMMANDS. Errors print one line and exit
with status 1; --verbose shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Subcommand:
    name: str
    help: str
    description: str
    epilog: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, str], int]


def _bench() -> Subcommand:
    from .bench import command

    return Subcommand("bench", "benchmark tvm-dual against other engines", command.DESCRIPTION, command.EPILOG,
                      command.add_arguments, command.run)


def _tune() -> Subcommand:
    from .tuning import cli as tune

    doc = tune.__doc__.split("\n", 2)
    return Subcommand("tune", "tune dual kernels (or dense layers with MetaSchedule) for a target", doc[0], doc[2],
                      lambda parser: tune.build_parser(parser), lambda args, command: tune.run(args, command))


def _command(name: str, help: str) -> Callable[[], Subcommand]:
    """A subcommand whose module in tvm_dual.commands holds DESCRIPTION, EPILOG, add_arguments, run."""

    def make() -> Subcommand:
        module = importlib.import_module(f".commands.{name}", __package__)
        return Subcommand(name, help, module.DESCRIPTION, module.EPILOG, module.add_arguments, module.run)

    return make


SUBCOMMANDS: list[Callable[[], Subcommand]] = [
    _command("compile", "compile a PyTorch model into a dual-module shared library"),
    _command("eval", "compare a compiled library with its PyTorch model on data"),
    _command("report", "per-layer table and plot of a compiled library"),
    _bench,
    _tune,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tvm-dual",
        description="Dual-module inference for PyTorch models on x86 CPUs, compiled with Apache TVM.",
        epilog="examples:\n  tvm-dual compile mypkg.models:make_model -o model.so --ratio 0.5\n"
        "  tvm-dual eval model.so --model mypkg.models:make_model\n  tvm-dual report model.so --model mypkg.models:make_model\n"
        "  tvm-dual bench --smoke\n  tvm-dual tune --shapes linear --trials 64\n  tvm-dual COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for make in SUBCOMMANDS:
        spec = make()
        p = sub.add_parser(spec.name, help=spec.help, description=spec.description, epilog=spec.epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        # also accepted after the subcommand; SUPPRESS keeps a --verbose given before it
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
        spec.add_arguments(p)
        p.set_defaults(run=spec.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.run(args, "tvm-dual " + shlex.join(argv)) or 0)
    except KeyboardInterrupt:
        print(f"tvm-dual {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.verbose:
            traceback.print_exc()
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"tvm-dual {args.command}: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
