"""gunicorn settings for the live feed: threads, since each open page holds one."""

from wsthread.wsgi import post_worker_init  # noqa: F401  (pages get 1001 when a worker stops)

worker_class = "gthread"
threads = 50  # open pages + HTTP requests in flight, per worker
bind = "127.0.0.1:8000"
