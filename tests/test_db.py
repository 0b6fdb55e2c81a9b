"""shared.db connection options (no database needed)."""
from shared.db import gss_options


def test_gss_encryption_off_unless_asked(monkeypatch):
    monkeypatch.delenv("PGGSSENCMODE", raising=False)
    assert gss_options("postgresql://u@db:5432/recs") == {"gssencmode": "disable"}
    assert gss_options("host=db dbname=recs") == {"gssencmode": "disable"}
    # An explicit choice, in the URL or libpq's environment variable, is left to libpq.
    assert gss_options("postgresql://u@db:5432/recs?gssencmode=require") == {}
    assert gss_options("host=db dbname=recs gssencmode=prefer") == {}
    monkeypatch.setenv("PGGSSENCMODE", "prefer")
    assert gss_options("postgresql://u@db:5432/recs") == {}
