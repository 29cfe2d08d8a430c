"""What a batch asks for, as one value: a batch asset fills it from its config, planning and the
request builders read it. One stage's settings travel together, so a new one (answers per
problem, ...) is one field here, not a parameter threaded through every function on the way."""

from dataclasses import dataclass

from cotgen_assets.core.planning import FILL, validate_job_settings, validate_max_tries, validate_summarize
from cotgen_assets.core.sample_keys import validate_samples_per_problem
from cotgen_assets.core.scenarios import Scenario


@dataclass(frozen=True, kw_only=True)
class Ask:
    """What both stages ask: which model, how hard it thinks, how often a problem is tried."""

    scenario: Scenario
    model: str
    thinking_level: str  # the thinking effort every request asks for (a level the model takes)
    max_tries: int  # asks per problem before it is given up
    max_requests_per_job: int  # larger submissions are split into several batch jobs

    def validate(self, backend: str) -> None:
        """Refuse, before anything is read or written, settings no batch of `backend` could run."""
        validate_job_settings(self.model, self.thinking_level, self.max_requests_per_job, backend)


@dataclass(frozen=True, kw_only=True)
class GenerationAsk(Ask):
    """A generation batch: `fill` tops up to `limit` good samples, `extend` asks `limit` new problems."""

    limit: int
    mode: str = FILL
    ask_enough: bool = (
        True  # fill: enough to reach `limit` at the estimated accuracy, else exactly the missing
    )
    samples_per_problem: int = 1  # answers asked of each new problem, k request lines in the same batch

    def validate(self, backend: str) -> None:
        validate_samples_per_problem(self.samples_per_problem)
        super().validate(backend)


@dataclass(frozen=True, kw_only=True)
class SummarizationAsk(Ask):
    """A summarization batch: a draft of each CoT sample that lacks one."""

    summarize: str = "correct"  # which CoT samples get a draft: "correct" or "all"

    def validate(self, backend: str) -> None:
        validate_max_tries(self.max_tries)
        super().validate(backend)
        validate_summarize(self.summarize)
