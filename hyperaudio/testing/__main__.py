"""``python -m hyperaudio.testing DIST [DIST ...]``: run the conformance kit on installed plugins.

Exit status 0 when every check passed or was skipped, 1 when one failed. ``--json-file PATH``
writes the reports as JSON (``hyperaudio plugin install`` reads that file, so whatever a plugin
prints while loading cannot garble it).
"""

from __future__ import annotations

import argparse
import json
import sys

from . import format_report, plugin_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyperaudio.testing", description=__doc__.splitlines()[0])
    parser.add_argument("dists", nargs="+", metavar="DIST", help="installed plugin distribution")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    parser.add_argument("--json-file", help="also write the reports as JSON to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="list passed checks too")
    args = parser.parse_args(argv)
    reports = [plugin_report(d) for d in args.dists]
    if args.json_file:
        with open(args.json_file, "w") as f:
            json.dump(reports, f, indent=2)
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        for report in reports:
            print(f"{report['dist']} {report.get('version') or ''}".rstrip())
            print(format_report(report, verbose=args.verbose))
    failed = any(r["status"] == "failed" for report in reports for r in report["results"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
