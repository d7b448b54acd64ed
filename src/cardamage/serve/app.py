"""The HTTP API and the web page, over one shared, micro-batched model.

Errors, per file or per request
-------------------------------
A request is refused as a whole (a 4xx ``{"error": {"code", "message"}}``) when nothing in it
can be answered: no or wrong API key (401), body or a file over its size limit or too many files
(413), not multipart (415), no ``files`` field (422), malformed multipart (400), explain asked of
a server without heatmaps (501) or of ``/v1/claims`` (422: heatmaps are per photo, from
``/v1/predict``), model not ready or queue full (503, with ``Retry-After``).

A file that is not a usable image (empty, not an image, a format not accepted, too many pixels,
corrupt or truncated) is refused on its own: the answer is 200 and that file's result carries
``error`` instead of ``prediction``, so one bad photo in a batch does not cost the others. When
*every* file of a request is refused, the request fails with 415 (all of them not images or not
an accepted format) or 422 (otherwise), and ``error.files`` lists each file's reason.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated, TypeVar

import anyio
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Security
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool

from cardamage import __version__
from cardamage.data.images import Photo
from cardamage.errors import CardamageError
from cardamage.inference.claims import DEFAULT_RULE, ClaimPhoto, NoEvidence, assess_claim
from cardamage.inference.photo_index.check import SeenBefore
from cardamage.inference.predictor import Prediction, Predictor
from cardamage.serve.decoding import RejectedUpload, decode_all
from cardamage.serve.errors import ApiError, error_responses, install_error_handlers
from cardamage.serve.explain import Explainer
from cardamage.serve.schemas import (
    ClaimResponse,
    ErrorDetail,
    Health,
    Limits,
    ModelInfo,
    PredictedFile,
    PredictResponse,
    RejectedFile,
    SeenMatch,
    TaskInfo,
    TrainingSummary,
    TrustReport,
)
from cardamage.serve.service import ModelService
from cardamage.serve.settings import ServeSettings
from cardamage.serve.uploads import CLAIM_FIELD, FILES_FIELD, Form, Upload, read_form
from cardamage.tasks import display_label

STATIC_DIR = Path(__file__).parent / "static"
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: The photos field of both upload endpoints' multipart bodies.
PHOTOS_FIELD = {
    "type": "array",
    "minItems": 1,
    "items": {"type": "string", "format": "binary"},
    "description": "One or more photos (JPEG, PNG, WebP, BMP, GIF).",
}


def multipart_body(properties: dict) -> dict:
    """An endpoint's OpenAPI multipart request body: the photos and its other fields."""
    schema = {"type": "object", "required": [FILES_FIELD], "properties": properties}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


MULTIPART_BODY = multipart_body(
    {
        FILES_FIELD: PHOTOS_FIELD,
        "explain": {
            "type": "boolean",
            "default": False,
            "description": "Same as the query parameter.",
        },
    }
)
CLAIM_BODY = multipart_body(
    {
        FILES_FIELD: PHOTOS_FIELD
        | {"description": "The photos of one car (JPEG, PNG, WebP, BMP, GIF)."},
        CLAIM_FIELD: {
            "type": "string",
            "default": "claim",
            "description": "The claim's id, echoed in the answer; with a photo index, its "
            "photos are searched among other claims' and recorded under it.",
        },
        "explain": {
            "type": "boolean",
            "default": False,
            "description": "Same as the query parameter: true is refused (422).",
        },
    }
)
_BOOL = TypeAdapter(bool)
T = TypeVar("T")

router = APIRouter()


def get_service(request: Request) -> ModelService:
    """The app's one ModelService (a dependency, so tests and integrators can override it)."""
    return request.app.state.service


def get_settings(service: Annotated[ModelService, Depends(get_service)]) -> ServeSettings:
    return service.settings


def ready_service(service: Annotated[ModelService, Depends(get_service)]) -> ModelService:
    """The service once the model is warm; 503 before (or forever, if loading failed)."""
    if service.failure:
        raise ApiError(503, "model_failed", f"the model could not be loaded: {service.failure}")
    if not service.ready:
        raise ApiError(
            503,
            "model_loading",
            "the model is loading; retry shortly",
            headers={"Retry-After": "1"},
        )
    return service


