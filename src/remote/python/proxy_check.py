# What breaks behind nginx ending TLS, said before it breaks (run after the deploy check, in its Django): a form POST
# as a browser sends it to the site goes through the project's own CsrfViewMiddleware, and a refusal by the Origin
# or Referer check is reported with the setting that fixes it; SECURE_SSL_REDIRECT without SECURE_PROXY_SSL_HEADER
# redirects every request to itself. Arguments: warning marker, the site's url (no credentials), warn | fail.
import sys
from urllib.parse import urlsplit

from django.conf import settings
from django.middleware.csrf import CsrfViewMiddleware
from django.test import RequestFactory
from django.utils.module_loading import import_string

warn, url, mode = sys.argv[1], sys.argv[2], sys.argv[3]
u = urlsplit(url)
host = u.hostname + (f":{u.port}" if u.port else "")
origin = f"https://{host}"
header = settings.SECURE_PROXY_SSL_HEADER
fix = ("SECURE_PROXY_SSL_HEADER = ('HTTP_X_FORWARDED_PROTO', 'https') in the server settings, with "
       "`proxy_set_header X-Forwarded-Proto $scheme;` in nginx")
unless = ("unless the WSGI server marks requests https itself (Gunicorn trusts X-Forwarded-Proto only from its "
          "forwarded_allow_ips, by default 127.0.0.1)")


def csrf_refusal():
    classes = [import_string(m) for m in settings.MIDDLEWARE]
    csrf = next((c for c in classes if isinstance(c, type) and issubclass(c, CsrfViewMiddleware)), None)
    if csrf is None:
        return None
    meta = {"HTTP_HOST": host, "HTTP_ORIGIN": origin, "HTTP_REFERER": url}
    if header:
        meta[header[0]] = header[1]
    request = RequestFactory().post(u.path or "/", **meta)
    request.session = {}
    middleware = csrf(lambda r: None)
    middleware._reject = lambda request, reason: reason
    try:
        why = middleware.process_view(request, lambda r: None, (), {})
    except Exception:
        return None
    return why if isinstance(why, str) and why.startswith(("Origin checking", "Referer checking")) else None


found = []
if header is None and settings.SECURE_SSL_REDIRECT:
    found.append(f"SECURE_SSL_REDIRECT is on but SECURE_PROXY_SSL_HEADER is not set: behind nginx ending TLS, "
                 f"Django sees http and redirects every request to {origin} to itself, {unless}. Fix: {fix}.")
why = csrf_refusal()
if why and header is None:
    found.append(f"every form POST to {origin} fails with 403 (CSRF: {why}) while GETs and the health check "
                 f"pass: SECURE_PROXY_SSL_HEADER is not set, so behind nginx ending TLS Django sees http, {unless}. "
                 f"Fix: {fix} "
                 f"(or add '{origin}' to CSRF_TRUSTED_ORIGINS).")
elif why:
    found.append(f"every form POST to {origin} fails with 403 (CSRF: {why}) while GETs and the health check "
                 f"pass. Fix: add '{origin}' to CSRF_TRUSTED_ORIGINS in the server settings (and have nginx pass "
                 "the Host of the site: `proxy_set_header Host $host;`).")
for text in found:
    print(f"{warn} behind a TLS proxy: {text}", flush=True)
print(f"behind a TLS proxy ({origin}): {len(found)} issue(s)")
if found and mode == "fail":
    print("the TLS proxy check found warnings, and deploy-check is fail: this release does not go live", file=sys.stderr)
    sys.exit(1)
