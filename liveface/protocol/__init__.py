"""The ZeroMQ wire protocol (``docs/zmq-protocol.md``), imported by server and clients alike.

* :mod:`.messages` - message types, headers, the multipart codec and error codes;
* :mod:`.schema` - the small header schema validator;
* :mod:`.curve` - CURVE key files (creating, loading) and the server's authenticator.
"""
