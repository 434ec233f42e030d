"""The errors a stage turns into one line and exit status 2 (adaptive_lr.pipeline.run_stage)."""


class ParamsError(ValueError):
    """A value in params.yaml (or a schedule's knobs) is missing, unknown, of the wrong type or out of range."""


class DataError(ValueError):
    """Input data is missing, malformed or empty; the message says which file and what to do."""
