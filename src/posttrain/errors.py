"""The project's one error type family.

Every problem caused by the user's input (config, data files, CLI arguments, model paths) is raised as a
`PosttrainError` whose message is a single line naming the file, line or field and what was expected. The CLI
prints it as `error: <message>` and exits with status 2; anything else escaping is a bug.
"""

import difflib

# Characters str.splitlines() breaks on: a value quoted in a message (a label, a cell) must not break the line.
_LINE_BREAKS = {c: repr(chr(c))[1:-1] for c in (0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029)}


class PosttrainError(Exception):
    """Base class: a user-facing, one-line error.

    ``str()`` escapes line breaks (``\\n``, ``\\r``, ...) that user values quoted in the message may carry, so
    the message stays one line whatever the input.
    """

    def __str__(self) -> str:
        return super().__str__().translate(_LINE_BREAKS)


class ConfigError(PosttrainError):
    """A config file, key or value is wrong."""


class DataError(PosttrainError):
    """A data file or one of its rows is wrong."""


class ModelLoadError(PosttrainError):
    """A model, tokenizer or checkpoint cannot be loaded."""


class TrainingError(PosttrainError):
    """Training cannot continue (e.g. the loss became NaN or infinite); earlier checkpoints are kept."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (or its type name): how a library's error is quoted in ours."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def did_you_mean(name, options, cutoff: float = 0.5, shown: str = "") -> str:
    """"; did you mean 'x'?" for the option closest to ``name`` (``shown`` prefixes it), else "": the hint every
    one-line error about an unknown name ends with."""
    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=cutoff)
    return f"; did you mean '{shown}{close[0]}'?" if close else ""
