"""How uWSGI 2.0 reads a value from an ini file, written after its C source
(core/utils.c magic_sub and uwsgi_apply_config_pass, core/ini.c,
core/config.c uwsgi_manage_placeholder), to test the role's escaping against.
The molecule scenario checks the same values against a real uWSGI."""

MAGIC = {"d": "/etc/uwsgi/supervisor/", "n": "app", "e": ".ini", "h": "host"}  # a few of uWSGI's %X


def magic_sub(text):
    out, i = [], 0
    while i < len(text):
        if text[i] == "%" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append({"%": "%", "(": "%("}.get(nxt, MAGIC.get(nxt, "")))
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def strip(value):
    return value.strip(" \t\r")


def apply_pass(value, symbol, hook):
    """uwsgi_apply_config_pass for one option value."""
    j, has, depth, key_at = 0, 0, 0, None
    while j < len(value):
        c = value[j]
        if c == symbol:
            has = 1
        elif c == "(" and has == 1:
            has, depth, key_at = 2, 0, j + 1
        elif has > 1:
            if c == "(":
                has += 1
                depth += 1
            elif c == ")":
                if depth > 0:
                    has += 1
                    depth -= 1
                    j += 1
                    continue
                if has <= 2:
                    has, key_at = 0, None
                    j += 1
                    continue
                replacement = hook(value[key_at:key_at + has - 2])
                if replacement is None:
                    has, key_at = 0, None
                    j += 1
                    continue
                value = value[:key_at - 2] + replacement + value[key_at + has - 1:]
                has, key_at, j = 0, None, 0
                continue
            else:
                has += 1
        else:
            has = 0
        j += 1
    return value


def read_value(line_value, options=None, env=None, files=None):
    """What uWSGI makes of `line_value` written as `key = line_value`."""
    options = dict(options or {})
    # The magic runs over the whole file: a % at the end of a line eats the line break.
    value = strip(magic_sub(line_value + "\n").split("\n", 1)[0])
    value = apply_pass(value, "$", lambda k: (env or {}).get(k))
    value = apply_pass(value, "@", lambda k: (files or {}).get(k))

    def placeholder(key):
        if " " not in key:
            return options.get(key)
        return "".join(options.get(token, "") for token in key.split(" "))

    return apply_pass(value, "%", placeholder)


def section_options(text, section="uwsgi"):
    """The keys uWSGI takes from `section` of an ini file (core/ini.c
    uwsgi_ini_config): only a `key = value` line inside it counts, so a file
    with the section's header and nothing in it gets uWSGI's `Can't find
    section` warning, as one without the header does. Lines before the first
    header are in no section; `;` and `#` start comments."""
    current, keys = "", []
    for line in text.splitlines():
        key = line.strip()
        if not key or key[0] in ";#":
            continue
        if key[0] == "[":
            current = key[1:-1]
        elif current == section:
            keys.append(key.partition("=")[0].strip())
    return keys
