"""What a batch asks for, as one value: a batch asset fills it from its config, planning and the
request builders read it. One stage's settings travel together, so a new one (answers per
problem, ...) is one field here, not a parameter threaded through every function on the way."""

from dataclasses import dataclass

from cotgen_assets.core.planning import FILL, validate_job_settings, validate_max_tries, validate_summarize
from cotgen_assets.core.scenarios import Scenario


@dataclass(frozen=True, kw_only=True)
class Ask:
    """What both stages ask: which model, how hard it thinks, how often a problem is tried."""

    scenario: Scenario
    model: str
    thinking_level: str  # the thinking effort every request asks for (a level the model takes)
    max_tries: int  # asks per problem before it is given up
    max_requests_per_job: int  # larger submissions are split into several batch jobs
    answers_per_problem: int = 1  # answers wanted per problem; only 1 so far

    def validate(self, backend: str) -> None:
        """Refuse, before anything is read or written, settings no batch of `backend` could run."""
        if self.answers_per_problem != 1:
            raise ValueError(f"answers_per_problem must be 1 for now, got {self.answers_per_problem}")
        validate_job_settings(self.model, self.thinking_level, self.max_requests_per_job, backend)


@dataclass(frozen=True, kw_only=True)
class GenerationAsk(Ask):
    """A generation batch: `fill` tops up to `limit` good samples, `extend` asks `limit` new problems."""

    limit: int
    mode: str = FILL
    ask_enough: bool = (
        True  # fill: enough to reach `limit` at the estimated accuracy, else exactly the missing
    )


@dataclass(frozen=True, kw_only=True)
class SummarizationAsk(Ask):
    """A summarization batch: a draft of each CoT sample that lacks one."""

    summarize: str = "correct"  # which CoT samples get a draft: "correct" or "all"

    def validate(self, backend: str) -> None:
        validate_max_tries(self.max_tries)
        super().validate(backend)
        validate_summarize(self.summarize)
