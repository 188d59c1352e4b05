"""Settings for the example project deployed by django-deploy.

Configuration comes from the environment, then from a `.env` file beside manage.py (the deploy tool
links `<release>/.env` to a file in `<deploy-path>/shared/`). Variables already in the environment win.
"""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _read_dotenv(path):
    """KEY=VALUE lines; blank lines and `#` comments skipped; optional `export `; one pair of quotes stripped."""
    values = {}
    try:
        text = Path(path).read_text(encoding='utf-8')
    except (FileNotFoundError, NotADirectoryError):
        return values
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith('#') or '=' not in line:
            continue
        if line.startswith('export '):
            line = line[len('export '):].lstrip()
        key, value = line.split('=', 1)
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in '"\'':
            value = value[1:-1]
        values[key] = value
    return values


_DOTENV = _read_dotenv(BASE_DIR / '.env')


def env(name, default=None):
    if name in os.environ:
        return os.environ[name]
    return _DOTENV.get(name, default)


def env_bool(name, default=False):
    value = env(name)
    if value is None:
        return default
    return value.strip().lower() in ('1', 'true', 'yes', 'on')


def env_list(name, default):
    value = env(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(',') if item.strip()]


def _read_version():
    try:
        return (BASE_DIR / 'VERSION').read_text(encoding='utf-8').strip() or 'unknown'
    except FileNotFoundError:
        return 'unknown'


# The version shown on the home page and at /version/: change the VERSION file to make a new release.
APP_VERSION = env('APP_VERSION') or _read_version()

DEBUG = env_bool('DEBUG', False)

# Without a SECRET_KEY the project still runs, with a key that `check --deploy` reports as insecure.
SECRET_KEY = env('SECRET_KEY') or 'django-insecure-example-key-set-SECRET_KEY-in-the-environment-or-.env'

ALLOWED_HOSTS = env_list('ALLOWED_HOSTS', ['localhost', '127.0.0.1', '[::1]'])

INSTALLED_APPS = [
    'django.contrib.staticfiles',
    'pages',
]

MIDDLEWARE = [
    'django.middleware.security.SecurityMiddleware',
    'django.middleware.common.CommonMiddleware',
    'django.middleware.csrf.CsrfViewMiddleware',
    'django.middleware.clickjacking.XFrameOptionsMiddleware',
]

ROOT_URLCONF = 'mysite.urls'

TEMPLATES = [
    {
        'BACKEND': 'django.template.backends.django.DjangoTemplates',
        'DIRS': [],
        'APP_DIRS': True,
        'OPTIONS': {
            'context_processors': [
                'django.template.context_processors.request',
            ],
        },
    },
]

WSGI_APPLICATION = 'mysite.wsgi.application'

# Keep the database outside the release (e.g. DATABASE_PATH=<deploy-path>/shared/db.sqlite3).
DATABASES = {
    'default': {
        'ENGINE': 'django.db.backends.sqlite3',
        'NAME': env('DATABASE_PATH') or str(BASE_DIR / 'db.sqlite3'),
    }
}

DEFAULT_AUTO_FIELD = 'django.db.models.BigAutoField'

LANGUAGE_CODE = 'en-us'
TIME_ZONE = 'UTC'
USE_I18N = False
USE_TZ = True

STATIC_URL = '/static/'
# `collectstatic` writes into <release>/static/, which nginx serves as /static/.
STATIC_ROOT = BASE_DIR / 'static'

# Behind a TLS-terminating proxy in production: DJANGO_SECURE=1 turns on the HTTPS-only settings
# (then `manage.py check --deploy --fail-level WARNING` passes with a real SECRET_KEY and DEBUG off).
if env_bool('DJANGO_SECURE', False):
    SECURE_PROXY_SSL_HEADER = ('HTTP_X_FORWARDED_PROTO', 'https')
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(env('SECURE_HSTS_SECONDS', '31536000'))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool('SECURE_HSTS_PRELOAD', False)
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS = ['security.W021']

LOGGING = {
    'version': 1,
    'disable_existing_loggers': False,
    'handlers': {'console': {'class': 'logging.StreamHandler'}},
    'root': {'handlers': ['console'], 'level': env('LOG_LEVEL', 'WARNING')},
}
