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
