"""Error kinds. The CLI turns a `SweeperError` into one line on stderr and a non-zero exit."""


class SweeperError(Exception):
    """A problem the user can fix: bad input, a missing file, an unknown name."""


class DataError(SweeperError):
    """A dataset cannot be found or read."""


class ConfigError(SweeperError):
    """A sweep file breaks one or more rules; every problem is listed at once."""

    def __init__(self, path: object, problems: list[str]):
        self.path = str(path)
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{self.path}: {len(self.problems)} problem(s)\n{lines}")
