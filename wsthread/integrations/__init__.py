"""wsthread inside other software: WSGI middleware, hubs, worker processes, testing."""
