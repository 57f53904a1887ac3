#!/usr/bin/env python
"""Link a flat dataset copy into the official layout of data=cityscapes|ade20k|facades (symlinks, no copies)."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from asap.cli import fail, guarded, split_argv  # noqa: E402

HELP = """
usage: python tools/prepare_data.py kind=cityscapes|ade20k|facades src=FOLDER dst=NEW_FOLDER

Builds dst/ with one symlink per file or folder of src/, in the layout the reader of data=<kind> wants:
  cityscapes  pix2pixHD's train_{label,inst,img}/ (and test_{label,inst}/) -> gtFine/{train,val}/aachen/ +
              leftImg8bit/train/aachen/ (pix2pixHD's "test" frames are Cityscapes val frames)
  ade20k      images/ + annotations/ (SceneParsing sampleData) -> ADEChallengeData2016/{images,annotations}/
              {training,validation}/
  facades     images/ + masks/ (palette PNGs) -> {train,val}_img/ + {train,val}_label/
Then: python tools/train.py data=<kind> data.root=dst ...  (dst must be absent or empty; src is never modified)
"""


def main(argv: list[str]) -> int:
    positional, overrides, wants_help = split_argv(argv)
    if wants_help:
        print(HELP.strip())
        return 0

    @guarded
    def go() -> int:
        from asap.data.prepare import count_files, prepare
        from asap.errors import AsapError

        if positional:
            raise AsapError(f"unexpected argument {positional[0]!r} (use kind=, src=, dst=)")
        kv = dict(o.split("=", 1) for o in overrides)
        unknown = set(kv) - {"kind", "src", "dst"}
        if unknown:
            raise AsapError(f"unknown key {sorted(unknown)[0]!r} (keys: kind, src, dst)")
        missing = [k for k in ("kind", "src", "dst") if not kv.get(k)]
        if missing:
            raise AsapError(f"{missing[0]}=... is required (see --help)")
        d = prepare(kv["kind"], kv["src"], kv["dst"])
        print(f"linked {count_files(d)} file(s) from {kv['src']} into {d} (data={kv['kind']} data.root={d})")
        return 0
    return go()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
