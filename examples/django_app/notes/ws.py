"""The WebSocket handler of the notes example: plain, synchronous ORM code.

Each WebSocket runs on its own thread, and Django gives each thread its own
database connection. Django closes a request's connection when the request
ends; a WebSocket is one long "request", so the handler does the same after
each message, with ``close_old_connections()``: a connection that broke or
outlived ``CONN_MAX_AGE`` is never reused, and none is held idle between
messages. When the WebSocket ends, this thread's connection is closed too,
or it would stay open until the thread is reused or exits.
"""

import json

from django.db import close_old_connections, connections

from wsthread import ServerConnection

from .models import Note


def notes(ws: ServerConnection) -> None:
    """Save every message as a note, and tell every connected client.

    The connection gets broadcasts from the moment it opened: a note saved
    while this loads the backlog arrives twice, and the page keeps the
    first (notes carry their id).
    """
    try:
        close_old_connections()
        for note in Note.objects.order_by("-id")[:10][::-1]:
            ws.send(json.dumps(note.as_dict()))
        close_old_connections()
        for message in ws:
            text = message if isinstance(message, str) else message.decode("utf-8", "replace")
            note = Note.objects.create(text=text[:500])
            close_old_connections()  # as Django does at the end of a request
            ws.server.broadcast(json.dumps(note.as_dict()))
    finally:
        connections.close_all()  # this thread's connections only
