"""The Dagster instance folder (``$DAGSTER_HOME``): which shipped instance file becomes its ``dagster.yaml``.

SQLite in the folder is the default; PostgreSQL when the environment names a server (``DAGSTER_PG_URL``, or
``DAGSTER_PG_HOST`` with ``DAGSTER_PG_USER``, ``DAGSTER_PG_PASSWORD``, ``DAGSTER_PG_DB`` and optional
``DAGSTER_PG_PORT``). `./dev` and ``radiomics-assets run`` both go through :func:`prepare_dagster_home`, so the
two never disagree. No Dagster import: plain files and environment variables.

``python -m radiomics_assets.dagster_home <folder>`` prepares the folder and prints the ``export`` line of a
composed or rewritten ``DAGSTER_PG_URL`` (if any) for a shell to ``eval``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from urllib.parse import quote

from radiomics_assets import environment

SQLITE_INSTANCE_YAML = Path(__file__).with_name("dagster_instance.yaml")
POSTGRES_INSTANCE_YAML = Path(__file__).with_name("dagster_instance_postgres.yaml")
PG_URL_ENV = environment.DAGSTER_PG_URL.name
PSYCOPG2_SCHEME = "postgresql+psycopg2"
PG_PART_ENVS = tuple(v.name for v in environment.POSTGRES_PARTS)


NUX_OFF = """nux:
  # No "Join the Dagster community" pop-up on first visit: it covers the page an operator opened.
  enabled: false
"""
"""Appended to both shipped files in the release that turned the pop-up off; a copy of an earlier shipped file
(the same text without it) is still a shipped file, so it is replaced rather than kept as hand-edited."""


def _shipped_texts() -> set[str]:
    texts = {SQLITE_INSTANCE_YAML.read_text(), POSTGRES_INSTANCE_YAML.read_text()}
    return texts | {text.removesuffix(NUX_OFF) for text in texts}


def postgres_url(environ: Mapping[str, str]) -> str:
    """``DAGSTER_PG_URL``, else one composed from the ``DAGSTER_PG_*`` parts (user and password URL-quoted),
    else "" (no PostgreSQL configured). Raises ValueError naming the missing variables if the parts are partial."""
    if environ.get(PG_URL_ENV):
        return with_psycopg2_driver(environ[PG_URL_ENV])
    host, port, user, password, db = (environ.get(name, "") for name in PG_PART_ENVS)
    if not host:
        return ""
    missing = [name for name, value in zip(PG_PART_ENVS, (host, "5432", user, password, db), strict=True) if not value]
    if missing:
        raise ValueError(f"DAGSTER_PG_HOST is set but {', '.join(missing)} not: set them or DAGSTER_PG_URL")
    credentials = f"{quote(user, safe='')}:{quote(password, safe='')}"
    return f"{PSYCOPG2_SCHEME}://{credentials}@{host}:{port or 5432}/{quote(db, safe='')}"


def with_psycopg2_driver(url: str) -> str:
    """``postgresql://`` (or ``postgres://``) as ``postgresql+psycopg2://``: SQLAlchemy 2.1 maps the plain scheme
    to psycopg 3, which is not installed; dagster-postgres is tested with psycopg2 (``psycopg2-binary``)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return f"{PSYCOPG2_SCHEME}://{url.removeprefix(plain)}"
    return url


def instance_yaml_for(environ: Mapping[str, str]) -> Path:
    """The shipped instance file the environment asks for: PostgreSQL if a server is named, else SQLite."""
    return POSTGRES_INSTANCE_YAML if postgres_url(environ) else SQLITE_INSTANCE_YAML


def prepare_dagster_home(home: Path, environ: MutableMapping[str, str] | None = None) -> Path:
    """Create ``home`` and give it the instance file the environment asks for; returns ``home/dagster.yaml``.

    A ``dagster.yaml`` that is one of the shipped files is replaced when the choice changed (setting
    ``DAGSTER_PG_URL`` after a first SQLite run must not silently keep SQLite); one edited by hand is kept.
    The URL (composed from the parts, or given with the plain ``postgresql://`` scheme) is put into ``environ`` as
    the instance file reads it: ``DAGSTER_PG_URL``, scheme ``postgresql+psycopg2://``.
    """
    env = os.environ if environ is None else environ
    url = postgres_url(env)
    if url:
        env[PG_URL_ENV] = url
    wanted = instance_yaml_for(env)
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    shipped = _shipped_texts()
    if not target.exists() or (target.read_text() in shipped and target.read_text() != wanted.read_text()):
        shutil.copy(wanted, target)
    return target


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m radiomics_assets.dagster_home <DAGSTER_HOME>", file=sys.stderr)
        return 2
    environ = dict(os.environ)
    try:
        prepare_dagster_home(Path(argv[0]), environ)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if environ.get(PG_URL_ENV) and environ[PG_URL_ENV] != environment.read(environment.DAGSTER_PG_URL):
        print(f"export {PG_URL_ENV}={shlex.quote(environ[PG_URL_ENV])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
