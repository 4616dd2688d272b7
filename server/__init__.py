"""The data plane of echostat: echo listeners, admission, the registry, workers and reload."""

__version__ = "0.1.0"
