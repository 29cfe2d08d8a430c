"""Everything Dagster: assets, checks, jobs, partitions, sensors, instance queries and locks."""
