"""The argument parser every posttrain command shares: usage errors as one ``error:`` line."""

from __future__ import annotations

import argparse

EPILOG = "Config keys and their help: posttrain config. Docs: README.md."


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage errors as one ``error:`` line (like every other posttrain error), exit status 2; subcommands inherit
    the class. ``--help`` still prints the full usage."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")
