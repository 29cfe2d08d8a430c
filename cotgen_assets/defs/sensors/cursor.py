"""The sensor's memory between ticks, stored by Dagster as the sensor's cursor (a JSON string).

Per stage and scenario ("<stage>|<scenario>"): the submission whose results are handled, the
progress last reported, the submission said stale. Per launch, the runs requested so far (`Runs`),
kept apart for results runs, summarization catch-ups and fill rounds. Per scenario, the run of
rounds whose end was said. Each entry makes a decision happen once, so none may be lost when the
shape changes: a cursor of an earlier version is upgraded when read.
"""

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict

CURSOR_VERSION = 2
# Version 1 (no "version" key) kept every launch's runs in one "attempts" map, told apart by key.
V1_CATCH_UP_PREFIX = "summarization-catch-up|"
V1_ROUND_PREFIX = "round|"


class Runs(BaseModel):
    """The runs requested for one launch: its first attempt's run key and how many were asked for."""

    model_config = ConfigDict(extra="forbid")  # an entry this code does not know is an error, not lost

    key: str
    requested: int = 0
    done: bool = False  # nothing more will happen (catch-ups: succeeded, refused or given up, said once)


class SensorCursor(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[2] = CURSOR_VERSION
    # "<stage>|<scenario>" -> the storage id of the batch materialization whose results are handled
    handled: dict[str, int] = {}
    # "<stage>|<scenario>" -> [storage id, job state, requests done, jobs created, jobs done] last
    # observed on the batch asset (an older cursor's first three are read as they are)
    progress: dict[str, list[int | str]] = {}
    # "<stage>|<scenario>" -> the storage id of the submission reported stale
    stale_reported: dict[str, int] = {}
    results_runs: dict[str, Runs] = {}  # "<stage>|<scenario>" -> its results runs
    catch_up_runs: dict[str, Runs] = {}  # scenario -> its summarization catch-up runs
    round_runs: dict[str, Runs] = {}  # scenario -> the runs of its next fill round
    rounds_ended: dict[str, str] = {}  # scenario -> the run of rounds whose end was said

    @classmethod
    def read(cls, text: str | None) -> "SensorCursor":
        """The cursor Dagster stored (none yet: an empty one); a version 1 cursor is upgraded."""
        stored = json.loads(text) if text else {}
        return cls.model_validate(stored if "version" in stored else upgrade_v1(stored))

    def write(self) -> str:
        return self.model_dump_json()


def upgrade_v1(stored: dict) -> dict:
    """A cursor written before version 2: the same entries, its "attempts" split by kind of launch."""
    upgraded = {key: value for key, value in stored.items() if key != "attempts"}
    for slot, runs in stored.get("attempts", {}).items():
        if slot.startswith(V1_CATCH_UP_PREFIX):
            upgraded.setdefault("catch_up_runs", {})[slot.removeprefix(V1_CATCH_UP_PREFIX)] = runs
        elif slot.startswith(V1_ROUND_PREFIX):
            upgraded.setdefault("round_runs", {})[slot.removeprefix(V1_ROUND_PREFIX)] = runs
        else:
            upgraded.setdefault("results_runs", {})[slot] = runs
    return upgraded
