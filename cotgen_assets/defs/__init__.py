"""Everything Dagster: the assets by family, checks, jobs, partitions, resources, sensors, and what the
instance holds for the project (the submissions' history, the locks)."""
