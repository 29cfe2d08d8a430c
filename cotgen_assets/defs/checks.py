"""Quality verdicts (plain, from `quality`) as Dagster asset checks on the samples assets."""

import dagster as dg

from cotgen_assets.core.quality import ERROR, VERDICTS, SampleStats, Verdict, gate_names

SEVERITY = {ERROR: dg.AssetCheckSeverity.ERROR}


def check_specs(stage: str, asset: str) -> list[dg.AssetCheckSpec]:
    """One spec per gate of the stage, named as the gates name themselves."""
    return [dg.AssetCheckSpec(name, asset=asset) for name in gate_names(stage)]


def check_result(verdict: Verdict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=verdict.name,
        passed=verdict.passed,
        severity=SEVERITY.get(verdict.severity, dg.AssetCheckSeverity.WARN),
        metadata=verdict.numbers,
        description=verdict.description,
    )


def check_results(stats: SampleStats) -> list[dg.AssetCheckResult]:
    return [check_result(verdict) for verdict in VERDICTS[stats.stage](stats)]
