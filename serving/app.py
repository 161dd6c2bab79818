"""The Serve application: a FastAPI ingress in front of one model deployment per version.

    HTTP ─► Ingress (FastAPI: validation, auth, traffic split, feedback, canary verdict)
              ├─► champion  (ModelReplica × autoscaled: @serve.batch → compiled signature)
              └─► challenger (same, when a canary runs)

Serve 2.60 has no weighted routing between deployments, so the ingress holds both handles and
picks one per request by weight; the weight lives in the ingress's `user_config` and changes
through `reconfigure` (no restart, no dropped request). The model replicas do the heavy work and
autoscale; the ingress is light and asks for no CPU.
"""

import asyncio
import hashlib
import hmac
import logging
import os
import random
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException

from shipyard.serving import schemas
from shipyard.serving.schemas import BadInput

logger = logging.getLogger("ray.serve")  # Serve's replica logs: they carry the request id
MAX_EXPLAIN_ITEMS = 8  # an explanation costs one prediction per token
READY_TIMEOUT_S = 5.0


@dataclass
class Arm:
    """One registered version the ingress routes to, and where its replicas fetch it from."""

    role: str  # "champion" or "challenger"
    name: str
    version: int
    variant: str
    source: str  # the registry's artifact URI of the export
    tracking_uri: str
    labels: list[str]
    columns: dict[str, str]
    tokenizer_mode: str
    corpus_content_hash: str
    metrics: dict[str, float] = field(default_factory=dict)

    def info(self) -> schemas.ModelInfo:
        return schemas.ModelInfo(
            name=self.name,
            version=self.version,
            variant=self.variant,
            labels=self.labels,
            columns=self.columns,
            corpus_content_hash=self.corpus_content_hash,
            metrics=self.metrics,
        )


@dataclass
class Limits:
    max_items: int = 64
    max_chars: int = 2000


@dataclass
class Batching:
    enabled: bool = True
    max_batch_size: int = 32
    batch_wait_timeout_s: float = 0.01
    max_concurrent_batches: int = 4  # the ingress's batches in flight to the model replicas


