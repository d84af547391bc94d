"""`sheaf-server worker` as a real process, with the tests' scripted backend registered
(`run_worker` is what the executable calls): `python job_worker.py CONFIG`."""

import logging
import os
import sys

from server_support import ScriptedPlugin

from sheaf_server.jobs.worker import run_worker
from sheaf_server.logs import configure_logging
from sheaf_server.settings import load_config

if __name__ == "__main__":
    configure_logging("info", "text")
    code = run_worker(load_config(sys.argv[1]), plugins=[ScriptedPlugin()])
    logging.shutdown()
    os._exit(code)  # as the executable leaves: no wait for a backend thread given up on
