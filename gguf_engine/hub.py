"""Model references: a local path, `hf://owner/repo/file.gguf`, or a Hugging Face repo with a
filename glob. Hub files are resolved with huggingface_hub, which honours HF_HOME,
HF_HUB_CACHE and HF_HUB_OFFLINE; offline, a glob is matched against the local cache."""

from __future__ import annotations

import fnmatch
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

HF_PREFIX = "hf://"


class HubError(ValueError):
    """A model reference that cannot be resolved."""


def _cache_dir() -> Path:
    """Read at call time (huggingface_hub reads its constants once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "hub"


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def parse_ref(ref: str) -> tuple[str, str]:
    """'hf://owner/repo/path/file.gguf' -> ('owner/repo', 'path/file.gguf')."""
    parts = ref[len(HF_PREFIX):].split("/", 2)
    if len(parts) < 3 or not all(parts):
        raise HubError(f"bad model reference {ref!r}: expected hf://owner/repo/file.gguf")
    return f"{parts[0]}/{parts[1]}", parts[2]


def _cached_files(repo_id: str) -> list[str]:
    """Files of the cached snapshot of `repo_id` at refs/main (huggingface_hub's layout)."""
    repo_dir = _cache_dir() / ("models--" + repo_id.replace("/", "--"))
    ref = repo_dir / "refs" / "main"
    if not ref.is_file():
        return []
    snap = repo_dir / "snapshots" / ref.read_text().strip()
    return sorted(str(p.relative_to(snap)) for p in snap.rglob("*") if p.is_file())


def _unreachable() -> str | None:
    """Why the hub cannot be reached, when its host name does not even resolve (no network):
    huggingface_hub would retry for half a minute before saying so. None otherwise (with a
    proxy, the proxy resolves names)."""
    from huggingface_hub import constants

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    host = urlparse(constants.ENDPOINT).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443)
    except (socket.gaierror, UnicodeError) as e:
        return f"{host} cannot be resolved ({getattr(e, 'strerror', None) or e}): no network?"
    return None


def _not_cached(repo_id: str, filename: str, why: str | None = None) -> HubError:
    where = f"{repo_id}/{filename} is not in the Hugging Face cache ({_cache_dir()})"
    if why is None:
        return HubError(f"{where} and HF_HUB_OFFLINE is set: unset HF_HUB_OFFLINE to "
                        "download it")
    return HubError(f"{where} and cannot be downloaded: {why}; connect to the network, or use a "
                    "local file path")


def _cached_path(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, filename, cache_dir=_cache_dir())
    return Path(hit) if isinstance(hit, str) else None


def _match(repo_id: str, pattern: str, local: bool, why: str | None = None) -> str:
    if not any(c in pattern for c in "*?["):
        return pattern
    if local:
        files = _cached_files(repo_id)
    else:
        from huggingface_hub import HfApi

        try:
            files = HfApi().list_repo_files(repo_id)
        except Exception as e:  # no network, unknown repo, auth: say which
            files = _cached_files(repo_id)
            if not files:
                raise HubError(f"cannot list {repo_id}: {e.__class__.__name__}: {e}") from None
    matches = [f for f in files if fnmatch.fnmatch(f, pattern)]
    if not matches:
        where = "in the local cache" if local else "in the repository"
        raise HubError(f"no file matching {pattern!r} {where} {repo_id}"
                       + (f" (the hub cannot be reached: {why})" if why else ""))
    return sorted(matches)[0]


def download(repo_id: str, filename: str) -> Path:
    """The local path of a hub file, downloading it (with a progress bar) when needed."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = _offline()
    why = None if offline else _unreachable()
    filename = _match(repo_id, filename, local=offline or why is not None, why=why)
    if why is not None:  # no network: the cache serves, or one clear line, never retries
        hit = _cached_path(repo_id, filename)
        if hit is None:
            raise _not_cached(repo_id, filename, why)
        return hit
    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=_cache_dir(),
                                    local_files_only=offline))
    except LocalEntryNotFoundError:
        raise _not_cached(repo_id, filename) from None
    except Exception as e:
        raise HubError(f"cannot fetch {repo_id}/{filename}: {e.__class__.__name__}: {e}") from None


def cached_gguf_files() -> list[tuple[str, Path]]:
    """(owner/repo, path) of every .gguf file in the Hugging Face cache."""
    root = _cache_dir()
    out = []
    for repo_dir in sorted(root.glob("models--*")) if root.is_dir() else []:
        repo_id = repo_dir.name[len("models--"):].replace("--", "/", 1)
        out += [(repo_id, p) for p in sorted(repo_dir.glob("snapshots/*/**/*.gguf"))]
    return out


def resolve_model(ref, hf_repo: str | None = None, hf_file: str | None = None) -> Path:
    """A model reference -> a local file path."""
    if hf_repo or hf_file:
        if not (hf_repo and hf_file):
            raise HubError("--hf-repo and --hf-file go together")
        return download(hf_repo, hf_file)
    ref = str(ref)
    if ref.startswith(HF_PREFIX):
        return download(*parse_ref(ref))
    return Path(ref).expanduser()
