"""The client end of the path: echo clients that verify every byte, and `echostat probe`."""
