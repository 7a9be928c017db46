"""Error kinds. The CLI turns a `SweeperError` into one line on stderr and a non-zero exit."""

import errno


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


def disk_full(error: BaseException) -> bool:
    """A full disk, as the OS or SQLite report it, anywhere in the error's chain."""
    link: BaseException | None = error
    while link is not None:
        if (isinstance(link, OSError) and link.errno == errno.ENOSPC) or (
            "database or disk is full" in str(link)
        ):
            return True
        link = link.__cause__ or link.__context__
    return False
