"""The pages of the notes example, and a view that saves a note and pushes it."""

import json

from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse

from .models import Note

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>Notes</title>
<h1>Notes</h1>
<p id="status">connecting…</p>
<form id="form"><input id="text" autocomplete="off"><button>Save</button></form>
<ul id="notes"></ul>
<script>
const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
ws.onopen = () => { document.getElementById("status").textContent = "connected"; };
ws.onclose = (e) => { document.getElementById("status").textContent = `disconnected (${e.code})`; };
const seen = new Set();  // a note saved as the page connects comes twice: keep the first
ws.onmessage = (e) => {
  const note = JSON.parse(e.data);
  if (seen.has(note.id)) return;
  seen.add(note.id);
  const li = document.createElement("li");
  li.textContent = note.text;
  document.getElementById("notes").prepend(li);
};
document.getElementById("form").onsubmit = (e) => {
  e.preventDefault();
  const text = document.getElementById("text");
  ws.send(text.value);
  text.value = "";
};
</script>
"""


def index(request: HttpRequest) -> HttpResponse:
    """The page: it saves notes over its WebSocket."""
    return HttpResponse(PAGE)


def note_list(request: HttpRequest) -> JsonResponse:
    """Every note, newest first, from an ordinary view."""
    return JsonResponse({"notes": [note.as_dict() for note in Note.objects.order_by("-id")]})


def add_note(request: HttpRequest) -> HttpResponse:
    """Save a note from an ordinary form post (field ``text``) and push it to every page.

    The push goes through the middleware's ``broadcast()`` (``application``
    in mysite/wsgi.py), which reaches every WebSocket this process serves,
    the same as the handler's ``ws.server.broadcast()``. It is sent once the
    note is committed (``transaction.on_commit``: at once in autocommit, at
    the end of the transaction with ``ATOMIC_REQUESTS`` or inside
    ``atomic()``), so a client that reads the database on hearing of it
    finds it there. This project has no CSRF middleware; with Django's
    ``CsrfViewMiddleware``, a page posting here sends its token, as for any
    form.
    """
    from mysite.wsgi import application  # the middleware, made once Django is set up

    if request.method != "POST":
        return HttpResponseNotAllowed(["POST"])
    text = request.POST.get("text", "").strip()
    if not text:
        return JsonResponse({"error": "a note needs some text"}, status=400)
    note = Note.objects.create(text=text[:500])
    message = json.dumps(note.as_dict())
    transaction.on_commit(lambda: application.broadcast(message))
    return JsonResponse(note.as_dict(), status=201)
