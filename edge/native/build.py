"""Compile edge/native/kernels.c into the shared library edge.native loads.

    python -m edge.native.build [--out PATH] [--cc CC]

Uses $CC, else ``cc``. The flags keep results identical across machines:
C99 without GNU extensions, -O2 but no -ffast-math and no -march=native, and
-ffp-contract=off so that a * b + c is never fused into one FMA (aarch64
compilers fuse by default, which would round differently from Python).
The same library serves every Python (it is plain C, loaded with ctypes).
"""
import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

from edge.native import LIBRARY_NAME, NativeError, library_path

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels.c")
FLAGS = ("-std=c99", "-pedantic", "-O2", "-fPIC", "-shared", "-ffp-contract=off", "-Wall")


def find_compiler(cc=None):
    """The compiler command (a list): ``cc``, else $CC, else ``cc``; None when it is not installed."""
    command = shlex.split(cc or os.environ.get("CC") or "cc")
    if not command or shutil.which(command[0]) is None:
        return None
    return command


def compile_command(compiler, out_path):
    return list(compiler) + list(FLAGS) + ["-o", out_path, SOURCE]


def build(out_path=None, cc=None):
    """Compile the library to ``out_path`` (default: next to the source) and return
    (path, command). Written to a temporary name first, so a process loading the
    library never sees half a file."""
    compiler = find_compiler(cc)
    if compiler is None:
        raise NativeError("no C compiler: %r is not on PATH; install gcc (apt-get install gcc libc6-dev) "
                          "or set CC" % (cc or os.environ.get("CC") or "cc"))
    out_path = os.path.abspath(out_path or library_path())
    folder = os.path.dirname(out_path)
    if not os.path.isdir(folder):
        os.makedirs(folder)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=folder)
    os.close(fd)
    command = compile_command(compiler, tmp)
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True)
        if done.returncode != 0:
            raise NativeError("compiling %s failed (exit %d):\n%s%s"
                              % (SOURCE, done.returncode, " ".join(command) + "\n", done.stdout))
        os.chmod(tmp, 0o755)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out_path, command


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m edge.native.build", description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="library path (default: edge/native/lib/%s)" % LIBRARY_NAME)
    parser.add_argument("--cc", help="compiler command (default: $CC, else cc)")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    compiler = find_compiler(args.cc)
    if compiler is None:
        print("edge.native.build: no C compiler found (%s); install gcc and libc6-dev or set CC. "
              "edge/ still works without the library, on its slower numpy path."
              % (args.cc or os.environ.get("CC") or "cc"), file=sys.stderr)
        return 2
    print(" ".join(compile_command(compiler, os.path.abspath(args.out or library_path()))))
    try:
        path, _ = build(args.out, args.cc)
    except NativeError as e:
        print("edge.native.build: %s" % e, file=sys.stderr)
        return 1
    print("built %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
