"""Running `trainer active ...` in-process for tests, with its output captured."""
import argparse
import io

from trainer.active.commands import add_active_parser, run_active


def parse(argv):
    parser = argparse.ArgumentParser(prog="reefwatch-train")
    add_active_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def run(argv):
    stream = io.StringIO()
    return run_active(parse(argv), stream=stream), stream.getvalue()
