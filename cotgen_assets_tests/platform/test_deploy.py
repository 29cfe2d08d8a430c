"""The deployment files (Dockerfile, deploy/values.yaml, deploy/README.md), checked without Docker or a
cluster: what run pods get from the chart and dagster-k8s, and what the image must hold."""

import re
import shlex

import yaml

from cotgen_assets_tests.harness.dagster import ROOT

VALUES = ROOT / "deploy" / "values.yaml"
CHART_DAGSTER_HOME = "/opt/dagster/dagster_home"  # the chart's `global.dagsterHome` default
RUN_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "4Gi"}}


def deep_merge(onto: dict, other: dict) -> dict:
    """dagster-k8s's merge of k8s config: mappings merged key by key, the other side's values win."""
    merged = dict(onto)
    for key, value in other.items():
        both = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = deep_merge(merged[key], value) if both else value
    return merged


def run_pod_resources(values: dict) -> dict:
    """The resources of a run pod's container, as dagster-k8s builds them, lowest precedence first:
    the run launcher's (`resources`, then `runK8sConfig.containerConfig.resources`); then the code
    location's container context, where the chart puts the user deployment's `resources` when
    `includeConfigInLaunchedRuns` is on (its default); then a run's `dagster-k8s/config` tag."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    resources = deep_merge(launcher.get("resources") or {}, {})
    container = (launcher.get("runK8sConfig") or {}).get("containerConfig") or {}
    resources = deep_merge(resources, container.get("resources") or {})
    [deployment] = values["dagster-user-deployments"]["deployments"]
    if (deployment.get("includeConfigInLaunchedRuns") or {"enabled": True})["enabled"]:
        resources = deep_merge(resources, deployment.get("resources") or {})
    return resources


def test_run_pods_get_the_resources_written_for_runs():
    values = yaml.safe_load(VALUES.read_text())
    assert run_pod_resources(values) == RUN_RESOURCES
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    container = (launcher.get("runK8sConfig") or {}).get("containerConfig") or {}
    for lost in (launcher.get("resources"), container.get("resources")):
        assert lost in (None, RUN_RESOURCES), f"resources that no run pod gets: {lost}"


def dockerfile_steps() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [tuple(line.split(None, 1)) for line in lines]


def test_the_image_creates_dagster_home_and_gives_it_to_its_user():
    """Dagster writes to DAGSTER_HOME (telemetry, instance files): uid 10001 cannot create it under /opt."""
    steps = dockerfile_steps()
    env, user, created, owned = {}, None, set(), set()
    for instruction, arguments in steps:
        if instruction == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", arguments):
                env[name] = value
        elif instruction == "USER":
            user = arguments
        elif instruction == "RUN" and user is None:  # run as root, before the image drops to its user
            command = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), arguments)
            for part in re.split(r"&&|;", command):
                words = shlex.split(part)
                if words[:2] == ["mkdir", "-p"]:
                    created |= set(words[2:])
                elif words[:1] == ["chown"]:
                    owned |= {w for w in words[2:] if not w.startswith("-")}
    home = env.get("DAGSTER_HOME")
    assert home == CHART_DAGSTER_HOME, "the chart mounts the instance's dagster.yaml into its DAGSTER_HOME"
    assert user is not None and user != "root"
    assert home in created, "DAGSTER_HOME is created in the image"
    assert home in owned, "and owned by the user the image runs as"


def test_the_deploy_readme_names_the_iam_binding_and_the_offline_install():
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert "roles/iam.workloadIdentityUser" in readme, "the KSA must be allowed to act as the Google SA"
    assert "svc.id.goog[cotgen/cotgen-assets]" in readme, "for the service account values.yaml names"
    assert "--skip-schema-validation" in readme, "helm fetches the chart's schema references online"
