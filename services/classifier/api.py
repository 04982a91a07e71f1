"""The classifier's HTTP routes: which model classifies the stream, and retrain it now (for
the whole fleet: the new version becomes the database's current one, and every instance
switches to it within its watch interval).

Every route needs an API key: ``read`` to see the model, ``model:write`` to replace it (a
retraining takes a core for seconds and changes every later classification).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from services.classifier.components import ClassifierComponents
from services.classifier.db.model_versions import LeaseLost
from services.classifier.live_model import RetrainInProgress
from shared.auth.dependencies import require_scope
from shared.auth.keys import Scope
from shared.service.components import components_dependency
from shared.service.problems import Problem, ProblemError

Components = Annotated[ClassifierComponents, Depends(components_dependency(ClassifierComponents))]

RETRY_AFTER_S = 10

_AUTH_PROBLEMS: dict[int | str, dict[str, object]] = {
    401: {"model": Problem, "description": "No valid API key"},
    403: {"model": Problem, "description": "The key lacks the scope"},
}

router = APIRouter(prefix="/v1", tags=["model"])


class ModelVersion(BaseModel):
    model_version: str = Field(description="The version this instance classifies with.")
    fleet_version: str | None = Field(
        default=None,
        description="The database's current version, which every instance serves within its "
        "watch interval (differs from model_version only while this instance switches).",
    )
    instance: str = Field(description="This instance, as it names itself in the fleet.")


@router.get(
    "/model",
    summary="The model version this instance classifies with, and the fleet's current one",
    dependencies=[Depends(require_scope(Scope.READ))],
    responses=_AUTH_PROBLEMS,
)
async def current_model(components: Components) -> ModelVersion:
    keeper = components.model
    return ModelVersion(
        model_version=keeper.current.version,
        fleet_version=await keeper.versions.current(),
        instance=keeper.holder,
    )


@router.post(
    "/retrain",
    summary="Train on the seed examples and people's labels now; the whole fleet then "
    "classifies with it",
    description="One retraining at a time across the fleet (a lease in the classifier "
    "database): while one runs on any instance, another call answers 409 with `Retry-After` "
    "rather than queueing a second.",
    dependencies=[Depends(require_scope(Scope.MODEL_WRITE))],
    responses={
        **_AUTH_PROBLEMS,
        409: {"model": Problem, "description": "A retraining is already running"},
    },
)
async def retrain(components: Components) -> ModelVersion:
    try:
        version = await components.model.retrain("command")
    except (RetrainInProgress, LeaseLost) as error:
        raise ProblemError(
            409,
            "Conflict",
            detail="A retraining is already running in the fleet; its version is live on "
            "every instance when it ends.",
            headers={"Retry-After": str(RETRY_AFTER_S)},
        ) from error
    return ModelVersion(
        model_version=version, fleet_version=version, instance=components.model.holder
    )
