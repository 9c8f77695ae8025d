"""The step schema of the API and its translation to domain steps."""

from __future__ import annotations

from uuid import UUID

from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr

from adapters.http.schemas import Request
from domain.app import Shoal
from domain.errors import NotFound, Rejected
from domain.process import Action, Certificate, Condition, Email, Start, Step, Syntax


class EmailIn(Request):
    """The message of an email step."""

    to: list[StrictStr] = Field(min_length=1)
    subject: StrictStr = ""
    body: StrictStr = ""


class CertificateIn(Request):
    """The certificate of an import_certificate step."""

    name: StrictStr = ""
    pem: StrictStr


class PackageIn(Request):
    """A package from the built-in feed that a script step gets in its working folder."""

    id: StrictStr
    version: StrictStr


class StepIn(Request):
    """One step of a process."""

    name: StrictStr
    action: Action
    worker_pool_id: StrictStr | None = Field(None, description="Pool id or name")
    syntax: Syntax | None = None
    script_body: StrictStr | None = None
    start: Start = Start.AFTER_PREVIOUS
    condition: Condition = Condition.SUCCESS
    timeout_s: StrictInt | None = None
    max_parallelism: StrictInt | None = None
    email: EmailIn | None = None
    instructions: StrictStr | None = None
    certificate: CertificateIn | None = None
    packages: list[PackageIn] = Field(default_factory=list)
    on_behalf_of_roles: list[StrictStr] = Field(
        default_factory=list, description="Run once per target in the run's environment "
        "with any of these roles"
    )
    skip_if_no_targets: StrictBool = Field(
        False, description="With on_behalf_of_roles: skip the step, not fail it, when no "
        "target matches"
    )
    environments: list[StrictStr] = Field(
        default_factory=list, description="Run only in runs into these environments (names)"
    )


class StepOut(BaseModel):
    """A step as stored."""

    name: str
    action: Action
    worker_pool_id: str | None
    syntax: Syntax | None
    script_body: str | None
    start: Start
    condition: Condition
    timeout_s: int | None
    max_parallelism: int | None
    email: dict[str, object] | None
    instructions: str | None
    certificate: dict[str, object] | None
    packages: list[dict[str, str]] = Field(default_factory=list)
    on_behalf_of_roles: list[str] = Field(default_factory=list)
    skip_if_no_targets: bool = False
    environments: list[str] = Field(default_factory=list)


def pool_ref(app: Shoal, ref: str | None) -> UUID | None:
    """A pool named by id or name, as an id; 422 when there is no such pool."""
    if ref is None:
        return None
    try:
        return app.resolve_pool(ref).id
    except NotFound:
        raise Rejected(f"worker pool {ref!r} does not exist") from None


def to_step(app: Shoal, step: StepIn) -> Step:
    """The domain step for an API step (checked later, with the whole process)."""
    return Step(
        name=step.name,
        action=step.action,
        worker_pool_id=pool_ref(app, step.worker_pool_id),
        syntax=step.syntax,
        script_body=step.script_body,
        start=step.start,
        condition=step.condition,
        timeout_s=step.timeout_s,
        max_parallelism=step.max_parallelism,
        email=Email(tuple(step.email.to), step.email.subject, step.email.body)
        if step.email else None,
        instructions=step.instructions,
        certificate=Certificate(step.certificate.name, step.certificate.pem)
        if step.certificate else None,
        packages=tuple((p.id, p.version) for p in step.packages),
        on_behalf_of_roles=tuple(step.on_behalf_of_roles),
        skip_if_no_targets=step.skip_if_no_targets,
        environments=tuple(step.environments),
    )
