"""``hfsm local ...`` sub-commands (filled in by the local harness)."""

from __future__ import annotations

import argparse


def add_local_commands(parser: argparse.ArgumentParser) -> None:
    parser.add_subparsers(dest="local_command", required=True)
