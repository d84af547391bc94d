"""A multi-process tier 1 server as a real process, with the tests' scripted backend
registered (as `sheaf-server serve` runs it, minus the plugin discovery):
`python process_server.py CONFIG PORT` prints "serving URL"; SIGTERM drains and exits 0."""

import signal
import sys
import threading

from server_support import ScriptedPlugin

from sheaf_server import ModelServer
from sheaf_server.logs import configure_logging
from sheaf_server.settings import load_config

if __name__ == "__main__":
    configure_logging("info", "text")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with ModelServer(load_config(sys.argv[1]), port=int(sys.argv[2]),
                     plugins=[ScriptedPlugin()]) as server:
        print("serving", server.url, flush=True)
        stop.wait()
    print("stopped", flush=True)
