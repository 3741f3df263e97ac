"""The WSGI application of the notes example, with its WebSocket route.

    cd examples/django_app
    python manage.py migrate
    python -m wsthread.wsgi mysite.wsgi:application --port 8000
    gunicorn -k gthread --threads 50 mysite.wsgi:application

Open http://127.0.0.1:8000/ in two tabs: a note typed in one is saved by
the WebSocket handler with the ORM and appears in both. An ordinary view
does the same for a form post, and pushes through ``application.broadcast()``:

    curl -d text="from a view" http://127.0.0.1:8000/notes/add
"""

import os

from django.core.wsgi import get_wsgi_application

from wsthread.wsgi import middleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
django_application = get_wsgi_application()  # sets Django up: models can be imported now

from notes.ws import notes  # noqa: E402

application = middleware(django_application, {"/ws": notes})
