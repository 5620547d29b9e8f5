"""Settings: the one place that reads the environment.

Resolution order for every value: explicit argument, then ``CONTEXTOS_*``
environment variable, then default. Library objects take a :class:`Settings`
(or plain arguments) and never read ``os.environ`` themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .errors import ConfigError


def default_db_path() -> Path:
    """``memory.db`` in the user data directory (the directory is created here: the
    store itself refuses a path whose folder is missing, to catch typos)."""
    import platformdirs

    folder = Path(platformdirs.user_data_dir("contextos"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder / "memory.db"


@dataclass(frozen=True)
class Settings:
    """Resolved configuration. Build it with :func:`load_settings`."""

    db: str = ""
    tenant: str = "default"
    embedder: str = "minilm"
    model: str = "claude-sonnet-4-6"
    anthropic_api_key: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    embed_batch_size: int = 64


_ENV = {
    "db": "CONTEXTOS_DB",
    "tenant": "CONTEXTOS_TENANT",
    "embedder": "CONTEXTOS_EMBEDDER",
    "model": "CONTEXTOS_MODEL",
    "anthropic_api_key": "ANTHROPIC_API_KEY",
    "openai_api_key": "OPENAI_API_KEY",
    "openai_base_url": "OPENAI_BASE_URL",
    "embed_batch_size": "CONTEXTOS_EMBED_BATCH_SIZE",
}


def load_settings(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Resolve settings: ``overrides`` (non-None) > environment > defaults."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for f in fields(Settings):
        if overrides.get(f.name) is not None:
            values[f.name] = overrides[f.name]
        elif env.get(_ENV[f.name]):
            values[f.name] = env[_ENV[f.name]]
    if "embed_batch_size" in values:
        try:
            values["embed_batch_size"] = int(str(values["embed_batch_size"]))
        except ValueError:
            raise ConfigError("CONTEXTOS_EMBED_BATCH_SIZE must be an integer") from None
    settings = replace(Settings(), **values)  # type: ignore[arg-type]
    if not settings.db:
        settings = replace(settings, db=str(default_db_path()))
    return settings
