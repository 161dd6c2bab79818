"""The two kinds of failure the CLI distinguishes, mapped to exit codes 2 and 1."""


class ShipyardError(Exception):
    """The job itself failed (exit code 1): training diverged, a worker group died, ..."""

    exit_code = 1


class UserInputError(ShipyardError):
    """Bad input (exit code 2): a config field, a path or an argument. The message names it."""

    exit_code = 2


class ConfigError(UserInputError):
    """A project file or override is invalid; each line names `section.field` and the value."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def root_cause(exc: BaseException) -> BaseException:
    """The innermost error of a chain (`__cause__`, or Ray's `.cause` on task errors): the one
    that says what went wrong, not a wrapper around it."""
    seen = [exc]
    while True:
        nxt = seen[-1].__cause__ or getattr(seen[-1], "cause", None)
        if not isinstance(nxt, BaseException) or nxt in seen:
            return seen[-1]
        seen.append(nxt)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """One line for a message: the first non-empty line of the innermost error, cut at `limit`.

    Ray's task errors start with a traceback header and end with the original message; the
    original error itself (reached through the chain) starts with the line a person needs.
    """
    inner = root_cause(exc)
    lines = [ln.strip() for ln in str(inner).splitlines() if ln.strip()]
    if not lines:
        return type(inner).__name__
    return lines[0][:limit]
