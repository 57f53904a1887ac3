"""The demo's web app (Starlette): one static page and a small JSON/binary API over a paint or sample engine.

Endpoints (all bodies bounded; every refusal is a JSON ``{"error": "one line"}`` the page shows, never a crash):

- ``GET /`` the page, ``GET /static/*`` its script and style, ``GET /api/info`` what the page needs to draw itself;
- paint mode: ``POST /api/paint`` (uint16 label [+ instance] maps) -> photo PNG; ``POST /api/upload?kind=label|
  instance&name=F`` (the file's bytes) -> uint16 ids at the canvas size; ``POST /api/label-file`` and
  ``POST /api/instance-file`` (uint16 maps) -> the PNG files translate.py reads;
- sample mode: ``POST /api/sample`` (JSON options) -> PNG.

Model calls go through one :class:`~asap.demo.worker.ModelWorker`; a request replaced by a newer one before it
started is answered ``204 No Content``. Photos carry a ``Server-Timing`` header (queue, generator, encode, total ms).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from asap.errors import AsapError

from .worker import ModelWorker, Superseded

STATIC = Path(__file__).resolve().parent / "static"
MAX_JSON_BYTES = 64 * 1024
log = logging.getLogger("asap.demo")


class BodyTooLarge(Exception):
    """The request body is over its bound; answered 413 before the rest is read."""


async def read_body(request: Request, limit: int, what: str = "request body") -> bytes:
    """The request body, refused (BodyTooLarge) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"{what} has {int(declared):,} bytes, over the limit of {limit:,} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"{what} is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def server_timing(stages: dict[str, float]) -> str:
    """``name;dur=ms`` entries of the standard Server-Timing header."""
    return ", ".join(f"{name};dur={seconds * 1000:.1f}" for name, seconds in stages.items())


def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """User mistakes -> 400/413 with the one-line message; anything unexpected -> 500 with a line, logged."""
    async def wrapper(request: Request) -> Response:
        try:
            return await handler(request)
        except AsapError as e:
            return error(str(e).strip().splitlines()[0] if str(e).strip() else "bad request")
        except BodyTooLarge as e:
            return error(str(e), 413)
        except Superseded:
            return Response(status_code=204)
        except Exception as e:  # a bug must not take the server down: say so on the page and in the log
            log.exception("request %s failed", request.url.path)
            return error(f"internal error ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})", 500)
    return wrapper


def create_app(engine: Any, worker: ModelWorker | None = None, max_upload_bytes: int = 16 * 2 ** 20) -> Starlette:
    """The Starlette app serving ``engine`` (a PaintEngine or SampleEngine); model calls run on ``worker``."""
    worker = worker or ModelWorker()

    async def on_worker(fn: Callable[[], Any]) -> Any:
        return await asyncio.wrap_future(worker.submit(engine.channel, fn))

    async def photo(render: Callable[[], tuple[bytes, dict[str, float]]], started: float) -> Response:
        queued = time.perf_counter()
        timed: dict[str, float] = {}

        def job() -> tuple[bytes, dict[str, float]]:
            timed["queue"] = time.perf_counter() - queued
            return render()
        png, stages = await on_worker(job)
        stages = {"queue": timed.get("queue", 0.0), **stages, "total": time.perf_counter() - started}
        return Response(png, media_type="image/png",
                        headers={"Server-Timing": server_timing(stages), "Cache-Control": "no-store"})

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def info(request: Request) -> Response:
        return JSONResponse({**engine.info(), "max_upload_bytes": max_upload_bytes})

    async def maps(request: Request) -> tuple[Any, Any]:
        limit = 2 * 2 * engine.height * engine.width
        body = await read_body(request, limit, "painted map")
        return await run_in_threadpool(engine.decode_maps, body)

    @guarded
    async def paint(request: Request) -> Response:
        started = time.perf_counter()
        label, inst = await maps(request)
        return await photo(lambda: engine.render(label, inst), started)

    @guarded
    async def upload(request: Request) -> Response:
        kind = request.query_params.get("kind", "label")
        name = request.query_params.get("name", "upload")
        data = await read_body(request, max_upload_bytes, "uploaded file")
        ids = await run_in_threadpool(engine.read_upload, data, name, kind)
        return Response(ids.tobytes(), media_type="application/octet-stream",
                        headers={"X-Map-Size": f"{ids.shape[1]}x{ids.shape[0]}"})

    @guarded
    async def label_file(request: Request) -> Response:
        label, _ = await maps(request)
        png = await run_in_threadpool(engine.label_file, label)
        return Response(png, media_type="image/png")

    @guarded
    async def instance_file(request: Request) -> Response:
        label, inst = await maps(request)
        png = await run_in_threadpool(engine.instance_file, label if inst is None else inst)
        return Response(png, media_type="image/png")

    @guarded
    async def sample(request: Request) -> Response:
        started = time.perf_counter()
        body = await read_body(request, MAX_JSON_BYTES, "sampling options")
        try:
            params = json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise AsapError(f"sampling options are not valid JSON: {e}") from None
        opts = engine.parse(params)
        return await photo(lambda: engine.render(opts), started)

    routes = [Route("/", index), Route("/api/info", info),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    if engine.mode == "paint":
        routes += [Route("/api/paint", paint, methods=["POST"]), Route("/api/upload", upload, methods=["POST"]),
                   Route("/api/label-file", label_file, methods=["POST"]),
                   Route("/api/instance-file", instance_file, methods=["POST"])]
    else:
        routes += [Route("/api/sample", sample, methods=["POST"])]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        worker.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.engine, app.state.worker = engine, worker
    return app
