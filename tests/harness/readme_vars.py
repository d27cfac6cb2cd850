#!/usr/bin/env python3
"""Render the README's variable table from meta/argument_specs.yml, and its
example playbooks from the playbooks the molecule scenarios run.

  readme_vars.py          rewrite the table and the playbooks between the README's markers
  readme_vars.py --check  exit 1 if the README differs from the specs or the playbooks
"""

import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
BEGIN = "<!-- BEGIN VARIABLES (generated from meta/argument_specs.yml) -->"
END = "<!-- END VARIABLES -->"
# <!-- BEGIN PLAYBOOK playbooks/NAME.yml --> ... <!-- END PLAYBOOK -->: that file, verbatim.
PLAYBOOK = re.compile(r"(<!-- BEGIN PLAYBOOK (?P<path>[^ ]+) -->\n).*?(<!-- END PLAYBOOK -->)", re.S)


def text(description):
    if isinstance(description, list):
        description = " ".join(description)
    description = re.sub(r"[CI]\(([^)]*)\)", r"`\1`", description)
    return description.replace("|", "\\|").replace("\n", " ")


def default(spec):
    if "default" not in spec:
        return "derived" if "Unset" in text(spec.get("description", "")) else ""
    return f"`{yaml.safe_dump(spec['default'], default_flow_style=True).strip().removesuffix('...').strip()}`"


def rows(options, prefix=""):
    for name, spec in options.items():
        kind = spec.get("type", "str")
        if kind == "list" and "elements" in spec:
            kind = f"list of {spec['elements']}"
        choices = f" One of: {', '.join(f'`{c}`' for c in spec['choices'])}." if "choices" in spec else ""
        required = " **Required.**" if spec.get("required") else ""
        yield f"| `{prefix}{name}` | {kind} | {default(spec)} | {text(spec.get('description', ''))}{choices}{required} |"
        if "options" in spec:
            yield from rows(spec["options"], prefix=f"{prefix}{name}[].")


def role_options():
    """The role's variables (the specs' entry point `variables`), with each
    app's keys (the entry point `app`) as the options of `uwsgi_apps`."""
    specs = yaml.safe_load((ROOT / "meta/argument_specs.yml").read_text())["argument_specs"]
    options = dict(specs["variables"]["options"])
    options["uwsgi_apps"] = dict(options["uwsgi_apps"], options=specs["app"]["options"])
    return options


def table():
    options = role_options()
    lines = ["| variable | type | default | description |", "|---|---|---|---|", *rows(options)]
    return "\n".join(lines)


def _deprecated(spec):
    description = spec.get("description", "")
    first = description[0] if isinstance(description, list) else description
    return str(first).startswith("Deprecated")


def defaults_drift():
    """Differences between defaults/main.yml and the specs' documented defaults."""
    specs = role_options()
    defaults = yaml.safe_load((ROOT / "defaults/main.yml").read_text())
    problems = [f"{name} is in defaults/main.yml but not in the specs" for name in defaults if name not in specs]
    # A deprecated name has no default: the role tells whether it is set.
    problems += [f"{name} is in the specs but not in defaults/main.yml" for name in specs
                 if name not in defaults and not _deprecated(specs[name])]
    problems += [
        f"{name}: defaults/main.yml has {defaults[name]!r}, the specs say {spec['default']!r}"
        for name, spec in specs.items()
        if name in defaults and "default" in spec and defaults[name] != spec["default"]
    ]
    return problems


def main_drift():
    """The entry point `main` lists the names of `variables`, each `type: raw`
    only (ansible-core checks `main` itself; the role checks the rest)."""
    specs = yaml.safe_load((ROOT / "meta/argument_specs.yml").read_text())["argument_specs"]
    main, variables = specs["main"].get("options") or {}, specs["variables"]["options"]
    problems = [f"{name} is in the entry point variables but not in main" for name in variables if name not in main]
    problems += [f"{name} is in the entry point main but not in variables" for name in main if name not in variables]
    problems += [f"main's {name} must be {{type: raw}} only" for name, spec in main.items() if spec != {"type": "raw"}]
    return problems


def make_default(name):
    match = re.search(rf"^{name} \?= (.*)$", (ROOT / "Makefile").read_text(), re.M)
    return match[1].split() if match else []


def meta_drift():
    """meta/main.yml must claim exactly what the test targets run."""
    info = yaml.safe_load((ROOT / "meta/main.yml").read_text())["galaxy_info"]
    problems = []
    tested = make_default("PLATFORMS")
    claimed = [v for p in info.get("platforms", []) if p["name"] == "Debian" for v in p["versions"]]
    if sorted(claimed) != sorted(tested):
        problems.append(f"meta/main.yml lists Debian {claimed}, make test-platforms tests {tested}")
    series = make_default("ANSIBLE_SERIES")
    if not series or str(info.get("min_ansible_version")) != series[0]:
        problems.append(f"meta/main.yml min_ansible_version {info.get('min_ansible_version')!r} is not the oldest"
                        f" series make test-ansible runs ({series[:1]})")
    for key in ("namespace", "role_name", "author", "description", "license", "galaxy_tags"):
        if not info.get(key):
            problems.append(f"meta/main.yml has no galaxy_info.{key}")
    return problems


def playbook(match):
    text = (ROOT / match["path"]).read_text()
    return f"{match.group(1)}```yaml\n{text}```\n{match.group(3)}"


def documents():
    """The user documentation that may show playbooks: the README and docs/."""
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


def main():
    readme = ROOT / "README.md"
    current = {path: path.read_text() for path in documents()}
    block = f"{BEGIN}\n{table()}\n{END}"
    with_table = dict(current)
    with_table[readme] = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, current[readme], flags=re.S)
    updated = {path: PLAYBOOK.sub(playbook, body) for path, body in with_table.items()}
    shown = [m["path"] for body in current.values() for m in PLAYBOOK.finditer(body)]
    if "--check" in sys.argv:
        problems = defaults_drift() + main_drift() + meta_drift()
        # Every playbook a scenario converges with is shown in the README or in docs/.
        for converge in sorted(ROOT.glob("molecule/*/converge.yml")):
            for path in re.findall(r"import_playbook: \.\./\.\./(\S+)", converge.read_text()):
                if path not in shown:
                    problems.append(f"{path} (run by {converge.relative_to(ROOT)}) is not shown in README.md or docs/")
        for problem in problems:
            print(problem)
        if problems:
            return 1
        if with_table != current:
            print("README.md's variable table differs from meta/argument_specs.yml: run `make docs`.")
            return 1
        drifted = [str(path.relative_to(ROOT)) for path in updated if updated[path] != with_table[path]]
        if drifted:
            print(f"the example playbooks in {', '.join(drifted)} differ from {', '.join(shown)}: run `make docs`.")
            return 1
        print(f"README.md's variable table matches meta/argument_specs.yml; the playbooks shown match {', '.join(shown)}.")
        return 0
    for path, body in updated.items():
        if body != current[path]:
            path.write_text(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
