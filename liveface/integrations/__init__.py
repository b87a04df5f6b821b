"""Adapters that embed the avatar server in other frameworks, all over the ZeroMQ protocol.

* :mod:`.local_server` - start a private ``liveface serve`` subprocess and wait until it answers;
* :mod:`.pipecat` - a pipecat video service (optional extra ``pipecat``), see ``docs/pipecat.md``.
"""
