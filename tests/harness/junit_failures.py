"""Print the failed and errored tests of a pytest JUnit XML report, one line
each with the start of its message: the end of a long `make test` log names
what failed, above molecule's own summary."""

import sys
import xml.etree.ElementTree as ET


def failures(path: str) -> list[str]:
    lines = []
    for case in ET.parse(path).getroot().iter("testcase"):
        for kind in ("failure", "error"):
            found = case.find(kind)
            if found is not None:
                message = " ".join((found.get("message") or "").split())[:300]
                lines.append(f"{kind.upper()} {case.get('classname')}::{case.get('name')}: {message}")
    return lines


if __name__ == "__main__":
    for report in sys.argv[1:]:
        try:
            print("\n".join(failures(report)) or f"{report}: no failed test (a step other than verify failed)")
        except (OSError, ET.ParseError) as error:
            print(f"{report}: no test report ({error}); verify did not run")
