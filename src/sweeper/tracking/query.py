"""MLflow search filters built from values, never by pasting user text into a string.

MLflow's filter grammar has no escape character: a value is read between a pair of single
or double quotes. A value holding one kind of quote is wrapped in the other; one holding
both cannot be expressed, and is refused rather than matched wrongly.
"""

from __future__ import annotations

from sweeper.errors import SweeperError


def quote(value: object) -> str:
    text = str(value)
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    raise SweeperError(f"Cannot search MLflow for a value with both kinds of quote: {text}")


def where(tags: dict[str, object], *, status: str | None = None) -> str:
    """`tags.`k` = 'v' and ...` for each tag whose value is not None, plus the run status.
    Names are back-quoted: MLflow's own hold dots (`mlflow.parentRunId`)."""
    clauses = [f"attributes.status = {quote(status)}"] if status else []
    for name, value in tags.items():
        if value is not None:
            clauses.append(f"tags.`{name}` = {quote(value)}")
    return " and ".join(clauses)
