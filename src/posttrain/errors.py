"""The project's one error type family.

Every problem caused by the user's input (config, data files, CLI arguments, model paths) is raised as a
`PosttrainError` whose message is a single line naming the file, line or field and what was expected. The CLI
prints it as `error: <message>` and exits with status 2; anything else escaping is a bug.
"""


class PosttrainError(Exception):
    """Base class: a user-facing, one-line error."""


class ConfigError(PosttrainError):
    """A config file, key or value is wrong."""


class DataError(PosttrainError):
    """A data file or one of its rows is wrong."""


class ModelLoadError(PosttrainError):
    """A model, tokenizer or checkpoint cannot be loaded."""
