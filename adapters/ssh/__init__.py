"""SSH workers: steps run over SSH on machines without an agent (asyncssh)."""

from adapters.ssh.connections import HostKeyMismatch, SshConnections, SshError, SshTarget, SshUnavailable
from adapters.ssh.runner import SshStepRunner

__all__ = ["HostKeyMismatch", "SshConnections", "SshError", "SshStepRunner", "SshTarget", "SshUnavailable"]
