"""What every stage's main() does: read params.yaml, run, turn known failures into one line."""
import logging
import os
import sys

from stages.params import load_params

DEBUG_VARIABLE = "PIPELINE_DEBUG"  # set to 1 to see the full traceback


def run_stage(run) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        run(load_params())
    except (ValueError, OSError) as error:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"error: {message}", file=sys.stderr)
        sys.exit(1)
