"""The sans-I/O core: bytes in, events out; frames, the protocol, deflate, UTF-8, the handshake.

No sockets, threads or clocks: every layer above feeds it bytes and acts
on what it returns (``tests/sansio/`` tests it without a socket).
"""
