"""The one model of the notes example."""

from typing import Any, Dict

from django.db import models


class Note(models.Model):
    """A note, written by the WebSocket handler."""

    text = models.CharField(max_length=500)
    created = models.DateTimeField(auto_now_add=True)

    def as_dict(self) -> Dict[str, Any]:
        """What the pages and the WebSocket clients get."""
        return {"id": self.id, "text": self.text, "created": self.created.isoformat()}
