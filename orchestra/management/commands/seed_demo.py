from django.core.management.base import BaseCommand

from orchestra.seed import seed_demo


class Command(BaseCommand):
    help = "Seed the team templates, the demo project and the admin user (idempotent)."

    def handle(self, *args, **options):
        password = seed_demo()
        if password:
            self.stdout.write(f"Created user admin with password: {password}")
        else:
            self.stdout.write("Demo project and team templates are in place.")
