"""Programmer-error checks that crash loudly instead of continuing with bad state."""


class InvariantViolation(AssertionError):
    """A condition that the code itself guarantees did not hold: a bug, never bad input."""


def invariant(condition: bool, message: str) -> None:
    """Raise InvariantViolation with `message` when `condition` is false.

    Unlike a bare `assert`, this check is never stripped by `python -O`.
    """
    if not condition:
        raise InvariantViolation(message)
