"""`cotgen`: small commands beside the Dagster UI.

cotgen cancel SCENARIO STAGE   cancel the stage's batch still in flight (the sensor then records it)
cotgen trace ID[#N]            everything about a problem's samples (or sample N): source row, batches, cost
cotgen status [SCENARIO ...]   per scenario and stage: job state, requests done, age, rounds, correct
                               samples vs limit, cost so far
"""

import argparse
import json
import os
import sys

from cotgen_assets.core.stages import STAGES, Stage, stage_named

CANCEL_ATTEMPTS = 3  # a person waits at the prompt: a few seconds of retries, not a minute


class ApiUnavailable(Exception):
    """The Gemini API failed for good (its message, the key scrubbed)."""


class Misconfigured(Exception):
    """This shell does not see the platform's Dagster home or data folder."""


START_SH_HOME = ".dagster_home"  # scripts/start.sh, run from the project: DAGSTER_HOME=$PWD/.dagster_home


def dagster_home(refused: str = "") -> str:
    """`DAGSTER_HOME`, else the home `scripts/start.sh` gives the platform when it runs from this folder
    (said on stderr); else Misconfigured, ending with `refused`."""
    home = os.environ.get("DAGSTER_HOME")
    if home:
        return home
    if os.path.isfile(os.path.join(START_SH_HOME, "dagster.yaml")):
        home = os.path.abspath(START_SH_HOME)
        print(
            f"cotgen: DAGSTER_HOME is not set: using {home}, the home scripts/start.sh gives the platform "
            "run from this folder",
            file=sys.stderr,
        )
        return home
    raise Misconfigured(
        "DAGSTER_HOME is not set: set it to the Dagster home the platform uses, or run cotgen from the "
        "project folder (where scripts/start.sh makes .dagster_home; this folder has none), so that cotgen "
        "sees what was submitted." + refused
    )


def cancel(scenario: str, stage: Stage) -> str:
    """Cancel every job of the stage's pending submission and drop its queued shards (never created);
    the sensor then ingests what finished."""
    import dagster as dg

    from cotgen_assets.backends.resource import GeminiError, gemini_from_env
    from cotgen_assets.core.queue import drop_queue
    from cotgen_assets.core.scenarios import get_scenario
    from cotgen_assets.core.storage import data_dir
    from cotgen_assets.defs.history import pending_submission, submitted_metadata, unsaved_results_message

    get_scenario(scenario)  # an unknown name is an error, not "nothing in flight"
    with dg.DagsterInstance.from_config(dagster_home(" Nothing was cancelled.")) as instance:
        try:
            submission = pending_submission(instance, scenario, stage)
        except FileNotFoundError:  # Dagster knows the batch; this folder's ./data does not hold it
            recorded = submitted_metadata(instance, scenario, stage)["submission_id"]
            raise Misconfigured(
                f"the {stage.name} batch of scenario {scenario!r} in flight (submission {recorded}) has no "
                f"files in COTGEN_DATA_DIR ({data_dir()}): run cotgen from the folder Dagster runs in, "
                "or set COTGEN_DATA_DIR to the data folder it uses. Nothing was cancelled."
            ) from None
        if submission is None:
            return f"no {stage.name} batch of scenario {scenario!r} is in flight: nothing to cancel"
        gemini = gemini_from_env()
        dropped = drop_queue(submission)
        try:
            names = [name for name in submission.batch_names if name]
            jobs = [gemini.get_batch(name, max_attempts=CANCEL_ATTEMPTS) for name in names]
        except GeminiError as error:
            raise ApiUnavailable(str(error)) from None
        live = [job.name for job in jobs if not job.done]
        if not live and not dropped:
            states = ", ".join(f"{j.name} ({j.state})" for j in jobs)
            return (
                "nothing to cancel: "
                + unsaved_results_message(submission, states)
                + end_rounds(instance, scenario, stage)
            )
    try:
        for name in live:
            gemini.cancel_batch(name)
    except GeminiError as error:
        raise ApiUnavailable(str(error)) from None
    return (
        f"cancelled {live}"
        + (f" and dropped {dropped} queued shard(s), never created," if dropped else "")
        + f" (submission {submission.submission_id}); "
        "batch_completion_sensor records the cancellation, keeps any finished results and ends an "
        "auto_fill run of rounds; "
        "materialize the batch asset again to resubmit what is missing"
    )


def end_rounds(instance, scenario: str, stage: Stage) -> str:
    """A cancel that came after the job ended still ends its auto_fill run of rounds (said as a
    sentence to append), since that is what the user asked; nothing else has a next round."""
    from cotgen_assets.defs.history import cancel_rounds, submitted_metadata

    batch = submitted_metadata(instance, scenario, stage) or {}
    if not batch.get("auto_fill"):
        return ""
    cancel_rounds(instance, batch["rounds_id"])
    return (
        f" Its auto_fill run of rounds ends once they are saved: no round {batch['round'] + 1} is asked; "
        f"to go on, materialize {stage.batch_asset}."
    )


def status(scenario_names: list[str]) -> str:
    """One screen: every scenario's (or the named ones') stages, read from Dagster, the data and the API."""
    import dagster as dg

    from cotgen_assets.backends.resource import gemini_from_env
    from cotgen_assets.core.scenarios import get_scenario, load_scenarios
    from cotgen_assets.defs.status import render, status_screen

    scenarios = [get_scenario(name) for name in scenario_names] or list(load_scenarios().values())
    with dg.DagsterInstance.from_config(dagster_home()) as instance:
        return render(status_screen(instance, gemini_from_env(), scenarios))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cotgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    cancel_parser = commands.add_parser("cancel", help="cancel a batch still in flight")
    cancel_parser.add_argument("scenario")
    cancel_parser.add_argument("stage", choices=[stage.name for stage in STAGES])
    trace_parser = commands.add_parser("trace", help="show the lineage of a problem's samples")
    trace_parser.add_argument(
        "id", help="a problem id for every sample, e.g. easy-17; ID#N for sample N: easy-17#2"
    )
    status_parser = commands.add_parser("status", help="where every scenario's batches are")
    status_parser.add_argument("scenario", nargs="*", help="only these scenarios")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "cancel":
            print(cancel(args.scenario, stage_named(args.stage)))
        elif args.command == "status":
            print(status(args.scenario))
        else:
            from cotgen_assets.publish.trace import trace  # reads files only: no Dagster, no Gemini SDK

            print(json.dumps(trace(args.id), indent=2, ensure_ascii=False))
    # an unknown id or scenario, a damaged file, the API down, a shell that does not see the platform
    except (LookupError, ValueError, ApiUnavailable, Misconfigured) as error:
        print(f"cotgen: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    return 0
