"""Brainwave's deployment names over fpga-serve's remote lifecycle (``fpga_serve_client``).

The how-to's deployment code runs with its import lines changed (docs/brainwave.md):

    from fpga_serve.brainwave.deploy import Workspace, Model, Webservice, WebserviceException
    from fpga_serve.brainwave import BrainwaveWebservice, BrainwaveImage

- ``Workspace.from_config()`` reads ``config.json`` (or ``.azureml/config.json``) in the current
  folder or a parent: ``{"address": "host:8500", "access_token": "...", "use_ssl": true,
  "ca_cert": "ca.pem"}``; the key may come from ``FPGA_SERVE_TOKEN`` instead.
- ``Model.register(ws, path, name)`` uploads the zip to the server's repository (validated,
  stored, not loaded) as the next version of ``name``; ``model.delete()`` removes that version.
- ``Webservice.deploy_from_model(ws, service_name, [model], ...)`` uploads the model's zip as
  ``service_name`` and loads it (``PredictionClient.deploy``); ``service.run(image)`` returns the
  class confidences; ``service.delete()`` unloads it (in-flight requests finish) and removes it.
  ``Webservice(ws, name)`` finds a deployed (loaded) service or raises WebserviceException.
- The image and deployment configurations are accepted and have no settings: the server's own
  flags (batching, device, keys, TLS) decide how it serves.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fpga_serve_client import (
    DeployedModel,
    ModelStatus,
    PredictionClient,
    ServiceError,
    token_from_environment,
)

from fpga_serve.core.errors import InvalidInput

CONFIG_NAMES = ("config.json", ".azureml/config.json", "aml_config/config.json")

__all__ = [
    "BrainwaveImage",
    "BrainwaveWebservice",
    "Model",
    "Webservice",
    "WebserviceException",
    "Workspace",
]


class WebserviceException(Exception):
    """A service could not be found, deployed, called or deleted (the message says why)."""


def _failed(what: str, exc: ServiceError) -> WebserviceException:
    return WebserviceException(f"{what}: {exc.code.name}: {exc.details}")


@dataclass
class Workspace:
    """The server to deploy to (Azure's workspace): its address and credentials."""

    address: str
    access_token: str | None = None
    use_ssl: bool = False
    ca_cert: Path | None = None
    name: str = ""
    resource_group: str = ""
    subscription_id: str = ""
    location: str = field(init=False)

    def __post_init__(self) -> None:
        self.location = self.address
        self.name = self.name or self.address

    @classmethod
    def from_config(cls, path: str | Path | None = None, **_: Any) -> Workspace:
        """Read the first config file found (``path``, a file or folder, or the current folder
        and its parents)."""
        found = _find_config(Path(path).expanduser() if path else None)
        try:
            data = json.loads(found.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"cannot read the workspace config {found}: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("address"), str):
            raise InvalidInput(f'{found} must hold a JSON object with "address": "host:port"')
        ca_cert = data.get("ca_cert")
        return cls(
            address=data["address"],
            access_token=data.get("access_token") or token_from_environment(),
            use_ssl=bool(data.get("use_ssl", False) or ca_cert),
            ca_cert=(found.parent / ca_cert) if ca_cert else None,
            name=str(data.get("workspace_name", "")),
            resource_group=str(data.get("resource_group", "")),
            subscription_id=str(data.get("subscription_id", "")),
        )

    def client(self) -> PredictionClient:
        roots = self.ca_cert.read_bytes() if self.ca_cert else None
        return PredictionClient(
            self.address,
            use_ssl=self.use_ssl,
            access_token=self.access_token,
            root_certificates=roots,
        )


def _find_config(given: Path | None) -> Path:
    if given is not None:
        candidates = [given] if given.is_file() else [given / n for n in CONFIG_NAMES]
    else:
        folders = [Path.cwd(), *Path.cwd().parents]
        candidates = [folder / n for folder in folders for n in CONFIG_NAMES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InvalidInput(
        "no workspace config found (config.json naming the server: "
        '{"address": "host:8500", "access_token": "..."}), looked in '
        + (str(given) if given is not None else "the current folder and its parents")
    )


class Model:
    """A pipeline zip stored on the server (registered), by name and version."""

    def __init__(self, workspace: Workspace, name: str, version: str | int | None = None) -> None:
        """Look up a stored model (the highest version unless given)."""
        with workspace.client() as client:
            try:
                stored = [m for m in client.models(name) if m.stored]
            except ServiceError as exc:
                raise _failed(f"cannot list model {name!r}", exc) from None
        if version is not None:
            stored = [m for m in stored if m.version == str(version)]
        if not stored:
            raise WebserviceException(f"no model {name!r} version {version or 'any'} is stored")
        self._set(workspace, stored[-1], None)

    def _set(self, workspace: Workspace, status: ModelStatus, path: Path | None) -> None:
        self.workspace = workspace
        self.name = status.name
        self.version = status.version
        self.id = f"{status.name}:{status.version}"
        self.path = path

    @staticmethod
    def register(workspace: Workspace, model_path: str | Path, model_name: str, **_: Any) -> Model:
        """Upload the zip as the next version of ``model_name`` (stored, not loaded)."""
        path = Path(model_path).expanduser()
        with workspace.client() as client:
            try:
                status = client.upload(path, model_name)
            except ServiceError as exc:
                raise _failed(f"cannot register {path} as {model_name!r}", exc) from None
        model = Model.__new__(Model)
        model._set(workspace, status, path)
        return model

    def delete(self) -> None:
        with self.workspace.client() as client:
            try:
                client.delete_model(self.name, self.version)
            except ServiceError as exc:
                raise _failed(f"cannot delete model {self.id}", exc) from None

    def __repr__(self) -> str:
        return f"Model({self.name!r}, version={self.version!r})"


class Webservice:
    """A deployed (loaded) model answering under the service's name."""

    def __init__(self, workspace: Workspace, name: str) -> None:
        """Find a deployed service, or raise WebserviceException."""
        with workspace.client() as client:
            try:
                ready = [m for m in client.models(name) if m.state == "READY"]
            except ServiceError as exc:
                raise _failed(f"cannot look up service {name!r}", exc) from None
        if not ready:
            raise WebserviceException(f"no service {name!r} is deployed on {workspace.address}")
        self._set(workspace, name, ready[-1].version)

    def _set(self, workspace: Workspace, name: str, version: str) -> None:
        self.workspace = workspace
        self.name = name
        self.version = version
        self.scoring_uri = workspace.address
        self.state = "Healthy"
        self._client: PredictionClient | None = None

    @staticmethod
    def deploy_from_model(
        workspace: Workspace,
        name: str,
        models: list[Model],
        image_config: Any = None,
        deployment_config: Any = None,
        deployment_target: Any = None,
    ) -> BrainwaveWebservice:
        """Deploy one registered model as service ``name`` (uploaded under that name, loaded)."""
        if len(models) != 1:
            raise WebserviceException(f"a service runs one pipeline zip, not {len(models)} models")
        (model,) = models
        if model.path is None:
            raise WebserviceException(
                f"model {model.id} was looked up, not registered from a file in this process: "
                "deploy needs the zip (Model.register it, or fpga-serve-client deploy ZIP)"
            )
        with workspace.client() as client:
            try:
                deployed: DeployedModel = client.deploy(model.path, name)
            except ServiceError as exc:
                raise _failed(f"cannot deploy service {name!r}", exc) from None
        service = BrainwaveWebservice.__new__(BrainwaveWebservice)
        service._set(workspace, deployed.name, deployed.version)
        return service

    def wait_for_deployment(self, show_output: bool = False) -> None:
        """Deployment waits for the load already; this only reports."""
        if show_output:
            print(f"{self.name} version {self.version}: {self.state}")

    def run(self, input_data: str | Path | bytes | IO[Any]) -> list[float]:
        """Class confidences for one image (a path, bytes, or an open file)."""
        from fpga_serve_client.management import read_image

        if self._client is None:
            self._client = self.workspace.client().for_model(self.name)
        try:
            scores = self._client.score_image(read_image(input_data))
        except ServiceError as exc:
            raise _failed(f"service {self.name!r} failed", exc) from None
        return [float(s) for s in scores.reshape(-1)]

    def delete(self) -> None:
        """Unload the service (in-flight requests finish first) and remove it from the server."""
        with self.workspace.client() as client:
            try:
                client.delete_model(self.name)
            except ServiceError as exc:
                raise _failed(f"cannot delete service {self.name!r}", exc) from None
        if self._client is not None:
            self._client.close()
            self._client = None
        self.state = "Deleted"


@dataclass(frozen=True)
class BrainwaveDeploymentConfiguration:
    """Accepted for compatibility; the server's flags decide how it serves."""

    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BrainwaveImageConfiguration:
    """Accepted for compatibility; there is no image to build (the zip is the deployment)."""

    options: dict[str, Any] = field(default_factory=dict)


class BrainwaveWebservice(Webservice):
    @staticmethod
    def deploy_configuration(**options: Any) -> BrainwaveDeploymentConfiguration:
        return BrainwaveDeploymentConfiguration(dict(options))


class BrainwaveImage:
    @staticmethod
    def image_configuration(**options: Any) -> BrainwaveImageConfiguration:
        return BrainwaveImageConfiguration(dict(options))
