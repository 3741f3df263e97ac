"""URLs of the notes example; the WebSocket (/ws) is routed in wsgi.py, not here."""

from django.urls import path
from notes import views

urlpatterns = [
    path("", views.index),
    path("notes/", views.note_list),
    path("notes/add", views.add_note),  # POST: save a note, push it to every WebSocket
]
