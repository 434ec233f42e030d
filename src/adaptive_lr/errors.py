"""The error a bad setting raises: its own module so the registry needs neither yaml nor the lab."""


class ParamsError(ValueError):
    """A value in params.yaml (or a schedule's knobs) is missing, unknown, of the wrong type or out of range."""
