"""`python -m benchmarks COMMAND ...`: `run` is the whole suite for a bundle; the others are its parts.

    python -m benchmarks run --bundle DIR --data data.yaml --out DIR [...]   (benchmarks.suite)
    python -m benchmarks accuracy|energy|pipeline|daemon ...                 (each part alone)

`python -m benchmarks.<part>` keeps working; this only dispatches to the same main(argv).
"""
import importlib
import sys

COMMANDS = {"run": "benchmarks.suite", "accuracy": "benchmarks.accuracy", "energy": "benchmarks.energy",
            "pipeline": "benchmarks.pipeline", "daemon": "benchmarks.daemon"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        got = "no command" if not argv else "unknown command %r" % argv[0]
        print("usage: python -m benchmarks {%s} ...: %s" % (",".join(COMMANDS), got), file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
