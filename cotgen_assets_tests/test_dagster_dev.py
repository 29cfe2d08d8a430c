"""The README's platform: `dagster dev` loads the code location from workspace.yaml."""

import pytest

from cotgen_assets_tests.dagster_harness import start_dagster_dev

pytestmark = pytest.mark.e2e


def test_dagster_dev_loads_the_code_location(tmp_path):
    dev = start_dagster_dev(tmp_path / "home", env={"COTGEN_DATA_DIR": str(tmp_path / "data")})
    try:
        assert dev.location_status() == {"cotgen_assets": "LOADED"}
        nodes = dev.graphql("{ assetNodes { assetKey { path } partitionKeys } }")["assetNodes"]
        by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
        assert by_key["source_problems"]["partitionKeys"] == ["easy", "medium", "hard"]
    finally:
        dev.stop()
