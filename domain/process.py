"""Deployment processes: ordered steps, what each does, and the checks a process passes."""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TypeVar
from uuid import UUID

from domain.codec import register_enum, register_record
from domain.errors import Rejected
from domain.packages import MAX_PACKAGES_PER_STEP, check_package_id, check_version
from domain.rules import MAX_DURATION_S, clean_name, name_key
from domain.targets import clean_roles

# An environment id: a UUID in the domain, its text in a read model.
K = TypeVar("K", bound=Hashable)

MAX_SCRIPT_BYTES = 1024 * 1024
MAX_STEPS = 200
DEFAULT_MAX_PARALLELISM = 10
MAX_PARALLELISM = 1000


@register_enum
class Action(str, Enum):
    """What a step does."""

    SCRIPT = "script"
    EMAIL = "email"
    MANUAL_INTERVENTION = "manual_intervention"
    IMPORT_CERTIFICATE = "import_certificate"

    @property
    def runs_user_code(self) -> bool:
        """Only script steps run user code, so only they ever go to a worker."""
        return self is Action.SCRIPT


@register_enum
class Syntax(str, Enum):
    """Script languages."""

    BASH = "bash"
    SH = "sh"
    PYTHON = "python"


@register_enum
class Start(str, Enum):
    """When a step starts relative to the one before it."""

    AFTER_PREVIOUS = "after_previous"
    WITH_PREVIOUS = "with_previous"


@register_enum
class Condition(str, Enum):
    """Whether a step runs, given how the steps before it went."""

    SUCCESS = "success"
    FAILURE = "failure"
    ALWAYS = "always"


@register_record
@dataclass(frozen=True)
class Email:
    """An email step's message."""

    to: tuple[str, ...]
    subject: str
    body: str


@register_record
@dataclass(frozen=True)
class Certificate:
    """An import-certificate step's PEM and the name to store it under. Private keys are
    taken out before the step is stored (``dropped_private_key`` says one was there)."""

    name: str
    pem: str
    dropped_private_key: bool = False


_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----\s*", re.S
)


def without_private_keys(certificate: Certificate) -> Certificate:
    """The certificate with any private key blocks removed from its PEM: keys must not
    sit in events (processes, tasks) in clear text."""
    pem, found = _PRIVATE_KEY.subn("", certificate.pem)
    if not found:
        return certificate
    return replace(certificate, pem=pem, dropped_private_key=True)


@register_record
@dataclass(frozen=True)
class Step:
    """One step of a process (or the single step of an ad-hoc script task)."""

    name: str
    action: Action
    worker_pool_id: UUID | None = None
    syntax: Syntax | None = None
    script_body: str | None = None
    start: Start = Start.AFTER_PREVIOUS
    condition: Condition = Condition.SUCCESS
    timeout_s: int | None = None
    max_parallelism: int | None = None
    email: Email | None = None
    instructions: str | None = None
    certificate: Certificate | None = None
    packages: tuple[tuple[str, str], ...] = field(default=())
    # Run once per enabled target in the run's environment that has any of these roles.
    on_behalf_of_roles: tuple[str, ...] = field(default=())
    # With on_behalf_of_roles: skip the step (rather than fail it) when no target matches.
    skip_if_no_targets: bool = False
    # Run only in runs into these environments (by name); none: everywhere.
    environments: tuple[str, ...] = field(default=())
    # The same environments by id, in the same order (set when the process is saved; empty
    # in processes saved before ids were kept): a run takes their names at that moment,
    # so renaming an environment does not leave the step scoped to a name that is gone.
    environment_ids: tuple[UUID, ...] = field(default=())


def check_script(syntax: Syntax | None, script_body: str | None, step: str | None = None) -> None:
    """A script needs a syntax and a non-empty body of at most 1 MiB. Messages name
    ``step`` when given."""
    where = f"step {step!r}: " if step is not None else ""
    if syntax is None:
        raise Rejected(f"{where}a script step needs a syntax: bash, sh or python")
    if script_body is None or not script_body.strip():
        raise Rejected(f"{where}script_body must not be empty")
    if len(script_body.encode()) > MAX_SCRIPT_BYTES:
        raise Rejected(f"{where}script_body must be at most {MAX_SCRIPT_BYTES} bytes")


def check_step(step: Step) -> Step:
    """Reject a step whose fields do not fit its action."""
    name = clean_name(step.name, "step name")
    if step.timeout_s is not None and step.timeout_s <= 0:
        raise Rejected(f"step {name!r}: timeout_s must be positive")
    if step.timeout_s is not None and step.timeout_s > MAX_DURATION_S:
        raise Rejected(f"step {name!r}: timeout_s must be at most {MAX_DURATION_S}")
    if step.max_parallelism is not None and step.max_parallelism < 1:
        raise Rejected(f"step {name!r}: max_parallelism must be at least 1")
    if step.max_parallelism is not None and step.max_parallelism > MAX_PARALLELISM:
        raise Rejected(f"step {name!r}: max_parallelism must be at most {MAX_PARALLELISM}")
    step = _check_action(step, name)
    if step.skip_if_no_targets and not step.on_behalf_of_roles:
        raise Rejected(f"step {name!r}: skip_if_no_targets needs on_behalf_of_roles")
    step = replace(
        step,
        on_behalf_of_roles=clean_step_roles(step.on_behalf_of_roles, name),
        environments=clean_step_environments(step.environments, name),
    )
    return step if name == step.name else replace(step, name=name)


