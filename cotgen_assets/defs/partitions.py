"""One partition per scenario of the scenarios file: adding a scenario adds a partition."""

import dagster as dg

from cotgen_assets.core.scenarios import load_scenarios

scenario_partitions = dg.StaticPartitionsDefinition(list(load_scenarios()))
