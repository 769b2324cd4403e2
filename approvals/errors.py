"""What a refused decision raises: the API, the dashboard and the CLI map these to answers."""

from approvals.models import Checkpoint


class AlreadyDecided(Exception):
    def __init__(self, checkpoint: Checkpoint):
        who = checkpoint.decided_by.get_username() if checkpoint.decided_by else "the system"
        super().__init__(f"This checkpoint was already {checkpoint.status} by {who}.")
        self.checkpoint = checkpoint


class AlreadyVoted(Exception):
    """The same person approving twice counts once."""


class InvalidDecision(Exception):
    """Bad input: the message says what to fix."""
