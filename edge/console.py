"""What every command line of the project shares: one-line argparse errors and printable text.

The trainer's CLI uses these too (trainer depends on edge, never the reverse).
"""
import argparse


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line naming the bad argument (the usage is behind --help).

    Subparsers are made with the parent's class, so every command's errors are one line too.
    """

    def error(self, message):
        self.exit(2, printable("%s: error: %s (see %s --help)\n" % (self.prog, one_line(message), self.prog)))


def one_line(text):
    """Text on one line: ONNX Runtime, YAML, JSON and OpenCV messages may span several."""
    return " ".join(str(text).split())


def printable(text):
    """Text any UTF-8 stream can take: undecodable file-name bytes (surrogate-escaped) shown as \\xNN."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte, e.g. from a JSON "\\ud800"
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
