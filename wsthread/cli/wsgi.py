"""``python -m wsthread.wsgi module:app --ws /path=module:handler``: WSGI and WebSockets, one port.

Runs on the main thread: it loads the application and the routes, then
serves them with :func:`wsthread.serve` (``wsgi=``), or with several worker
processes (:func:`wsthread.workers.run_workers`). Ctrl-C or SIGTERM closes
every WebSocket with 1001, those of a middleware inside the app too.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from types import FrameType
from typing import Any, Callable, Dict, List, Optional, Tuple, cast

from ..integrations.workers import run_workers
from ..integrations.wsgi import shutdown_all
from ..server.server import serve

__all__ = ["main"]


def _load(spec: str) -> Any:
    """``package.module:name`` (or ``module:name.attr``) to the object it names."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise ValueError(f"{spec!r}: expected module:name")
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


def _route(text: str) -> Tuple[str, str]:
    path, equals, spec = text.partition("=")
    if not equals or not path.startswith("/"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected /path=module:handler")
    return path, spec


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m wsthread.wsgi module:app --ws /path=module:handler``: serve on one port."""
    parser = argparse.ArgumentParser(
        prog="python -m wsthread.wsgi",
        description="Serve a WSGI application and WebSocket routes on one port, with threads.",
    )
    parser.add_argument(
        "app", help="the WSGI application, as module:name (e.g. mysite.wsgi:application)"
    )
    parser.add_argument(
        "--ws",
        action="append",
        type=_route,
        default=[],
        metavar="/PATH=MODULE:HANDLER",
        help="a WebSocket route (repeat for more)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    parser.add_argument("--origin", action="append", dest="origins", help="an allowed Origin")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sys.path.insert(0, ".")
    try:
        app = _load(args.app)
        routes = {path: _load(spec) for path, spec in args.ws}
    except (ImportError, AttributeError, ValueError) as exc:
        parser.error(f"cannot load: {exc}")
    options: Dict[str, Any] = {"origins": args.origins}
    if args.workers > 1:
        return run_workers(
            cast(Any, _Routes(list(args.ws))),
            args.host,
            args.port,
            workers=args.workers,
            on_ready=lambda port, pids: print(
                f"serving {args.app} on http://{args.host}:{port}/ with {len(pids)} workers",
                flush=True,
            ),
            wsgi=_LazyApp(args.app),
            **options,
        )

    def on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    with serve(routes, args.host, args.port, wsgi=app, **options) as server:
        print(
            f"serving {args.app} on http://{args.host}:{server.port}/ (Ctrl-C to stop)", flush=True
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("shutting down", flush=True)
        finally:
            shutdown_all()  # WebSockets of a middleware inside the app: 1001 too
    return 0


class _LazyApp:
    """A picklable WSGI application that imports ``module:name`` on first use (for workers)."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._app: Any = None

    def __getstate__(self) -> Dict[str, Any]:
        return {"spec": self.spec, "_app": None}

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if self._app is None:
            self._app = _load(self.spec)
        return self._app(environ, start_response)


class _Routes(dict):  # type: ignore[type-arg]
    """Picklable ``--ws`` routes, imported in the worker that unpickles them."""

    def __init__(self, routes: List[Tuple[str, str]]) -> None:
        super().__init__({path: _load(spec) for path, spec in routes})
        self.specs = routes

    def __reduce__(self) -> Any:
        return (_Routes, (self.specs,))
