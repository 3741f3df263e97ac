"""Process-level helpers below the connections: deadlines, fork detection, file-descriptor limits.

Nothing here knows about WebSocket; every layer above may use it.
"""
