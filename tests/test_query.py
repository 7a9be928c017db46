import pytest

from sweeper.errors import SweeperError
from sweeper.tracking.query import quote, where


def test_values_are_quoted_with_the_quote_they_do_not_hold():
    assert quote("mnist") == "'mnist'"
    assert quote("a'b") == '"a\'b"'
    assert quote('say "hi"') == "'say \"hi\"'"
    with pytest.raises(SweeperError, match="both kinds of quote"):
        quote("a'b\"c")


def test_where_skips_missing_values_and_back_quotes_names():
    assert where(
        {"study": "a'b", "family": None, "mlflow.parentRunId": "r1"}, status="FINISHED"
    ) == (
        "attributes.status = 'FINISHED' and tags.`study` = \"a'b\" and "
        "tags.`mlflow.parentRunId` = 'r1'"
    )
    assert where({}) == ""
