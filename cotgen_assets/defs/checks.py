"""Quality verdicts (plain, from `quality`) as Dagster asset checks on the samples assets."""

import dagster as dg

from cotgen_assets.core.quality import ERROR, SampleStats, Verdict, gate_names, verdicts
from cotgen_assets.core.stages import Stage

SEVERITY = {ERROR: dg.AssetCheckSeverity.ERROR}


def gate_check_specs(stage: Stage) -> list[dg.AssetCheckSpec]:
    """One check per gate of the stage on its samples asset, named as the gates name themselves."""
    return [dg.AssetCheckSpec(name, asset=stage.samples_asset) for name in gate_names(stage)]


def gate_checks(stats: SampleStats) -> list[dg.AssetCheckResult]:
    """The stage's gates over a samples file, as the results of its checks."""
    return [_check_result(verdict) for verdict in verdicts(stats)]


def _check_result(verdict: Verdict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=verdict.name,
        passed=verdict.passed,
        severity=SEVERITY.get(verdict.severity, dg.AssetCheckSeverity.WARN),
        metadata=verdict.numbers,
        description=verdict.description,
    )
