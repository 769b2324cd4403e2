from django.apps import AppConfig


class OrchestraConfig(AppConfig):
    name = "orchestra"
    verbose_name = "Orchestra"

    def ready(self) -> None:
        # Register every Celery task by name in this process too: the queue looks tasks up
        # by name, in the web process (embedded worker) as in a Celery worker.
        import approvals.tasks  # noqa: F401
        import orchestra.tasks  # noqa: F401