Ready = Annotated[ModelService, Depends(ready_service)]

API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="Required on /v1/predict and /v1/model when the server has an API key.",
)


def check_api_key(
    key: Annotated[str | None, Security(API_KEY_HEADER)],
    settings: Annotated[ServeSettings, Depends(get_settings)],
) -> None:
    """401 unless the key matches (compared in constant time); open when no key is set."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    if key is None or not secrets.compare_digest(key.encode(), expected):
        raise ApiError(
            401,
            "unauthorized",
            "missing or wrong API key: send it in the X-API-Key header",
            headers={"WWW-Authenticate": "X-API-Key"},
        )


@router.get("/v1/health/live", response_model=Health, summary="Liveness", tags=["health"])
async def live() -> Health:
    """The process answers (it may still be loading the model)."""
    return Health(status="live")


@router.get(
    "/v1/health/ready",
    response_model=Health,
    responses=error_responses(503),
    summary="Readiness",
    tags=["health"],
)
async def ready(service: Ready) -> Health:
    """The model is loaded and warmed up: predictions are served at full speed."""
    return Health(status="ready")


@router.get(
    "/v1/model",
    response_model=ModelInfo,
    response_model_exclude_none=True,
    responses=error_responses(401, 503),
    dependencies=[Security(check_api_key)],
    summary="The served model",
    tags=["model"],
)
async def model_info(service: Ready) -> ModelInfo:
    """The served model: tasks, labels, thresholds, backbone, input size, training summary."""
    predictor, settings = service.predictor, service.settings
    return ModelInfo(
        model=service.model_ref,
        engine=predictor.engine.name,
        backbone=predictor.meta.spec.backbone,
        input_size=predictor.image_size,
        tasks=[
            TaskInfo(
                name=t.name,
                kind=t.kind.value,
                labels=list(t.labels),
                thresholds=None if t.multiclass else dict(zip(t.labels, t.thresholds, strict=True)),
                display_names={label: display_label(label) for label in t.labels},
            )
            for t in predictor.tasks
        ],
        training=_training_summary(predictor.meta.info),
        explain=service.explainer is not None,
        limits=Limits(
            max_upload_mb=settings.max_upload_mb,
            max_files=settings.max_files,
            max_pixels=settings.max_pixels,
            formats=list(settings.formats),
        ),
    )


@router.post(
    "/v1/predict",
    response_model=PredictResponse,
    response_model_exclude_none=True,
    responses=error_responses(400, 401, 413, 415, 422, 501, 503),
    dependencies=[Security(check_api_key)],
    openapi_extra=MULTIPART_BODY,
    summary="Assess photos",
    tags=["predict"],
)
async def predict(
    request: Request,
    service: Ready,
    explain: Annotated[
        bool, Query(description="Also return per-task heatmaps (base64 PNG) of where it looked.")
    ] = False,
) -> PredictResponse:
    """Severity, locations and damage types for each uploaded photo (multipart field `files`).

    A file that cannot be used gets `error` instead of `prediction`, with a 200 for the request;
    when no file can be used the request fails (415 or 422) and `error.files` says why for each.
    """
    started = time.perf_counter()

    def wanted(form: Form) -> Explainer | None:
        return _explainer(service) if explain or _flag(form.fields.get("explain")) else None

    form, decoded, predicted, explainer = await _predict_form(request, service, wanted)
    uploads = [u for u, d in zip(form.files, decoded, strict=True) if _is_image(d)]
    explanations = await _explain(uploads, predicted, explainer) if explainer else []
    return PredictResponse(
        model=service.model_ref,
        results=_results(form.files, decoded, predicted, explanations),
        elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
    )


@router.post(
    "/v1/claims",
    response_model=ClaimResponse,
    response_model_exclude_none=True,
    responses=error_responses(400, 401, 413, 415, 422, 503),
    dependencies=[Security(check_api_key)],
    openapi_extra=CLAIM_BODY,
    summary="Assess a claim: several photos of one car",
    tags=["predict"],
)
async def claims(
    request: Request,
    service: Ready,
    explain: Annotated[
        bool,
        Query(
            description="Not served for claims: true is refused (422). Ask /v1/predict for "
            "the photos' heatmaps."
        ),
    ] = False,
) -> ClaimResponse:
    """One assessment of the car from all its photos (multipart field `files`, the claim's id in
    field `claim`), with each photo's own prediction, named as the assessment's evidence names
    it (a repeated file name gets ' (2)', ' (3)').

    The photos are combined as `cardamage assess` combines them: severity from the photos'
    probabilities that the car is at least each level, locations and damage types found in any
    photo, each with its evidence (which photo, its score). A file that cannot be used gets
    `error` in `results` and is left out of the assessment; when no file can be used the request
    fails (415 or 422).

    With a photo index on the server and a `claim` id, each photo is searched among the photos
    of other claims (`seen_before` on each result, `claim.seen_before.message` for a person),
    then recorded under the claim; an index that cannot be used gives `seen_before.warning`.
    """
    started = time.perf_counter()

    def no_heatmaps(form: Form) -> None:
        if explain or _flag(form.fields.get("explain")):
            raise ApiError(
                422,
                "explain_not_for_claims",
                "explain: heatmaps are not drawn for a claim; send its photos to /v1/predict "
                "with explain=true",
            )

    form, decoded, predicted, _ = await _predict_form(request, service, no_heatmaps)
    named = (form.fields.get(CLAIM_FIELD) or "").strip()
    claim = named or "claim"
    names = _unique([u.filename for u in form.files])
    answers = iter(predicted)
    photos = [
        ClaimPhoto(name, error=item.message)
        if isinstance(item, RejectedUpload)
        else ClaimPhoto(name, next(answers))
        for name, item in zip(names, decoded, strict=True)
    ]
    seen = None
    if service.reuse is not None and named:  # only a named claim can be told from others
        seen = await run_in_threadpool(service.reuse.check, claim, photos)
    try:
        verdict = assess_claim(claim, photos, seen_before=seen).to_dict()
    except NoEvidence as e:  # every image declined: each photo's result says why
        verdict = {
            "claim": claim,
            "rule": DEFAULT_RULE,
            **({"seen_before": seen.to_dict()} if seen else {}),
            "photos": [],
            "left_out": [{"photo": p, "reason": r} for p, r in e.left_out],
            "n_photos": len(photos),
            "reason": str(e),
        }
    renamed = [replace(u, filename=n) for u, n in zip(form.files, names, strict=True)]
    results = _results(renamed, decoded, predicted, [])
    return ClaimResponse(
        model=service.model_ref,
        claim=verdict,
        results=_with_seen_before(results, names, seen) if seen else results,
        elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
    )


def _with_seen_before(
    results: list[PredictedFile | RejectedFile], names: list[str], seen: SeenBefore
) -> list[PredictedFile | RejectedFile]:
    """Each predicted photo with its matches in other claims (an empty list: none)."""
    return [
        r.model_copy(
            update={"seen_before": [SeenMatch(**m.to_dict()) for m in seen.photos.get(n, ())]}
        )
        if isinstance(r, PredictedFile) and seen.warning is None
        else r
        for r, n in zip(results, names, strict=True)
    ]


async def _predict_form(
    request: Request, service: ModelService, check: Callable[[Form], T] | None = None
) -> tuple[Form, list[Photo | RejectedUpload], list[Prediction], T | None]:
    """Read the upload, decode it, predict its usable images in the shared batches; ``check``
    looks at the form's fields before any decoding. No usable image: 415 or 422."""
    with service.batcher.reserve() as slot:
        form = await read_form(request, service.limits)
        checked = check(form) if check is not None else None
        decoded = await run_in_threadpool(decode_all, form.files, service.rules)
        usable = [d for d in decoded if _is_image(d)]
        if not usable:
            raise _all_rejected(form.files, [d for d in decoded if not _is_image(d)])
        futures = slot.submit(usable)
    predictions = list(await asyncio.gather(*map(asyncio.wrap_future, futures)))
    return form, decoded, predictions, checked


