#!/usr/bin/env python
"""python export.py --budget 0.4   (the same as: adaret export --budget 0.4)"""

import sys

from adaret.cli import EXPORT_DESCRIPTION, OneLineErrorParser, add_export_arguments, run_export_command, run_guarded


def main() -> int:
    parser = OneLineErrorParser(prog="export.py", description=EXPORT_DESCRIPTION)
    add_export_arguments(parser)
    args = parser.parse_args()
    args.command, args.run = "export", run_export_command
    return run_guarded(args)


if __name__ == "__main__":
    sys.exit(main())
