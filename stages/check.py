"""Stage 0: params.yaml checked whole, before DVC removes any other stage's outputs.

DVC deletes a stage's outputs just before running its command, and stops at the first stage that fails. Every
other stage depends on this one's output, so DVC runs it first: a bad value fails here, in well under a second,
with the last run's data, models and metrics untouched. The output's content never changes, so that a param
change reruns only the stages that read that param."""
from stages.lib import paths
from stages.lib.atomic import write_json
from stages.lib.errors import run_stage
from stages.lib.fast_exit import end_process
from stages.lib.params import Params


def run(params: Params) -> None:  # run_stage has loaded and checked params.yaml: nothing is left to do but say so
    write_json(paths.PARAMS_CHECKED, {"checked": "params.yaml"})


def main() -> None:
    run_stage(run)


if __name__ == "__main__":
    main()
    end_process()
