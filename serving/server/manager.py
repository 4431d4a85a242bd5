"""Model versions: discovery by polling, TF Serving's version policies,
labels, load/unload and status.

Policy (`model_version_policy`, TF Serving's semantics and default):
* `latest { num_versions: N }` (default N = 1): the N highest versions on disk;
* `all {}`: every version on disk;
* `specific { versions: [...] }`: those versions, when present.
A new version is loaded (and warmed up) before the one it replaces is
unloaded, so a model stays available while versions change. A version that
fails to load is reported as END with its error and not retried until its
directory changes.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Callable

from tensorflow_serving.config import model_server_config_pb2

from serving.server.errors import ServingError, invalid, not_found

log = logging.getLogger(__name__)


@dataclasses.dataclass
class VersionStatus:
    """One row of GetModelStatus: state is a ModelVersionStatus.State name."""

    version: int
    state: str
    error_code: str = "OK"
    error_message: str = ""


def versions_on_disk(base_path: str) -> dict[int, str]:
    """{version: path} of integer directories holding a saved_model.pb."""
    if not os.path.isdir(base_path):
        return {}
    found = {}
    for name in os.listdir(base_path):
        path = os.path.join(base_path, name)
        if name.isdigit() and os.path.exists(os.path.join(path, "saved_model.pb")):
            found[int(name)] = path
    return found


def select_versions(policy, available: list[int]) -> set[int]:
    """The versions a `ServableVersionPolicy` serves out of those on disk."""
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return set(available)
    if choice == "specific":
        return set(policy.specific.versions) & set(available)
    count = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions else 1
    return set(sorted(available)[-count:])


class _Model:
    def __init__(self, config):
        self.config = config
        self.servables: dict = {}  # version -> Servable (AVAILABLE)
        self.status: dict[int, VersionStatus] = {}
        self.failed: dict[int, float] = {}  # version -> mtime of the failed directory


class ModelManager:
    """Keeps the configured models' versions loaded according to policy.

    `load(name, version, path)` builds a servable (load + warm-up) and
    `on_change(name, n_available)` is told about availability changes."""

    def __init__(self, config: model_server_config_pb2.ModelServerConfig, load: Callable,
                 poll_seconds: float = 1.0, on_change: Callable[[str, int], None] | None = None):
        self._models = {m.name: _Model(m) for m in config.model_config_list.config}
        self._load = load
        self._poll_seconds = poll_seconds
        self._on_change = on_change
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._poll_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Loads the initial versions, then polls in a thread (if poll_seconds > 0)."""
        self.poll()
        if self._poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="version-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=60)
        with self._lock:
            for model in self._models.values():
                for servable in model.servables.values():
                    servable.close()
                model.servables.clear()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - keep polling
                log.exception("version poll failed")

    def poll(self) -> None:
        """One pass over every model: load wanted versions, then unload others."""
        with self._poll_lock:
            for name, model in self._models.items():
                self._sync(name, model)

    def _sync(self, name: str, model: _Model) -> None:
        on_disk = versions_on_disk(model.config.base_path)
        wanted = select_versions(model.config.model_version_policy, list(on_disk))
        for version in sorted(wanted - set(model.servables)):
            mtime = os.path.getmtime(on_disk[version])
            if model.failed.get(version) == mtime:
                continue
            self._load_version(name, model, version, on_disk[version], mtime)
        for version in sorted(set(model.servables) - wanted):
            self._unload_version(name, model, version)

    def _set_status(self, model: _Model, version: int, state: str, code: str = "OK", message: str = "") -> None:
        with self._lock:
            model.status[version] = VersionStatus(version, state, code, message)

    def _load_version(self, name: str, model: _Model, version: int, path: str, mtime: float) -> None:
        log.info("loading model %s version %d from %s", name, version, path)
        self._set_status(model, version, "LOADING")
        try:
            servable = self._load(name, version, path)
        except Exception as err:  # noqa: BLE001 - report, keep serving the others
            code = err.code_name if isinstance(err, ServingError) else "UNKNOWN"
            log.error("model %s version %d failed to load: %s", name, version, err)
            model.failed[version] = mtime
            self._set_status(model, version, "END", code, f"Failed to load: {err}")
            return
        with self._lock:
            model.servables[version] = servable
            model.failed.pop(version, None)
            model.status[version] = VersionStatus(version, "AVAILABLE")
            available = len(model.servables)
        log.info("model %s version %d is AVAILABLE", name, version)
        if self._on_change:
            self._on_change(name, available)

    def _unload_version(self, name: str, model: _Model, version: int) -> None:
        with self._lock:
            servable = model.servables.pop(version)
            model.status[version] = VersionStatus(version, "UNLOADING")
            available = len(model.servables)
        if self._on_change:
            self._on_change(name, available)
        servable.close()  # in-flight requests keep their reference and finish
        self._set_status(model, version, "END")
        log.info("model %s version %d unloaded", name, version)

    # -------------------------------------------------------------- lookups

    def _model(self, name: str, what: str) -> _Model:
        if name not in self._models:
            raise not_found(what)
        return self._models[name]

    def _label_version(self, model: _Model, label: str) -> int:
        labels = model.config.version_labels
        if label not in labels:
            raise invalid(f"Unrecognized servable version label: {label}")
        return labels[label]

    def get(self, name: str, version: int | None = None, label: str | None = None):
        """The servable a request addresses (latest available by default)."""
        if version is not None and label:
            raise invalid("ModelSpec has both version and version_label set; use one")
        what = f"Servable not found for request: Latest({name})"
        model = self._model(name, what)
        if label:
            version = self._label_version(model, label)
        with self._lock:
            if version is None:
                if not model.servables:
                    raise not_found(what)
                return model.servables[max(model.servables)]
            if version not in model.servables:
                raise not_found(f"Servable not found for request: Specific({name}, {version})")
            return model.servables[version]

    def status(self, name: str, version: int | None = None, label: str | None = None) -> list[VersionStatus]:
        """GetModelStatus rows, highest version first."""
        model = self._model(name, f"Could not find any versions of model {name}")
        if label:
            version = self._label_version(model, label)
        with self._lock:
            rows = sorted(model.status.values(), key=lambda s: -s.version)
        if version is not None:
            rows = [r for r in rows if r.version == version]
            if not rows:
                raise not_found(f"Could not find version {version} of model {name}")
        elif not rows:
            raise not_found(f"Could not find any versions of model {name}")
        return rows

    def has_model(self, name: str) -> bool:
        """Whether `name` is a configured model (a fixed set: safe as a metric label)."""
        return name in self._models

    def model_names(self) -> list[str]:
        return sorted(self._models)
