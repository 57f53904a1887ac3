"""Shared command-line plumbing for tools/*.py: Hydra composition, positional inputs, one-line errors."""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from asap.errors import AsapError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def fail(message: str, code: int = 2) -> None:
    """Print one line to stderr and exit with ``code``."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run ``fn``; user errors (AsapError, bad config, missing files) become one line on stderr and exit 2."""
    from omegaconf.errors import OmegaConfBaseException

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except AsapError as e:
            fail(one_line(e))
        except OmegaConfBaseException as e:
            fail(f"bad configuration: {one_line(e)}")
        except KeyboardInterrupt:
            fail("interrupted", code=130)
    return wrapper


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str], bool]:
    """Split CLI words into (positional paths, Hydra overrides, wants_help)."""
    positional, overrides, wants_help = [], [], False
    for a in argv:
        if a in ("-h", "--help"):
            wants_help = True
        elif "=" in a and not os.path.exists(a):
            overrides.append(a)
        else:
            positional.append(a)
    return positional, overrides, wants_help


def compose(config_name: str, overrides: Sequence[str], return_hydra_config: bool = False) -> Any:
    """Compose ``conf/<config_name>.yaml`` with ``overrides`` using Hydra's compose API (errors -> AsapError)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return hydra_compose(config_name=config_name, overrides=list(overrides),
                                 return_hydra_config=return_hydra_config)
    except (HydraException, OmegaConfBaseException) as e:
        raise AsapError(f"bad override: {one_line(e)}") from e


def tool_main(config_name: str, run: Callable[[Any, list[str]], Any], help_text: str,
              argv: Sequence[str] | None = None) -> Any:
    """Entry point of a compose-based tool: ``--help`` prints ``help_text``; positionals go to ``run``."""
    from asap.utils.allocator import keep_freed_memory

    keep_freed_memory()
    argv = list(sys.argv[1:] if argv is None else argv)
    positional, overrides, wants_help = split_argv(argv)
    if wants_help:
        print(help_text.strip())
        return 0

    @guarded
    def _go() -> Any:
        from asap.config_check import validate

        cfg = compose(config_name, overrides)
        validate(config_name, cfg, overrides, CONF_DIR)  # every bad value is one line, before any work
        return run(cfg, positional)
    return _go()
