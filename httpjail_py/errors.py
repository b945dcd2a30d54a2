"""The few exceptions httpjail raises on purpose.

    HttpjailError            anything the user can act on; the CLI prints it as one line
    ├── ConfigError          a flag or environment variable has a bad value
    ├── JailSetupError       the jail could not be built (missing tool, no permission, port in use)
    └── RuleError            a rule could not be loaded (syntax error, unreadable file)

Everything else is a bug and keeps its traceback.
"""

__all__ = ["HttpjailError", "ConfigError", "JailSetupError", "RuleError"]


class HttpjailError(Exception):
    """An error with a message meant for the person at the terminal."""

    exit_code = 1


class ConfigError(HttpjailError):
    exit_code = 2


class JailSetupError(HttpjailError):
    exit_code = 1


class RuleError(HttpjailError):
    exit_code = 2
