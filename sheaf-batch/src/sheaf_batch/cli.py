"""`sheaf-batch run job.yaml`: run an offline job; a summary at the end.

Exit codes: 0 done (failed rows are in the errors file), 2 bad job file or invalid rows
with on_invalid: fail (nothing ran; the message lists them).
"""

from __future__ import annotations

import argparse
import logging
import sys

from sheaf_core.errors import SheafError
from sheaf_core.versions import VersionAction


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sheaf-batch", description=__doc__)
    parser.add_argument("--version", action=VersionAction, distribution="sheaf-batch")
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run a job file (model: + job:)")
    run.add_argument("job", help="job.yaml")
    run.add_argument("--address", help="Ray cluster to join (default: start a local one)")
    run.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    if args.command != "run":
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from sheaf_batch.runner import BatchRunner
    from sheaf_batch.spec import load_job

    try:
        job = load_job(args.job)
        summary = BatchRunner(job.model, address=args.address,
                              progress=args.progress).run(job.job)
    except SheafError as exc:
        print(f"sheaf-batch: {exc}", file=sys.stderr)
        return 2
    print(f"sheaf-batch: {summary}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
