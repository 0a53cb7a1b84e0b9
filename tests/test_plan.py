"""The reconcile plan, the version policy and the version state machine, by tables (no OpenVINO, no server)."""

from __future__ import annotations

import itertools
from pathlib import Path

import configs
import pytest

from ovserve import plan, versions
from ovserve.config import All, Latest, ModelConfig, PipelineConfig, ServerConfig, Specific, parse_config
from ovserve.states import State, allowed, check, status
from ovserve.types import VersionStatus

A, L, F, E, U, S = State.AVAILABLE, State.LOADING, State.FAILED, State.END, State.UNLOADING, State.START


@pytest.mark.parametrize(
    ("policy", "found", "failed", "wanted"),
    [
        (Latest(), [1, 2, 3], [], [3]),
        (Latest(2), [1, 2, 3], [], [2, 3]),
        (Latest(), [1, 2, 3], [3], [2]),  # a broken latest gives way to the next older one
        (Latest(2), [1, 2, 3], [3, 2], [1]),
        (Latest(), [], [], []),
        (Specific((1, 3, 7)), [1, 2, 3], [], [1, 3]),
        (Specific((1, 3)), [1, 2, 3], [3], [1]),  # no replacement for a specific version
        (All(), [3, 1, 2], [2], [1, 3]),
    ],
)
def test_the_version_policy(policy: object, found: list[int], failed: list[int], wanted: list[int]) -> None:
    assert versions.select(policy, found, failed) == wanted  # type: ignore[arg-type]


def rows(**states: State) -> dict[int, plan.Row]:
    return {int(k[1:]): plan.Row(s) for k, s in states.items()}


@pytest.mark.parametrize(
    ("policy", "found", "known", "expected"),
    [
        # start-up: nothing known
        (Latest(), [1, 2], {}, plan.VersionPlan(load=(2,))),
        (All(), [1, 2], {}, plan.VersionPlan(load=(1, 2))),
        # a new version appears: it loads, the old one retires once it is in
        (Latest(), [1, 2], rows(v1=A), plan.VersionPlan(load=(2,), retire=(1,))),
        (Latest(), [1, 2], rows(v1=A, v2=A), plan.VersionPlan(keep=(2,), retire=(1,))),
        # the new one failed: the old one keeps serving, the failure is not retried
        (Latest(), [1, 2], rows(v1=A, v2=F), plan.VersionPlan(keep=(1,))),
        # a failed version that went away ends (and would load afresh if it came back)
        (Latest(), [1], rows(v1=A, v2=F), plan.VersionPlan(keep=(1,), drop=(2,))),
        # a version gone from disk retires; an ended one that is wanted again loads
        (All(), [2], rows(v1=A, v2=A), plan.VersionPlan(keep=(2,), retire=(1,))),
        (All(), [1, 2], rows(v1=E, v2=A), plan.VersionPlan(load=(1,), keep=(2,))),
        # one still unloading (requests hold it) is not serving: wanted again, it loads anew
        (All(), [1], rows(v1=U), plan.VersionPlan(load=(1,))),
        (Latest(), [1, 2], rows(v2=L), plan.VersionPlan(keep=(2,))),
        (Latest(), [1, 2], rows(v2=S), plan.VersionPlan(keep=(2,))),
    ],
)
def test_the_version_plan(
    policy: object, found: list[int], known: dict[int, plan.Row], expected: plan.VersionPlan
) -> None:
    assert plan.plan_versions(policy, dict.fromkeys(found), known) == expected  # type: ignore[arg-type]


def test_a_failed_s3_version_whose_objects_changed_is_dropped_to_load_again() -> None:
    before, after = (("1/model.xml", 10, "a"),), (("1/model.xml", 12, "b"),)
    known = {1: plan.Row(F, before)}
    assert plan.plan_versions(Latest(), {1: before}, known) == plan.VersionPlan()
    assert plan.plan_versions(Latest(), {1: after}, known) == plan.VersionPlan(load=(1,), drop=(1,))


