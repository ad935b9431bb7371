"""The `tvm-dual compile`, `eval` and `report` subcommands: one module each (arguments, run), wired
into the command by tvm_dual/cli.py; common.py holds what they share."""
