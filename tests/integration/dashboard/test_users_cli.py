"""``fieldgate users``: add, list, passwd and token, on the same store the dashboard uses."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from dashboards.cli import users_app
from dashboards.users import Role, UserStore, web_db_path


def test_users_add_list_passwd_and_token(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FIELDGATE_DATA_DIR", str(tmp_path / "var"))
    runner = CliRunner()
    added = runner.invoke(
        users_app,
        ["add", "maria", "--role", "operator", "--password-stdin"],
        input="first-pass-123\n",
    )
    assert added.exit_code == 0, added.output
    short = runner.invoke(users_app, ["add", "bob", "--password-stdin"], input="short\n")
    assert short.exit_code == 1
    assert "too short" in short.output
    listed = runner.invoke(users_app, ["list"])
    assert "maria" in listed.output
    assert "operator" in listed.output
    assert "bob" not in listed.output
    changed = runner.invoke(
        users_app, ["passwd", "maria", "--password-stdin"], input="second-pass-123\n"
    )
    assert changed.exit_code == 0, changed.output
    token = runner.invoke(users_app, ["token", "maria"]).output.strip()
    assert token.startswith("fgt_")

    store = UserStore(web_db_path(tmp_path / "var"))
    try:
        assert store.verify("maria", "first-pass-123") is None
        user = store.verify("maria", "second-pass-123")
        assert user is not None
        assert user.role is Role.OPERATOR
        assert store.token_user(token).name == "maria"  # type: ignore[union-attr]
        assert [e.action for e in store.audit_log()][:3] == [
            "token.create",
            "user.passwd",
            "user.create",
        ]
    finally:
        store.close()