def model(name: str, **settings: object) -> ModelConfig:
    return ModelConfig(name, Path(name), **settings)  # type: ignore[arg-type]


def uses(name: str, *models: str) -> PipelineConfig:
    nodes = [configs.node(m, {"x": "request.x"}, ["y"], model=m) for m in models]
    document = configs.document(pipelines=[configs.pipeline(name, ["x"], nodes, {"y": f"{models[0]}.y"})])
    return parse_config(document, Path(".")).pipelines[0]


def test_the_model_plan() -> None:
    served = {"a": model("a"), "b": model("b"), "gone": model("gone")}
    config = ServerConfig(models=(model("a"), model("b", nireq=2), model("new")))
    assert plan.plan_models(config, served) == plan.ModelPlan(load=("b", "new"), keep=("a",), retire=("gone",))
    assert plan.plan_models(config, {}) == plan.ModelPlan(load=("a", "b", "new"))  # start-up


@pytest.mark.parametrize(
    ("old", "new", "in_pipeline", "why"),
    [
        (model("m"), model("m", stateful=True), False, "Model type cannot be changed after it is loaded (stateful: "
                                                       "False)"),
        (model("m"), model("m", batch_size="auto"), True, "Requested dynamic parameters but model is used in "
                                                          "pipeline"),
        (model("m"), model("m", shape="auto"), True, "Requested dynamic parameters but model is used in pipeline"),
        (model("m"), model("m", batch_size="auto"), False, None),  # no pipeline uses it: applied
        (model("m", shape="auto"), model("m", shape="auto", nireq=2), True, None),  # it was dynamic already
    ],
)  # fmt: skip
def test_changes_a_reload_refuses(old: ModelConfig, new: ModelConfig, in_pipeline: bool, why: str | None) -> None:
    pipelines = (uses("p", "m"),) if in_pipeline else ()
    planned = plan.plan_models(ServerConfig(models=(new,), pipelines=pipelines), {"m": old})
    if why is None:
        assert planned == plan.ModelPlan(load=("m",))
    else:
        assert planned == plan.ModelPlan(keep=("m",), refused={"m": why})


def test_the_pipeline_plan() -> None:
    p, q, changed = uses("p", "a"), uses("q", "a"), uses("q", "a", "b")
    config = ServerConfig(pipelines=(p, changed, uses("new", "a")))
    served = {"p": p, "q": q, "gone": uses("gone", "a")}
    expected = plan.PipelinePlan({"q": "changed", "new": "new"}, ("p",), ("gone",))
    assert plan.plan_pipelines(config, served, False, False) == expected
    rebuilt = plan.plan_pipelines(ServerConfig(pipelines=(p,)), {"p": p}, True, False)
    assert rebuilt == plan.PipelinePlan({"p": "models changed"})
    assert plan.plan_pipelines(ServerConfig(pipelines=(p,)), {"p": p}, False, True).build == {"p": "code changed"}
    assert plan.plan_pipelines(ServerConfig(pipelines=(p,)), {}, False, False).build == {"p": "new"}  # start-up


def test_the_transitions_of_a_version() -> None:
    path = [S, L, A, U, E]
    assert all(allowed(a, b) for a, b in itertools.pairwise(path))
    assert allowed(L, F) and allowed(F, E) and allowed(A, E) and allowed(S, E)
    for before, after in [(E, L), (E, A), (F, A), (F, L), (A, L), (U, A), (S, A)]:
        assert not allowed(before, after)
        with pytest.raises(AssertionError, match=f"{before.name} -> {after.name}"):
            check(before, after, "model m version 1")


def test_how_states_show_on_the_wire() -> None:
    assert status(1, A) == VersionStatus(1, "AVAILABLE")
    assert status(2, U) == VersionStatus(2, "UNLOADING")
    assert status(3, F, "no model file") == VersionStatus(3, "LOADING", "UNKNOWN", "no model file")
    assert status(1, F, "bad node", "FAILED_PRECONDITION") == VersionStatus(1, "LOADING", "FAILED_PRECONDITION",
                                                                             "bad node")  # fmt: skip
