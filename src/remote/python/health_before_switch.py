# The health-check URL's path requested through Django's full stack (middleware, URL routing, views, the server's
# settings and database) of the release that is not live yet, with the URL's Host header. A 5xx, an exception or no
# answer within the timeout stops the deploy before the switch. Arguments: url (no credentials), timeout in seconds.
import signal
import sys
import traceback
from urllib.parse import urlsplit

from django.test import Client

url, limit = sys.argv[1], float(sys.argv[2])
u = urlsplit(url)
host = u.hostname + (f":{u.port}" if u.port else "")
path = (u.path or "/") + (f"?{u.query}" if u.query else "")
where = f"{path} (Host: {host}) in the new release, with the server settings and database, before the switch"


def out_of_time(*_):
    raise TimeoutError(f"no answer within {limit:g} s")


signal.signal(signal.SIGALRM, out_of_time)
signal.setitimer(signal.ITIMER_REAL, limit)
try:
    r = Client(raise_request_exception=True).get(path, follow=True, secure=u.scheme == "https", HTTP_HOST=host)
except BaseException:
    signal.setitimer(signal.ITIMER_REAL, 0)
    print(f"{where}: raised", file=sys.stderr)
    traceback.print_exc()
    sys.exit(1)
signal.setitimer(signal.ITIMER_REAL, 0)
if r.status_code < 500:
    print(f"{where}: HTTP {r.status_code}")
    sys.exit(0)
body = r.content[:4000].decode("utf-8", "replace").strip().splitlines()[:20]
print(f"{where}: HTTP {r.status_code}", *body, sep="\n", file=sys.stderr)
sys.exit(1)
