"""Projects: list the ones a user can see, create one."""

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from ninja.errors import HttpError

from orchestra.access import visible_projects
from orchestra.api.app import Status, api, request_user
from orchestra.api.schemas import ErrorOut, ProjectIn, ProjectListOut, ProjectOut
from orchestra.engine import projects as project_services
from orchestra.models import Project


def project_json(project: Project) -> dict:
    return {"slug": project.slug, "name": project.name, "team": project.team}


@api.get("/projects", response=ProjectListOut, summary="Projects you can see")
def list_projects(request: HttpRequest):
    projects = visible_projects(request_user(request)).order_by("name")
    return {"projects": [project_json(project) for project in projects]}


@api.post(
    "/projects",
    response={201: ProjectOut, 400: ErrorOut, 403: ErrorOut, 409: ErrorOut},
    summary="Create a project (superusers only)",
)
def create_project(request: HttpRequest, payload: ProjectIn):
    project = _create_project(request_user(request), payload.slug, payload.name, payload.team)
    return Status(201, project_json(project))


def _create_project(user: AbstractBaseUser, slug: str, name: str, team: str) -> Project:
    try:
        return project_services.create_project(user, slug, name, team)
    except project_services.InvalidProject as exc:
        raise HttpError(400, str(exc)) from None
    except project_services.ProjectExists as exc:
        raise HttpError(409, str(exc)) from None
