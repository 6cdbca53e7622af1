"""The CRD is generated from the models and cannot drift; the API surface users see is complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from canopy_operator.api import PromptExperimentSpec
from canopy_operator.gen.crds import CRD_FILE, CRDGenerationError, build_crd, model_schema, render_crd

ROOT = Path(__file__).resolve().parents[2]


def _schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, node)]
    for name, child in node.get("properties", {}).items():
        out.extend(_walk(child, f"{path}.{name}"))
    if "items" in node:
        out.extend(_walk(node["items"], f"{path}[]"))
    return out


def test_committed_crd_matches_models_else_run_make_crds() -> None:
    committed = (ROOT / "crds" / CRD_FILE).read_text(encoding="utf-8")
    assert committed == render_crd(), "crds/ is out of date with the pydantic models: run make crds"


def test_rendering_is_deterministic() -> None:
    assert render_crd() == render_crd()


def test_every_field_has_a_type_and_description() -> None:
    for path, node in _walk(_schema()["properties"]["spec"]) + _walk(_schema()["properties"]["status"]):
        assert node.get("type"), f"{path} has no type"
        assert node.get("description"), f"{path} has no description"


def test_names_group_and_short_name_are_the_public_api() -> None:
    crd = build_crd()
    assert crd["metadata"]["name"] == "promptexperiments.canopy.genaiops.io"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "PromptExperiment",
        "promptexperiments",
        ["pexp"],
    )
    assert crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}


def test_printer_columns_show_phase_votes_winner_pvalue_and_age() -> None:
    columns = {c["name"]: c["jsonPath"] for c in build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase"
    assert columns["Challenger"] == ".status.votes.challengerWins"
    assert columns["Champion"] == ".status.votes.championWins"
    assert columns["Winner"] == ".status.winner"
    assert columns["P-Value"] == ".status.evidence.pValue"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_validation_rules_reach_the_schema() -> None:
    spec = _schema()["properties"]["spec"]
    analysis = spec["properties"]["analysis"]["properties"]
    assert analysis["alpha"]["minimum"] == 0
    assert analysis["alpha"]["exclusiveMinimum"] is True
    assert analysis["alpha"]["maximum"] == 0.5
    assert analysis["tau"]["exclusiveMinimum"] is True
    assert analysis["minVotes"]["minimum"] == 1
    assert analysis["method"]["enum"] == ["msprt", "bayes-factor", "one-sided", "betting"]
    rules = [r["rule"] for r in spec["properties"]["analysis"]["x-kubernetes-validations"]]
    assert "self.maxVotes >= self.minVotes" in rules
    assert any("duration('5s')" in r for r in rules)
    assert any("has(self.git)" in r["rule"] for r in spec["properties"]["delivery"]["x-kubernetes-validations"])
    assert any("challenger.prompt" in r["rule"] for r in spec["x-kubernetes-validations"])
    assert spec["properties"]["challenger"]["properties"]["prompt"]["minLength"] == 1


def test_omitted_blocks_default_to_their_field_defaults() -> None:
    spec = _schema()["properties"]["spec"]["properties"]
    assert spec["analysis"]["default"]["method"] == "betting"
    assert spec["delivery"]["default"]["configMap"]["name"] == "canopy-config"
    assert "default" not in spec["delivery"]["properties"]["git"], "git must stay absent unless given"


def test_status_conditions_are_a_map_list_keyed_by_type() -> None:
    conditions = _schema()["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]


def test_generator_refuses_a_union_a_crd_cannot_express() -> None:
    class Bad(BaseModel):
        value: int | str
        """Either."""

    with pytest.raises(CRDGenerationError, match="union"):
        model_schema(Bad, "bad")


@pytest.mark.parametrize("sample", sorted((ROOT / "manifests" / "samples").glob("*.yaml")), ids=lambda p: p.name)
def test_samples_validate_against_the_models(sample: Path) -> None:
    doc = yaml.safe_load(sample.read_text(encoding="utf-8"))
    assert doc["apiVersion"] == "canopy.genaiops.io/v1alpha1"
    assert doc["kind"] == "PromptExperiment"
    PromptExperimentSpec.model_validate(doc["spec"])


def test_models_reject_what_the_crd_rejects() -> None:
    base: dict[str, Any] = {"challenger": {"prompt": "b"}}
    bad = [
        ({"analysis": {"alpha": 0}}, "alpha"),
        ({"analysis": {"minVotes": 10, "maxVotes": 5}}, "maxVotes"),
        ({"analysis": {"interval": "4s"}}, "interval"),
        ({"delivery": {"mode": "Git"}}, "delivery.git"),
        ({"champion": {"prompt": "b"}}, "differ"),
    ]
    for extra, needle in bad:
        with pytest.raises(ValidationError, match=needle):
            PromptExperimentSpec.model_validate({**base, **extra})


@pytest.mark.parametrize(
    ("field", "spec"),
    [
        ("spec.challenger.prompt", {"challenger": {"prompt": " \n\t"}}),
        ("spec.champion.prompt", {"champion": {"prompt": "\r\n"}, "challenger": {"prompt": "Be brief."}}),
    ],
)
def test_a_prompt_of_only_whitespace_is_refused_naming_the_field(field: str, spec: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match=f"{field} must contain a non-whitespace character"):
        PromptExperimentSpec.model_validate(spec)
