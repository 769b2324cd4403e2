"""The tools agents call, by area: the registry, confinement, files, patches, processes and
deploys. Importing this package registers every tool."""

from agents.tools.confinement import NO_ARGUMENTS, PATH_ARG, confined_path
from agents.tools.deploy import RECEIPTS_FOLDER, deploy, deploy_receipt
from agents.tools.files import list_files, read_file, search_text, write_diff, write_file
from agents.tools.patches import apply_patch, patch_paths, patch_preview
from agents.tools.processes import (
    Finished,
    command_allowlisted,
    run_command,
    run_in_workspace,
    run_tests,
)
from agents.tools.registry import (
    READ_ONLY_ROLES,
    REGISTRY,
    Risk,
    Tool,
    ToolContext,
    ToolError,
    register,
    schema_errors,
    toolset_for,
)

__all__ = [
    "Finished",
    "NO_ARGUMENTS",
    "PATH_ARG",
    "READ_ONLY_ROLES",
    "RECEIPTS_FOLDER",
    "REGISTRY",
    "Risk",
    "Tool",
    "ToolContext",
    "ToolError",
    "apply_patch",
    "command_allowlisted",
    "confined_path",
    "deploy",
    "deploy_receipt",
    "list_files",
    "patch_paths",
    "patch_preview",
    "read_file",
    "register",
    "run_command",
    "run_in_workspace",
    "run_tests",
    "schema_errors",
    "search_text",
    "toolset_for",
    "write_diff",
    "write_file",
]