def _check_action(step: Step, name: str) -> Step:
    """The fields a step's action needs, and none that only other actions take."""
    if step.action is Action.SCRIPT:
        check_script(step.syntax, step.script_body, name)
        check_step_packages(step.packages, name)
    elif step.worker_pool_id is not None or step.script_body is not None or step.packages:
        raise Rejected(f"step {name!r}: a {step.action.value} step runs in the server and "
                       "takes no worker_pool_id, script_body or packages")
    elif step.on_behalf_of_roles:
        raise Rejected(f"step {name!r}: only script steps run on behalf of roles")
    if step.action is Action.EMAIL:
        if step.email is None or not step.email.to:
            raise Rejected(f"step {name!r}: an email step needs email.to")
        for address in step.email.to:
            if "@" not in address or any(c in address for c in " \r\n"):
                raise Rejected(f"step {name!r}: {address!r} is not an email address")
    if step.action is Action.IMPORT_CERTIFICATE:
        if step.certificate is None or not step.certificate.pem.strip():
            raise Rejected(f"step {name!r}: an import_certificate step needs certificate.pem")
        step = replace(step, certificate=without_private_keys(step.certificate))
    return step


def clean_step_roles(roles: tuple[str, ...], step: str) -> tuple[str, ...]:
    """The roles a step runs on behalf of, checked as a target's roles are (each once,
    whatever its case, order kept); none means the step is not run on behalf of roles."""
    if not roles:
        return ()
    try:
        return clean_roles(roles)
    except Rejected as exc:
        raise Rejected(f"step {step!r}: {exc}") from None


def clean_step_environments(names: tuple[str, ...], step: str) -> tuple[str, ...]:
    """The environments a step is scoped to: valid names, each once. Whether they exist
    is the application's check."""
    cleaned: list[str] = []
    for raw in names:
        name = clean_name(raw, f"step {step!r}: an environment name")
        if name_key(name) in {name_key(n) for n in cleaned}:
            raise Rejected(f"step {step!r}: environment {name!r} is listed twice")
        cleaned.append(name)
    return tuple(cleaned)


def current_environment_names(
    ids: Sequence[K], saved: Sequence[str], names: Mapping[K, str]
) -> tuple[str, ...]:
    """A step's environments (``ids``, and the names ``saved`` with them) under their
    names now (``names``: by id, at least the step's that still exist). One that no longer
    exists keeps the name it was saved with, which no run is into: the step is skipped
    rather than run everywhere. Without ids, or with lists that do not line up (never
    written so, but a projection must not fail on a stored event), the names as saved."""
    if not ids or len(ids) != len(saved):
        return tuple(saved)
    return tuple(names.get(env_id, name) for env_id, name in zip(ids, saved, strict=True))


def with_current_environments(step: Step, names: Mapping[UUID, str]) -> Step:
    """The step scoped to its environments under their names now (see
    current_environment_names)."""
    current = current_environment_names(step.environment_ids, step.environments, names)
    return step if current == step.environments else replace(step, environments=current)


def check_step_packages(packages: tuple[tuple[str, str], ...], step: str) -> None:
    """A script step's packages: valid ids and versions, each id once, at most
    MAX_PACKAGES_PER_STEP. Whether they were pushed is checked when the step runs."""
    if len(packages) > MAX_PACKAGES_PER_STEP:
        raise Rejected(f"step {step!r}: at most {MAX_PACKAGES_PER_STEP} packages")
    seen: set[str] = set()
    for package_id, version in packages:
        try:
            check_package_id(package_id)
            check_version(version)
        except Rejected as exc:
            raise Rejected(f"step {step!r}: {exc}") from None
        if package_id in seen:
            raise Rejected(f"step {step!r}: package {package_id!r} is listed twice")
        seen.add(package_id)


def check_process(steps: tuple[Step, ...]) -> tuple[Step, ...]:
    """A process: up to MAX_STEPS valid steps with unique names; the first step cannot
    start with a previous one."""
    if len(steps) > MAX_STEPS:
        raise Rejected(f"a process has at most {MAX_STEPS} steps")
    checked = tuple(check_step(s) for s in steps)
    seen: set[str] = set()
    for step in checked:
        key = step.name.casefold()
        if key in seen:
            raise Rejected(f"two steps are named {step.name!r}; step names must be unique")
        seen.add(key)
    if checked and checked[0].start is Start.WITH_PREVIOUS:
        raise Rejected(f"step {checked[0].name!r} is first, so it cannot start with_previous")
    return checked
