"""prefect.yaml: every deployment points at a real flow, with parameters that flow accepts."""

from __future__ import annotations

import importlib

import yaml
from prefect import Flow

from tests.conftest import ROOT


def deployments() -> list[dict[str, object]]:
    data = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    return list(data["deployments"])


class TestDeployments:
    def test_every_entrypoint_is_a_flow_and_its_parameters_validate(self) -> None:
        """`prefect deploy --all` would find each flow and accept each parameter set."""
        for deployment in deployments():
            path, _, name = str(deployment["entrypoint"]).partition(":")
            module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
            flow = getattr(module, name)
            assert isinstance(flow, Flow), deployment["name"]
            flow.validate_parameters(dict(deployment.get("parameters") or {}))  # type: ignore[call-overload]

    def test_each_phase_has_a_dry_by_default_deployment(self) -> None:
        """Four phase deployments of the one send-phase flow; none sends unless told to."""
        phases = {
            str(d["name"]): d["parameters"]["params"]  # type: ignore[index]
            for d in deployments()
            if str(d["entrypoint"]).startswith("flows/send_phase.py")
        }
        assert set(phases) == {"preview", "announcement", "deprecation", "sunset"}
        for name, params in phases.items():
            assert params == {"phase": name, "send": False}
