"""YAML for the files people edit (agent config, rate cards): ``safe_load`` that fails
only with a ``yaml.YAMLError`` carrying the line, so each loader turns every bad file into
its own clear error (ConfigError, RateCardError) and nothing else escapes."""

from __future__ import annotations

from typing import Any

import yaml


class _YamlLoader(yaml.SafeLoader):
    """SafeLoader whose scalar constructors fail with a YAMLError at the node's line:
    PyYAML lets ValueError & co. escape for an unquoted ``2026-02-30``, a 5000-digit integer,
    ``!!int x``, ``!!bool x``, ``!!timestamp x``."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except (ValueError, LookupError, AttributeError, TypeError, OverflowError) as exc:
            raise _constructor_error(node, exc) from None


def _constructor_error(node: yaml.Node, exc: Exception) -> yaml.MarkedYAMLError:
    kind = str(node.tag).rsplit(":", 1)[-1]
    what = f"{node.value[:40]!r} is no valid {kind}" if isinstance(node.value, str) else kind
    if isinstance(exc, ValueError | OverflowError):
        what += f": {str(exc)[:200]}"
    return yaml.MarkedYAMLError(problem=what, problem_mark=node.start_mark)


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` that fails only with YAMLError."""
    try:
        return yaml.load(text, Loader=_YamlLoader)  # noqa: S506 - a SafeLoader
    except RecursionError:
        raise yaml.MarkedYAMLError(problem="nested too deeply") from None
    except (ValueError, LookupError, AttributeError, TypeError, OverflowError) as exc:
        raise yaml.MarkedYAMLError(problem=str(exc)[:200] or type(exc).__name__) from None
