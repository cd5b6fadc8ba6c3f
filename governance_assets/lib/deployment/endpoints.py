"""Real model endpoints: OpenAI-compatible servers (vLLM, Ollama, a hosted API) that HELM's own
OpenAI client queries. The policy names them under `endpoints:`; before HELM runs, their
deployments and metadata are written into HELM's `--local-path` and their keys, read from the
environment, into its `credentials.conf` (owner-only), never into a log or a record."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field

from governance_assets.lib.core.storage import write_text_atomic
from governance_assets.lib.core.strict import StrictModel

CHAT_CLIENT = "helm.clients.openai_client.OpenAIClient"
COMPLETIONS_CLIENT = "helm.clients.openai_client.OpenAILegacyCompletionsClient"
TOKENIZER = "simple/tokenizer1"
"""A tokenizer that needs no download (tiktoken's files are a download and fail offline); it only
bounds prompt lengths, the endpoint tokenises for itself."""


class ModelEndpoint(StrictModel):
    """An OpenAI-compatible endpoint, named in `evaluation_plan.models` by `name`."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_\-]*/[A-Za-z0-9_.\-]+$")]
    """HELM model deployment name `<organisation>/<model>`; the key goes in as `<organisation>ApiKey`."""
    base_url: Annotated[str, Field(pattern=r"^https?://")]
    """e.g. `http://127.0.0.1:8000/v1` (vLLM), `http://127.0.0.1:11434/v1` (Ollama)."""
    openai_model_name: Annotated[str, Field(min_length=1)]
    """The model name the endpoint expects in its requests."""
    api_key_env: str | None = None
    """The environment variable holding the key (a secret: never logged); none for open servers."""
    chat: bool = True
    """`/chat/completions` (HELM's OpenAIClient), else `/completions` (OpenAILegacyCompletionsClient)."""
    max_sequence_length: Annotated[int, Field(gt=0)] = 4096
    timeout_seconds: Annotated[float, Field(gt=0)] = 60.0
    """Per HTTP request; a server that does not answer in time fails the request, never hangs it."""
    max_retries: Annotated[int, Field(ge=0, le=10)] = 2
    """Retries of the OpenAI client (429 honours Retry-After; 5xx and timeouts back off); HELM then
    retries a failed request 4 more times (10, 20, 40, 80 s apart) before the run fails."""

    @property
    def organisation(self) -> str:
        return self.name.split("/", 1)[0]


class EndpointError(ValueError):
    """An endpoint that cannot be configured (its key variable is unset), named with the reason."""


def credential_key(endpoint: ModelEndpoint) -> str:
    return f"{endpoint.organisation}ApiKey"


def _deployment(endpoint: ModelEndpoint) -> dict[str, Any]:
    return {
        "name": endpoint.name,
        "model_name": endpoint.name,
        "tokenizer_name": TOKENIZER,
        "max_sequence_length": endpoint.max_sequence_length,
        "client_spec": {
            "class_name": CHAT_CLIENT if endpoint.chat else COMPLETIONS_CLIENT,
            "args": {
                "base_url": endpoint.base_url,
                "openai_model_name": endpoint.openai_model_name,
                "timeout": endpoint.timeout_seconds,
                "max_retries": endpoint.max_retries,
            },
        },
    }


def _metadata(endpoint: ModelEndpoint) -> dict[str, Any]:
    return {
        "name": endpoint.name,
        "display_name": endpoint.name,
        "description": f"OpenAI-compatible endpoint {endpoint.base_url} serving {endpoint.openai_model_name}",
        "creator_organization_name": endpoint.organisation,
        "access": "open",
        "release_date": date(2026, 1, 1),  # HELM wants a YAML date, not a string
        "tags": ["TEXT_MODEL_TAG", "FULL_FUNCTIONALITY_TEXT_MODEL_TAG"],
    }


def _merged(path: Path, section: str, entries: Sequence[dict[str, Any]]) -> str:
    """The YAML file with our entries replacing those of the same name; other entries are kept."""
    document = (yaml.safe_load(path.read_text("utf-8")) or {}) if path.exists() else {}
    ours = {entry["name"] for entry in entries}
    kept = [e for e in document.get(section, []) if not (isinstance(e, dict) and e.get("name") in ours)]
    return yaml.safe_dump({**document, section: [*kept, *entries]}, sort_keys=False)


def _write_credentials(path: Path, keys: Mapping[str, str]) -> None:
    """Set `keys` in HELM's HOCON credentials file, keeping other keys; created 0600."""
    from pyhocon import ConfigFactory

    existing: dict[str, Any] = dict(ConfigFactory.parse_file(str(path))) if path.exists() else {}
    values = {**{str(k): str(v) for k, v in existing.items()}, **keys}
    text = "".join(f"{key}: {json.dumps(value)}\n" for key, value in sorted(values.items()))
    temporary = path.with_name(f".{path.name}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    temporary.replace(path)
    path.chmod(0o600)


def prepare_local_path(
    local_path: Path, endpoints: Sequence[ModelEndpoint], environ: Mapping[str, str] = os.environ
) -> None:
    """Write the endpoints' deployments, metadata and keys into HELM's local path."""
    if not endpoints:
        return
    missing = [e.api_key_env for e in endpoints if e.api_key_env and not environ.get(e.api_key_env)]
    if missing:
        raise EndpointError(f"endpoint key variable(s) not set: {', '.join(sorted(missing))}")
    local_path.mkdir(parents=True, exist_ok=True)
    deployments = local_path / "model_deployments.yaml"
    write_text_atomic(deployments, _merged(deployments, "model_deployments", [_deployment(e) for e in endpoints]))
    metadata = local_path / "model_metadata.yaml"
    write_text_atomic(metadata, _merged(metadata, "models", [_metadata(e) for e in endpoints]))
    keys = {credential_key(e): environ[e.api_key_env] for e in endpoints if e.api_key_env}
    if keys:
        _write_credentials(local_path / "credentials.conf", keys)
