"""Registers a backend under a name another distribution already uses: `echo`."""

from sheaf_core import hookimpl


@hookimpl
def sheaf_register_backends(register):
    from sheaf_test_echo import EchoBackend

    register("echo", EchoBackend)
    register("twin-only", EchoBackend)
