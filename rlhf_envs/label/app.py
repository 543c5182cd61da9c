"""The labelling web app: a FastAPI application over a ``LabelSession``.

The page (``static/``: plain HTML, CSS and JavaScript, no build step) and the JSON API it uses:

- ``GET /api/config``: kind of pairs, instructions, default labeler, labels per pair, undo window.
- ``GET /api/next?labeler=NAME``: ``{"pair": {...}}``, the pair to label now (leased to NAME), or ``null``.
- ``POST /api/labels`` ``{"pair_id", "choice": left|right|tie|skip, "labeler"}``: 201; a repeat gets
  200 with ``"duplicate": true`` and is stored once.
- ``POST /api/undo`` ``{"labeler"}``: take back NAME's last answer; the pair is handed back to NAME.
- ``GET /api/progress?labeler=NAME``: labelled / target, labels per minute (all and NAME), agreement.
- ``GET /api/pairs/{id}/clips/{side}``: a control pair's clip (``left`` or ``right``), by id only.

Errors are JSON ``{"error": "..."}``: 400 malformed JSON, 401 missing or wrong token, 404 unknown pair,
409 a conflict with the session's state, 413 body over ``max_body_bytes``, 415 not JSON, 422 a field
out of range; nothing is written then.

With ``token`` set every request must carry it: ``Authorization: Bearer TOKEN``, ``?token=TOKEN``
(the page's address; the response then sets it as a cookie so that clips load) or that cookie.
``allowed_hosts`` rejects other ``Host`` headers (DNS rebinding against a server on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from rlhf_envs.label.session import LabelConflict, LabelSession, Pair, UnknownPair

__all__ = ["TOKEN_COOKIE", "create_app"]

STATIC = Path(__file__).parent / "static"
TOKEN_COOKIE = "rlhf_label_token"
_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class LabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    pair_id: str
    choice: Literal["left", "right", "tie", "skip"]
    labeler: str


class UndoRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    labeler: str


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=_HEADERS)


def _describe(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}" for e in errors)


def pair_view(pair: Pair) -> dict[str, Any]:
    """What the page is sent about a pair: the texts, or the clips' addresses (never file paths)."""
    view: dict[str, Any] = {"pair_id": pair.pair_id, "kind": pair.kind}
    if pair.kind == "text":
        assert pair.texts is not None
        view |= {"prompt": pair.prompt, "left": pair.texts[0], "right": pair.texts[1]}
    else:
        view["clips"] = {
            side: {
                "url": f"/api/pairs/{pair.pair_id}/clips/{side}",
                "media_type": "image/gif" if name.endswith(".gif") else "video/mp4",
            }
            for side, name in pair.clips.items()
        }
    return view


def create_app(
    session: LabelSession,
    *,
    token: str | None = None,
    instructions: str = "Which of the two is better?",
    default_labeler: str = "anonymous",
    title: str = "rlhf-envs: label preferences",
    allowed_hosts: list[str] | None = None,
    max_body_bytes: int = 4096,
    commit_interval: float = 1.0,
) -> FastAPI:
    """The app serving ``session``; run it with uvicorn (``rlhf-envs label`` does).

    Args:
        session: the pairs and where labels go.
        token: the access token every request must carry (``None``: no check; only for 127.0.0.1).
        instructions: what "better" means, shown above the pair.
        default_labeler: the name the page starts with (each person may change theirs).
        title: the page's title.
        allowed_hosts: accepted ``Host`` header values (``None``: any).
        max_body_bytes: larger request bodies get 413.
        commit_interval: seconds between checks that make answers past the undo window final.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def commit_periodically() -> None:
            while True:
                await asyncio.sleep(commit_interval)
                await run_in_threadpool(session.commit_due)

        task = asyncio.create_task(commit_periodically())
        try:
            yield
        finally:
            task.cancel()
            # At shutdown every answer becomes final: it is in the store when the server stops.
            await run_in_threadpool(session.flush)

    app = FastAPI(title=title, lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    index = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{title}}", title)

    @app.middleware("http")
    async def check_token(request: Request, call_next: Any) -> Any:
        given = None
        if token is not None:
            header = request.headers.get("authorization", "")
            given = (
                header[7:]
                if header.startswith("Bearer ")
                else request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)
            )
            if given is None or not secrets.compare_digest(given.encode(), token.encode()):
                return _error(
                    401, "missing or wrong access token: open the address printed by rlhf-envs label"
                )
        response = await call_next(request)
        response.headers.update(_HEADERS)
        if token is not None and request.query_params.get("token") == token:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return _error(error.status_code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return _error(422, _describe(list(error.errors())))

    @app.exception_handler(UnknownPair)
    async def unknown_pair(request: Request, error: UnknownPair) -> JSONResponse:
        return _error(404, str(error))

    @app.exception_handler(LabelConflict)
    async def conflict(request: Request, error: LabelConflict) -> JSONResponse:
        return _error(409, str(error))

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, error: ValueError) -> JSONResponse:
        return _error(422, str(error))

    async def read_body(request: Request, model: type[BaseModel]) -> Any:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise HTTPException(415, f"the body must be application/json, got {content_type or 'no type'!r}")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            raise HTTPException(413, f"the body is {declared} bytes; at most {max_body_bytes} are accepted")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise HTTPException(413, f"the body is over {max_body_bytes} bytes")
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise HTTPException(400, f"the body is not valid JSON: {error}") from error
        try:
            return model.model_validate(data)
        except ValidationError as error:
            raise HTTPException(422, _describe(list(error.errors()))) from error

    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        return HTMLResponse(index)

    @app.get("/api/config")
    async def config() -> dict[str, Any]:
        return {
            "kind": session.kind,
            "title": title,
            "instructions": instructions,
            "default_labeler": default_labeler,
            "labels_per_pair": session.labels_per_pair,
            "undo_seconds": session.undo_seconds,
        }

    @app.get("/api/next")
    async def next_pair(labeler: str = Query(..., max_length=64)) -> dict[str, Any]:
        pair = await run_in_threadpool(session.next_pair, labeler)
        return {"pair": None if pair is None else pair_view(pair)}

    @app.post("/api/labels")
    async def post_label(request: Request) -> JSONResponse:
        body: LabelRequest = await read_body(request, LabelRequest)
        answer, repeated = await run_in_threadpool(session.answer, body.labeler, body.pair_id, body.choice)
        fields = {key: value for key, value in asdict(answer).items() if key != "final"}
        return JSONResponse({**fields, "duplicate": repeated}, status_code=200 if repeated else 201)

    @app.post("/api/undo")
    async def undo(request: Request) -> dict[str, Any]:
        body: UndoRequest = await read_body(request, UndoRequest)
        answer = await run_in_threadpool(session.undo, body.labeler)
        return {"undone": {key: value for key, value in asdict(answer).items() if key != "final"}}

    @app.get("/api/progress")
    async def progress(labeler: str | None = Query(None, max_length=64)) -> dict[str, Any]:
        return await run_in_threadpool(session.progress, labeler)

    @app.get("/api/pairs/{pair_id}/clips/{side}")
    async def clip(pair_id: str, side: Literal["left", "right"]) -> FileResponse:
        path, media_type = session.clip_path(pair_id, side)
        return FileResponse(path, media_type=media_type)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
