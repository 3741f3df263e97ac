"""The pages of the notes example."""

from django.http import HttpRequest, HttpResponse, JsonResponse

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
