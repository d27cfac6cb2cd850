"""An app whose import is slow (as a large Django project's is) and then fails,
as a broken setting makes it: uWSGI has bound its socket long before."""

import os
import time

time.sleep(float(os.environ.get("SLOWFAIL_SECONDS", "4")))
raise RuntimeError("broken setting: DATABASE_URL is not set")
