"""The one error a configuration raises, whatever reads it."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config file that cannot be used; ``str()`` gives one line per problem."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        super().__init__(
            "\n".join(
                f"{source}: {where}: {what}" if where else f"{source}: {what}"
                for where, what in problems
            )
        )

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, list[tuple[str, str]]]]:
        # copy and pickle rebuild it from its parts (the config cache raises copies)
        return type(self), (self.source, self.problems)
