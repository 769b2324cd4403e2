"""Dashboard views, one module per page. Thin: resolve objects through `orchestra.access`,
read through `orchestra.dashboard.queries`, change state only through the services."""
