"""CLI command groups. Each module has `register(subparsers)` and handlers that call one library
function; no logic lives here."""
