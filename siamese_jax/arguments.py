"""The command-line parser of the library's tools (predict, oneshot, export): argparse's, with a
bad argument answered in one ``error:`` line that names it and points at --help, instead of
argparse's usage block."""

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
  """An ``argparse.ArgumentParser`` whose errors are one line on stderr (exit 2). Its
  subcommands' parsers are of the same class (argparse makes them with ``type(self)``)."""

  def error(self, message: str):
    print(f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)",
          file=sys.stderr)
    sys.exit(2)
