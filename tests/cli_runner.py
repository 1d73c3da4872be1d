"""Run a command's main(argv) in-process the way a user's terminal would see it."""
import contextlib
import io
import traceback


def run_in_process(main, argv):
    """(exit status, stdout, stderr, uncaught exception text or None) of main(argv).

    stdout is strict UTF-8, as on a terminal that cannot show undecodable bytes.
    """
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace", write_through=True)
    rc, crash = None, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except BaseException:   # the point of the tests: anything escaping main() is a fault
            crash = traceback.format_exc(limit=-20)   # a RecursionError has 1,000 frames
    texts = [s.buffer.getvalue().decode("utf-8") for s in (out, err)]
    return rc, texts[0], texts[1], crash
