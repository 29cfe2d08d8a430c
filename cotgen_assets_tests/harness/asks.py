"""A generation ask as `generation_batch` makes it, for the tests (and benchmarks) that plan and
prepare a submission with the plain functions."""

from cotgen_assets.core.ask import GenerationAsk
from cotgen_assets.core.scenarios import get_scenario
from cotgen_assets_tests.harness.results import MODEL


def generation_ask(scenario: str = "easy", **fields) -> GenerationAsk:
    """An ask of `scenario` with the asset's model, thinking level and tries; `fields` set the rest
    (`limit` at least) or override those."""
    defaults = dict(model=MODEL, thinking_level="high", max_tries=3, max_requests_per_job=10_000)
    return GenerationAsk(scenario=get_scenario(scenario), **(defaults | fields))
