"""JSON schema checks with readable reasons, shared by plans, tool arguments and edits."""

import jsonschema


def schema_errors(schema: dict, value: object, root: str = "arguments") -> list[str]:
    """Every way `value` breaks the JSON `schema`, as "path: reason" sentences in path order."""
    errors = jsonschema.Draft202012Validator(schema).iter_errors(value)
    return [
        f"{'/'.join(str(p) for p in error.absolute_path) or root}: {error.message}"
        for error in sorted(errors, key=lambda e: ([str(p) for p in e.absolute_path], e.message))
    ]
