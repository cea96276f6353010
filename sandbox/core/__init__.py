"""The sans-I/O core: MX ordering, outcome classification, retry policy, delivery state.

Nothing in this package performs I/O or imports asyncio, sockets or a network library; a test
enforces it. The I/O shell (``sandbox.sender``) asks these objects what to do next and feeds
them what happened.
"""
