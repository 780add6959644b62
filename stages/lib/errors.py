"""What every command does with known failures: one line on stderr and exit status 1 (130 for Ctrl-C, 141 when
what reads its output stops reading)."""
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

from stages.lib import paths
from stages.lib.atomic import OUT_OF_SPACE, remove_dead_partials
from stages.lib.params import load_params
from stages.lib.quoting import shown

DEBUG_VARIABLE = "PIPELINE_DEBUG"  # set to 1 to see the full traceback
INTERRUPTED = 128 + 2  # the shell's status for a command that SIGINT (Ctrl-C) stopped
READER_GONE = 128 + 13  # and for one that SIGPIPE stopped: what it wrote to had been closed


@contextmanager
def one_line_errors():
    try:
        yield
        sys.stdout.flush()  # a reader that went away (`| head`) is met here, not at exit
    except BrokenPipeError:
        # Whatever read our output went away (`| head`): stop quietly, as the shell's own tools do. stdout then
        # points at /dev/null, so that flushing it at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(READER_GONE)
    except (ValueError, OSError) as error:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(error, FileNotFoundError) and paths.is_stage_output(error.filename):
            message = f"no {shown(Path(error.filename))}; run `dvc repro` first: it runs the stages before this one"
        if isinstance(error, OSError) and error.errno in OUT_OF_SPACE:
            message += "; free some space (or raise the file-size limit) and run again"
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        # Every output is written aside and renamed into place whole: a Ctrl-C leaves old outputs or new ones.
        print("error: interrupted; no output is left half-written: run it again to finish", file=sys.stderr)
        sys.exit(INTERRUPTED)


def run_stage(run) -> None:
    """A stage's main(): read params.yaml, clear what killed runs left among the outputs, run."""
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    with one_line_errors():
        params = load_params()
        for folder in paths.OUTPUT_FOLDERS:
            remove_dead_partials(folder)
        run(params)
