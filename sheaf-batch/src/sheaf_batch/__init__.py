"""sheaf-batch: offline inference over Ray Data with sheaf's backends and contracts."""

from sheaf_batch.runner import BatchRunner, BatchSummary
from sheaf_batch.spec import BatchSpec, JobFile, load_job
from sheaf_batch.validation import InvalidRows

__version__ = "0.1.0"
__all__ = ["BatchRunner", "BatchSpec", "BatchSummary", "InvalidRows", "JobFile", "load_job"]
