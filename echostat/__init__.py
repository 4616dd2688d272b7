"""The ``echostat`` command: the server by default, ``echostat probe`` for the client end."""
