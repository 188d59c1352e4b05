# Fetches the health-check URL from the server until it answers 2xx or the timeout passes; an application error
# (5xx but a proxy's 502/503/504) `fast` times in a row fails at once. Up to 10 redirects; credentials (an
# Authorization header's value, one line on stdin when a fifth argument is given) go to the URL's own origin only.
# Arguments: url (no credentials), the url as logs show it, timeout in seconds, fast, [stdin].
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

url, shown, limit, fast = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
auth = sys.stdin.readline().strip() if len(sys.argv) > 5 else ""
headers = {'Authorization': auth} if auth else {}


# urllib forwards every header to wherever a redirect points: Authorization is kept only on the same host with the
# same scheme and port, or on an upgrade from http to https on the same host.
class Redirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, hdrs, newurl):
        new = super().redirect_request(req, fp, code, msg, hdrs, newurl)
        if new is not None:
            a, b = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(new.full_url)
            if a.hostname != b.hostname or not ((a.scheme, a.port) == (b.scheme, b.port) or (a.scheme, b.scheme) == ('http', 'https')):
                new.remove_header('Authorization')
        return new


opener = urllib.request.build_opener(Redirects)


def first(body):
    return ' '.join(body[:300].decode('utf-8', 'replace').split())


deadline = time.time() + limit
last = 'no answer'
bad = 0
while True:
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=5) as r:
            if 200 <= r.status < 300:
                print(f'{shown} answered {r.status}')
                sys.exit(0)
            last = f'HTTP {r.status}: ' + first(r.read(300))
            bad = 0
    except urllib.error.HTTPError as e:
        last = f'HTTP {e.code}: ' + first(e.read(300))
        bad = bad + 1 if e.code >= 500 and e.code not in (502, 503, 504) else 0
        if bad >= fast:
            print(f'{shown} answered {last} ({bad} times in a row): the release is broken', file=sys.stderr)
            sys.exit(1)
    except Exception as e:
        last = str(getattr(e, 'reason', e))
        bad = 0
    if time.time() >= deadline:
        print(f'{shown} not healthy after {limit:g} s: {last}', file=sys.stderr)
        sys.exit(1)
    time.sleep(0.5)