@serve.deployment(name="model")
class ModelReplica:
    """One version of the model; batches concurrent requests into one call of its signature."""

    def __init__(self, arm: Arm, batching: Batching):
        from shipyard.serving.served_model import ServedModel
        from shipyard.training.model_versions import RegisteredVersion, fetch_export

        self.arm = arm
        version = RegisteredVersion(
            arm.name, arm.version, None, arm.source, tracking_uri=arm.tracking_uri
        )
        # Through the artifact store, as on any node: the replica needs no registry database.
        path = fetch_export(version, os.path.join(tempfile.gettempdir(), "shipyard-models"))
        self.model = ServedModel(
            path,
            variant=arm.variant,
            max_batch_size=batching.max_batch_size,
            version=arm.version,
            metrics=arm.metrics,
        )
        self.batching = batching.enabled
        self._in_flight = 0
        self._batched.set_max_batch_size(batching.max_batch_size)
        self._batched.set_batch_wait_timeout_s(batching.batch_wait_timeout_s)
        # TensorFlow runs off the event loop, one call at a time (a TFLite interpreter is not
        # thread-safe, and one op pool per replica is what the CPUs were sized for).
        self._tf = ThreadPoolExecutor(1, thread_name_prefix="shipyard-tf")

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._tf, fn, *args)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _batched(self, requests: list[dict[str, list]]) -> list[np.ndarray]:
        return await self._merged(requests)

    async def _merged(self, requests: list[dict[str, list]]) -> list[np.ndarray]:
        """One model call for several requests, split back per request."""
        merged = {name: [v for r in requests for v in r[name]] for name in requests[0]}
        probs = await self._run(self.model.probabilities, merged)
        out, start = [], 0
        for r in requests:
            n = len(next(iter(r.values())))
            out.append(probs[start : start + n])
            start += n
        return out

    async def predict(self, columns: dict[str, list]) -> np.ndarray:
        self._in_flight += 1
        try:
            if self.batching:
                return await self._batched(columns)
            return await self._run(self.model.probabilities, columns)
        finally:
            self._in_flight -= 1

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Requests, not handle calls, for the autoscaler (serving/autoscaling.py)."""
        from shipyard.serving.autoscaling import REQUESTS_IN_FLIGHT

        return {REQUESTS_IN_FLIGHT: float(self._in_flight)}

    async def predict_many(self, requests: list[dict[str, list]]) -> list[np.ndarray]:
        """The ingress's batch: already as large as the traffic allows, so it runs at once (a
        second wait here would add batch_wait_timeout_s to every request)."""
        self._in_flight += len(requests)
        try:
            return await self._merged(requests)
        finally:
            self._in_flight -= len(requests)

    async def explain(self, columns: dict[str, list]) -> list[tuple[np.ndarray, list]]:
        from shipyard.serving import explain

        def run() -> list[tuple[np.ndarray, list]]:
            fn, mode = self.model.probabilities, self.arm.tokenizer_mode
            if self.model.is_text:
                return [explain.occlude_text(fn, text, mode) for text in columns["text"]]
            names, n = list(columns), len(next(iter(columns.values())))
            rows = [{k: columns[k][i] for k in names} for i in range(n)]
            return [explain.occlude_row(fn, row) for row in rows]

        return await self._run(run)

    def ready(self) -> bool:
        return True


api = FastAPI(
    title="shipyard model service",
    description="Predictions, explanations and feedback for a registered shipyard model.",
)


@api.exception_handler(RequestValidationError)
async def _invalid_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    # pydantic puts exception objects under `ctx`: keep the JSON-able keys only.
    errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
    problems = [f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors]
    return JSONResponse({"error": "; ".join(problems), "detail": errors}, 422)


@api.exception_handler(HTTPException)
async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    # FastAPI's own refusals (a body that is not JSON, an unknown path or method) in the shape
    # of ours, so a client reads `error` whatever went wrong; `detail` stays for FastAPI clients.
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        detail = "body: not a JSON document (malformed, not UTF-8, or nested too deeply)"
    return JSONResponse(
        {"error": detail, "detail": exc.detail}, exc.status_code, headers=exc.headers
    )


@api.exception_handler(BadInput)
async def _bad_input(request: Request, exc: BadInput) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, 422)


class Unauthorized(Exception):
    pass


@api.exception_handler(Unauthorized)
async def _unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
    return JSONResponse(
        {"error": str(exc)}, 401, headers={"WWW-Authenticate": 'Bearer realm="shipyard"'}
    )


class Unavailable(Exception):
    pass


@api.exception_handler(Unavailable)
async def _unavailable(request: Request, exc: Unavailable) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, 503, headers={"Retry-After": "1"})


@serve.deployment(name="ingress", ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Ingress:
    """Validates, routes by weight, records feedback and judges the canary."""

    def __init__(
        self,
        champion: DeploymentHandle,
        champion_arm: Arm,
        challenger: DeploymentHandle | None,
        challenger_arm: Arm | None,
        limits: Limits,
        feedback_dir: str,
        canary: dict[str, Any],
        token_sha256: str | None = None,
        batching: Batching | None = None,
    ):
        from shipyard.serving.canary_stats import CanaryMonitor
        from shipyard.serving.feedback_store import FeedbackWriter

        self.handles = {"champion": champion}
        self.arms = {"champion": champion_arm}
        if challenger is not None and challenger_arm is not None:
            self.handles["challenger"] = challenger
            self.arms["challenger"] = challenger_arm
        self.limits = limits
        self.token_sha256 = token_sha256
        self.challenger_percent = 0.0
        self.canary = canary
        self.monitor = (
            CanaryMonitor(alpha=canary["alpha"], min_samples=canary["min_samples"])
            if "challenger" in self.arms
            else None
        )
        self.decision: str | None = None  # what the canary did on its own, for `serve status`
        replica = serve.get_replica_context().replica_id.unique_id
        self.feedback = FeedbackWriter(feedback_dir, replica)
        self.batching = batching or Batching()
        # Requests leave in batches, several in flight (with one, every client would wait for
        # the round trip of the batch before it). A model replica's ongoing requests are then
        # batches: what Serve's autoscaler counts against target_ongoing_requests.
        self._predict_batched = serve.batch(
            max_batch_size=self.batching.max_batch_size,
            batch_wait_timeout_s=self.batching.batch_wait_timeout_s,
            max_concurrent_batches=self.batching.max_concurrent_batches,
        )(self._send_batch)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """`user_config`: the challenger's share of traffic, in percent."""
        percent = float(config.get("challenger_percent", 0.0))
        if "challenger" not in self.arms:
            percent = 0.0
        self.challenger_percent = min(max(percent, 0.0), 100.0)

    # -- routes -----------------------------------------------------------------------------------
    @api.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        try:
            await asyncio.wait_for(
                asyncio.gather(*(h.ready.remote() for h in self.handles.values())),
                READY_TIMEOUT_S,
            )
        except Exception as exc:
            return JSONResponse({"status": "not ready", "error": self._first_line(exc)}, 503)
        return JSONResponse({"status": "ready", "arms": sorted(self.handles)})

    @api.get("/v1/model", response_model=schemas.ServiceInfo)
    async def model(self) -> schemas.ServiceInfo:
        challenger = self.arms.get("challenger")
        return schemas.ServiceInfo(
            champion=self.arms["champion"].info(),
            challenger=challenger.info() if challenger else None,
            challenger_percent=self.challenger_percent,
            canary=self._canary_state(),
        )

    @api.post("/v1/predict", response_model=schemas.PredictResponse)
    async def predict(self, body: schemas.PredictRequest, request: Request):
        self._authorize(request)
        role = self._pick()
        arm = self.arms[role]
        columns = schemas.to_columns(body.inputs, arm.columns, **asdict(self.limits))
        if self.batching.enabled:
            probs = await self._predict_batched((role, columns))
        else:
            probs = await self._call(role, "predict", columns)
        return schemas.PredictResponse(
            predictions=[self._prediction(arm, p) for p in probs], request_id=self._request_id()
        )

    @api.post("/v1/explain", response_model=schemas.ExplainResponse)
    async def explain(self, body: schemas.ExplainRequest, request: Request):
        self._authorize(request)
        role = self._pick()
        arm = self.arms[role]
        limits = Limits(min(self.limits.max_items, MAX_EXPLAIN_ITEMS), self.limits.max_chars)
        columns = schemas.to_columns(body.inputs, arm.columns, **asdict(limits))
        results = await self._call(role, "explain", columns)
        explanations = []
        for probs, parts in results:
            prediction = self._prediction(arm, probs)
            explanations.append(
                schemas.Explanation(
                    **prediction.model_dump(),
                    method=body.method,
                    attributions=[
                        schemas.Attribution(token=p.token, start=p.start, end=p.end, score=p.score)
                        for p in parts
                    ],
                )
            )
        return schemas.ExplainResponse(explanations=explanations, request_id=self._request_id())

    @api.post("/v1/feedback", response_model=schemas.FeedbackResponse)
    async def feedback(self, body: schemas.FeedbackRequest, request: Request):
        from shipyard.serving.feedback_store import FeedbackRecord

        self._authorize(request)
        role = body.arm or "champion"
        if role not in self.arms:
            raise BadInput(f"arm: no {role!r} is being served (arms: {sorted(self.arms)})")
        arm = self.arms[role]
        for field_name in ("prediction", "label"):
            value = getattr(body, field_name)
            if value not in arm.labels:
                raise BadInput(f"{field_name}: {value!r} is not a label of the model {arm.labels}")
        schemas.to_columns([body.input], arm.columns, max_items=1, max_chars=self.limits.max_chars)
        record = FeedbackRecord(
            id=uuid.uuid4().hex,
            time=time.time(),
            input=body.input,
            prediction=body.prediction,
            label=body.label,
            model=arm.name,
            version=body.version or arm.version,
            variant=arm.variant,
            request_id=body.request_id,
            arm=role,
        )
        # Written and fsynced before the 200: an acknowledged record survives a killed replica.
        await asyncio.get_running_loop().run_in_executor(None, self.feedback.write, record)
        logger.info("feedback %s for %s:%s (%s)", record.id, arm.name, arm.version, role)
        if self.monitor is not None and body.arm is not None:
            self.monitor.record(role, body.prediction == body.label)
            self._judge()
        return schemas.FeedbackResponse(id=record.id, request_id=self._request_id())

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground(self) -> HTMLResponse:
        from shipyard.serving.playground import page

        return HTMLResponse(page(self.arms["champion"].info()))

    # -- called through the app's handle by `shipyard serve status|promote|rollback` --------------
    def status(self) -> dict[str, Any]:
        context = serve.get_replica_context()
        return {
            "ingress": {"replica": context.replica_id.unique_id, "pid": os.getpid()},
            "arms": {role: asdict(arm) for role, arm in self.arms.items()},
            "challenger_percent": self.challenger_percent,
            "canary": self._canary_state(),
        }

    def set_traffic(self, challenger_percent: float) -> float:
        self.reconfigure({"challenger_percent": challenger_percent})
        self.decision = None
        return self.challenger_percent

    # -- helpers --------------------------------------------------------------------------------
    def _authorize(self, request: Request) -> None:
        if self.token_sha256 is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = hashlib.sha256(token.strip().encode()).hexdigest()
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self.token_sha256):
            raise Unauthorized("missing or wrong bearer token (Authorization: Bearer <token>)")

    def _pick(self) -> str:
        if self.challenger_percent > 0 and random.random() * 100 < self.challenger_percent:
            return "challenger"
        return "champion"

    async def _send_batch(self, calls: list[tuple[str, dict]]) -> list[np.ndarray]:
        # One handle call per arm per batch: each call costs both ends about a millisecond of
        # CPU, several times the model's own share of a request.
        out: list[Any] = [None] * len(calls)

        async def send(role: str, indices: list[int]) -> None:
            results = await self._call(role, "predict_many", [calls[i][1] for i in indices])
            for i, probs in zip(indices, results, strict=True):
                out[i] = probs

        by_role: dict[str, list[int]] = {}
        for i, (role, _) in enumerate(calls):
            by_role.setdefault(role, []).append(i)
        await asyncio.gather(*(send(role, indices) for role, indices in by_role.items()))
        return out

    async def _call(self, role: str, method: str, payload: Any):
        try:
            return await getattr(self.handles[role], method).remote(payload)
        except Exception as exc:
            logger.warning("%s %s failed: %s", role, method, self._first_line(exc))
            raise Unavailable(f"the {role} model is unavailable: {self._first_line(exc)}") from None

    @staticmethod
    def _prediction(arm: Arm, probs: np.ndarray) -> schemas.Prediction:
        top = int(np.argmax(probs))
        return schemas.Prediction(
            label=arm.labels[top],
            probabilities={label: float(p) for label, p in zip(arm.labels, probs, strict=True)},
            model=schemas.ModelRef(
                name=arm.name, version=arm.version, variant=arm.variant, arm=arm.role
            ),
        )

    def _judge(self) -> None:
        verdict = self.monitor.verdict()
        if verdict.state == "challenger_worse" and self.canary["auto_rollback"]:
            if self.challenger_percent > 0:
                self.challenger_percent = 0.0
                self.decision = f"rolled back: {verdict.describe()}"
                logger.warning("canary %s", self.decision)
        elif (
            verdict.state == "challenger_better"
            and self.canary["auto_promote"]
            and self.challenger_percent < 100
        ):
            self.challenger_percent = 100.0
            self.decision = f"promoted: {verdict.describe()}"
            logger.warning("canary %s", self.decision)

    @staticmethod
    def _request_id() -> str:
        """The id Serve's proxy gave this request (its X-Request-ID header and log lines)."""
        return serve.context._get_serve_request_context().request_id

    @staticmethod
    def _first_line(exc: BaseException) -> str:
        text = str(exc).strip().splitlines()
        return text[0] if text else type(exc).__name__

    def _canary_state(self) -> dict[str, Any] | None:
        if self.monitor is None:
            return None
        verdict = self.monitor.verdict()
        return {**verdict.to_dict(), "summary": verdict.describe(), "decision": self.decision}