def _unique(names: list[str]) -> list[str]:
    """File names as the claim's evidence cites them: a repeated name gets ' (2)', ' (3)'."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def _flag(value: str | None) -> bool:
    try:
        return value is not None and _BOOL.validate_python(value.strip())
    except ValidationError:
        raise ApiError(422, "invalid_request", f"explain: not a boolean: {value!r}") from None


def _explainer(service: ModelService) -> Explainer:
    if service.explainer is None:
        raise ApiError(501, "explain_unavailable", "heatmaps are not available on this server")
    return service.explainer


def _is_image(decoded: Photo | RejectedUpload) -> bool:
    return isinstance(decoded, Photo)


async def _explain(
    uploads: list[Upload], predictions: list[Prediction], explainer: Explainer
) -> list[dict[str, str] | None]:
    """Heatmaps of the answered uploads (a declined photo has no answer to map: None); a model
    the explainer cannot handle is a 501."""
    try:
        pairs = zip(uploads, [p.to_dict() for p in predictions], strict=True)
        return [
            None if p is None else await explainer.explain(u.data, u.filename, p) for u, p in pairs
        ]
    except CardamageError as e:
        raise ApiError(501, "explain_unavailable", f"no heatmaps for this model: {e}") from None


def _all_rejected(files: list[Upload], rejected: list[RejectedUpload]) -> ApiError:
    """The request-level error when no file could be used; one status for the whole."""
    statuses = {r.status for r in rejected}
    codes = {r.code for r in rejected}
    status = statuses.pop() if len(statuses) == 1 else 422
    if len(rejected) == 1:
        code, message = rejected[0].code, rejected[0].message
    else:
        code = codes.pop() if len(codes) == 1 else "no_usable_image"
        message = f"none of the {len(rejected)} files could be used; see error.files"
    details = [_rejected_file(u, r) for u, r in zip(files, rejected, strict=True)]
    return ApiError(status, code, message, files=details)


def _rejected_file(upload: Upload, rejection: RejectedUpload) -> RejectedFile:
    error = ErrorDetail(code=rejection.code, message=rejection.message)
    return RejectedFile(filename=upload.filename, error=error)


def _results(
    files: list[Upload],
    decoded: list[Photo | RejectedUpload],
    predictions: list[Prediction],
    explanations: list[dict[str, str] | None],
) -> list[PredictedFile | RejectedFile]:
    """One result per file, in upload order; predictions and explanations follow the images."""
    answers = iter(predictions)
    heatmaps = iter(explanations)
    results: list[PredictedFile | RejectedFile] = []
    for upload, item in zip(files, decoded, strict=True):
        if isinstance(item, RejectedUpload):
            results.append(_rejected_file(upload, item))
        else:
            answer = next(answers)
            results.append(
                PredictedFile(
                    filename=upload.filename,
                    prediction=answer.to_dict(),
                    trust=TrustReport.model_validate(answer.trust_dict()),
                    explanation=next(heatmaps, None),
                )
            )
    return results


def _training_summary(info: dict) -> TrainingSummary:
    """What the model recorded about its training; empty when it recorded something else."""
    try:
        return TrainingSummary.model_validate(
            {k: info[k] for k in ("trained_on", "fold", "out_of_fold") if k in info}
        )
    except ValidationError:
        return TrainingSummary()


def _page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


def _document_without_api_key(app: FastAPI) -> None:
    """A server without a key must not document one: clients and generated SDKs believe it."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.pop("security", None)
                    operation.get("responses", {}).pop("401", None)
            schema.get("components", {}).pop("securitySchemes", None)
        return app.openapi_schema

    app.openapi = openapi


def create_app(settings: ServeSettings, predictor: Predictor | None = None) -> FastAPI:
    """The app; the model loads and warms up in the background once the server starts.

    ``predictor`` replaces loading ``settings.model``: tests inject slow or failing engines, and
    integrators models that need their own loading (the original application's three models).
    """
    service = ModelService(settings, predictor)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        await anyio.to_thread.run_sync(service.close)  # queued images are still answered

    app = FastAPIOffline(
        title="cardamage",
        version=__version__,
        summary="Car damage from photos: severity, location and damage type.",
        description=__doc__.split("\n", 2)[2],
        lifespan=lifespan,
        redoc_url=None,
        static_url="/docs-assets",
    )
    app.state.service = service
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["X-API-Key"],
        )
    app.include_router(router)
    if settings.api_key is None:
        _document_without_api_key(app)
    app.add_api_route("/", _page, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
